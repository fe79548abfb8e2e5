"""The runtime serves models on inproc, validates requests, and answers every bad input typed."""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import re
import subprocess
import sys
import textwrap
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

import foundation_core
from foundation_core import Hub, hookimpl
from foundation_core.errors import FoundationError
from foundation_ml import (
    FunctionModel,
    InferenceClient,
    InferenceRequest,
    InferenceResponse,
    LoadedModel,
    MLRuntime,
    ModelBackend,
    ModelLoadError,
    PackageError,
    _runtime_lifecycle,
    _runtime_models,
    parse_signature,
    write_package,
)
from foundation_ml import _plugin as ml_plugin
from foundation_ml._batching import Batcher
from foundation_ml._claims import ModelClaims
from foundation_ml._process import shm_entries
from foundation_ml._serving import ServedModel
from foundation_ml._transport import TransportServer
from foundation_ml.errors import (
    DeadlineExceeded,
    HandlerError,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ServerUnavailable,
    ShuttingDown,
)

from .conftest import Replies, affine_model, unique_name


def call(runtime: MLRuntime, request: InferenceRequest) -> object:
    """Call the handler directly, as a transport does; return what it responded."""
    got: list[object] = []
    runtime(request, got.append)
    assert len(got) == 1, "the handler must respond exactly once"
    return got[0]


def test_serves_a_model_over_inproc(served: InferenceClient, rows) -> None:
    x = rows(3)
    out = served.infer("affine", {"x": x})
    np.testing.assert_array_equal(out["y"], x * 2 + 1)


def test_response_carries_request_id_and_version(served: InferenceClient, rows) -> None:
    response = served.infer_response("affine", {"x": rows(1)})
    assert response.id != 0
    assert (response.model, response.version) == ("affine", "1")


def test_metadata_reports_the_signature(served: InferenceClient) -> None:
    meta = served.metadata("affine")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["versions"] == ["1"]


def test_unknown_model_names_the_served_ones(served: InferenceClient, rows) -> None:
    with pytest.raises(ModelNotFound, match=r"'nope'.*serving: affine"):
        served.infer("nope", {"x": rows(1)})


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"z": np.zeros((1, 4), np.float32)}, "missing input.*x.*unexpected input.*z"),
        ({"x": np.zeros((1, 4), np.float64)}, r"input x is FP64\[1, 4\], expected FP32\[-1, 4\]"),
        ({"x": np.zeros((1, 5), np.float32)}, r"input x is FP32\[1, 5\], expected FP32\[-1, 4\]"),
        ({"x": np.zeros((4,), np.float32)}, r"input x is FP32\[4\]"),
        ({}, "missing input"),
    ],
)
def test_bad_inputs_state_the_expected_signature(served: InferenceClient, inputs, problem) -> None:
    with pytest.raises(InvalidInput, match=problem) as info:
        served.infer("affine", inputs)
    assert r"expected inputs: x: FP32[-1, 4]" in str(info.value)


def test_unknown_requested_output_is_invalid(served: InferenceClient, rows) -> None:
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) w"):
        served.infer("affine", {"x": rows(1)}, outputs=["w"])


def test_model_that_raises_gets_handler_error_and_server_keeps_serving(runtime, name, rows) -> None:
    def fragile(x: np.ndarray) -> np.ndarray:
        if x[0, 0] < 0:
            raise ValueError("negative input")
        return x

    runtime.register_model(
        "fragile", FunctionModel(fragile, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    with pytest.raises(HandlerError, match="ValueError: negative input"):
        client.infer("fragile", {"x": -rows(1) - 1})
    np.testing.assert_array_equal(client.infer("fragile", {"x": rows(1)})["y"], rows(1))


def test_expired_deadline_is_refused_before_running(runtime, rows) -> None:
    ran = []
    runtime.register_model(
        "m",
        FunctionModel(
            lambda x: ran.append(1) or x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
        ),
        warmup=False,
    )
    got = call(runtime, InferenceRequest("m", {"x": rows(1)}, id=7, deadline_ns=1))
    assert isinstance(got, DeadlineExceeded) and got.request_id == 7
    assert ran == []


def test_unbatched_model_runs_inline_in_the_transport_thread(runtime, rows) -> None:
    threads = []
    runtime.register_model(
        "m",
        FunctionModel(
            lambda x: threads.append(threading.get_ident()) or x,
            inputs={"x": "FP32[-1, 4]"},
            outputs={"y": "FP32[-1, 4]"},
        ),
        warmup=False,
    )
    call(runtime, InferenceRequest("m", {"x": rows(1)}))
    assert threads == [threading.get_ident()]


def test_versions_default_to_the_latest_and_can_be_named(runtime, name, rows) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(
        "m",
        FunctionModel(lambda x: x + 1, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}),
        version="2",
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    x = rows(1)
    assert client.infer_response("m", {"x": x}).version == "2"
    np.testing.assert_array_equal(client.infer("m", {"x": x}, version="1")["y"], x)
    assert client.metadata("m")["versions"] == ["1", "2"] == runtime.versions("m")
    assert [m.name for m in runtime.models()] == ["m"]
    with pytest.raises(ModelNotFound, match=r"no version '3' \(versions: 1, 2\)"):
        client.infer("m", {"x": x}, version="3")
    runtime.unload_model("m", "2")
    assert client.infer_response("m", {"x": x}).version == "1"
    runtime.unload_model("m")
    with pytest.raises(ModelNotFound):
        client.infer("m", {"x": x})


def test_a_bad_request_names_the_version_it_was_checked_against_when_several_are_served(
    runtime, name, rows
) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    three = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidInput) as info:
        client.infer("m", {"x": three})
    assert info.value.message == (  # one version served: nothing to tell apart
        "input x is FP32[1, 3], expected FP32[-1, 4] (expected inputs: x: FP32[-1, 4])"
    )
    runtime.register_model(  # version 2 answers with a column too few: its answer is refused
        "m",
        FunctionModel(lambda x: x[:, 1:], inputs={"x": "FP32[-1, 3]"}, outputs={"y": "FP32[-1, 3]"}),
        version="2",
        warmup=False,  # (its warm-up would refuse it)
    )
    with pytest.raises(InvalidInput) as info:
        client.infer("m", {"x": rows(1)})  # the latest, version 2, takes FP32[-1, 3]
    assert str(info.value) == (
        "model 'm': version '2': input x is FP32[1, 4], expected FP32[-1, 3] "
        "(expected inputs: x: FP32[-1, 3])"
    )
    with pytest.raises(InvalidInput, match=r"^model 'm': version '1': input x is FP32\[1, 3\]"):
        client.infer("m", {"x": three}, version="1")
    with pytest.raises(HandlerError, match=r"^model 'm': version '2': the model's answer breaks"):
        client.infer("m", {"x": three})
    with pytest.raises(InvalidInput) as info:  # version 1's output is y too: say whose list it is
        client.infer("m", {"x": three}, outputs=["z"])
    assert str(info.value) == "model 'm': version '2': unknown output(s) z (outputs: y: FP32[-1, 3])"
    runtime.unload_model("m", "2")  # one version again
    with pytest.raises(InvalidInput) as info:
        client.infer("m", {"x": three})
    assert info.value.message.startswith("input x is FP32[1, 3], expected FP32[-1, 4]")


def test_a_batched_answer_without_its_rows_names_the_version_when_several_are_served(
    runtime, name, rows
) -> None:
    """The broken answer's other message, rows missing from a batched model's output, said
    nothing of whose answer it was, while its signature message names the version."""
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(  # version 2 drops its last row
        "m",
        FunctionModel(lambda x: x[:-1], inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}),
        version="2",
        max_batch_size=4,
        warmup=False,
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    with pytest.raises(
        HandlerError, match=r"^model 'm': version '2': the model returned output\(s\) y without"
    ):
        client.infer("m", {"x": rows(2)})
    assert client.infer("m", {"x": rows(2)}, version="1")["y"].shape == (2, 4)


def test_a_model_that_raises_is_named_by_version_when_several_are_served(runtime, name, rows) -> None:
    """A model's own exception said only "RuntimeError: boom": with two versions served, not
    which of them raised (unbatched and batched both)."""

    def boom(x):
        raise RuntimeError("boom")

    sig = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 4]"}}
    runtime.register_model("m", FunctionModel(lambda x: x, **sig))
    runtime.register_model("m", FunctionModel(boom, **sig), version="2", warmup=False)
    runtime.register_model("b", FunctionModel(lambda x: x, **sig))
    runtime.register_model("b", FunctionModel(boom, **sig), version="2", warmup=False, max_batch_size=4)
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    for model in ("m", "b"):
        with pytest.raises(HandlerError, match=rf"^model '{model}': version '2': RuntimeError: boom$"):
            client.infer(model, {"x": rows(1)}, version="2")
        assert client.infer(model, {"x": rows(1)}, version="1")["y"].shape == (1, 4)
    runtime.register_model("alone", FunctionModel(boom, **sig), warmup=False)
    with pytest.raises(HandlerError, match=r"^model 'alone': RuntimeError: boom$"):
        client.infer("alone", {"x": rows(1)})


def test_loading_the_same_version_twice_is_an_error(runtime) -> None:
    model = FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("m", model)
    batchers = {t.name for t in threading.enumerate() if t.name.startswith("batcher-")}
    with pytest.raises(ModelLoadError, match="version '1' is already loaded"):
        runtime.register_model("m", model, max_batch_size=4)
    assert {t.name for t in threading.enumerate() if t.name.startswith("batcher-")} == batchers


class _Closing(FunctionModel):
    """An identity model that fails once closed, as a torch model does once unloaded."""

    def __init__(self) -> None:
        super().__init__(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_one_loaded_model_is_served_once_so_unloading_it_never_closes_it_under_another(runtime) -> None:
    model = _Closing()
    runtime.register_model("a", model)
    for name, version in (("a", "2"), ("b", None)):
        with pytest.raises(ModelLoadError, match="already served as 'a' version '1'"):
            runtime.register_model(name, model, version=version)
    assert runtime.registry.names() == ["a"] and runtime.versions("a") == ["1"]
    assert not model.closed  # the refused registration left it to the one that serves it
    runtime.unload_model("a")
    assert model.closed


class _OneAtATime(FunctionModel):
    """An identity model that need not be thread-safe: it counts its calls and the calls that
    began while another ran; ``gate`` (when set) holds the first call until ``release``."""

    def __init__(self, gate: bool = False) -> None:
        super().__init__(self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.calls = self.overlaps = 0
        self.running = False
        self.entered, self.release = threading.Event(), threading.Event()
        self.gate = gate

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.overlaps += self.running
        self.running = True
        try:
            if self.gate and not self.entered.is_set():
                self.entered.set()
                assert self.release.wait(60), "never released"
            return x
        finally:
            self.running = False


@pytest.mark.parametrize(("name", "version"), [("a", None), ("a", "2"), ("b", None)])
def test_a_registration_of_a_model_already_served_is_refused_before_it_runs_the_model(
    runtime: MLRuntime, name: str, version: str | None
) -> None:
    """The refused registration's warm-up ran the model that serves 'a' (a model need not be
    thread-safe: in another thread than a's calls), and only then was it refused."""
    model = _OneAtATime()
    runtime.register_model("a", model, max_batch_size=2)
    calls = model.calls
    says = "version '1' is already loaded" if version is None and name == "a" else "already served as 'a'"
    with pytest.raises(ModelLoadError, match=says):
        runtime.register_model(name, model, version=version)
    assert model.calls == calls
    assert runtime.registry.names() == ["a"] and runtime.versions("a") == ["1"]


def test_one_loaded_model_registered_by_two_threads_at_once_is_served_once(runtime: MLRuntime) -> None:
    """Registered as 'b' while its registration as 'a' warmed it up, the model was warmed up by both
    at once and then served under both names (neither was served yet when the other was checked):
    unloading one would close it under the other."""
    model = _OneAtATime(gate=True)
    first, failed = _registering(runtime, "a", model)
    try:
        assert model.entered.wait(60), "the first registration never warmed the model up"
        with pytest.raises(ModelLoadError, match="is being registered as 'a' version '1'"):
            runtime.register_model("b", model)
    finally:
        model.release.set()
        first.join(60)
    assert not failed and not first.is_alive()
    assert runtime.registry.names() == ["a"] and model.overlaps == 0


def _registering(
    runtime: MLRuntime, name: str, model: LoadedModel
) -> tuple[threading.Thread, list[BaseException]]:
    """``runtime.register_model(name, model)`` started in a thread of its own, and the list that
    gets what it raised."""
    failed: list[BaseException] = []

    def register() -> None:
        try:
            runtime.register_model(name, model)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    return thread, failed


def _request(rid: int) -> InferenceRequest:
    return InferenceRequest("a", {"x": np.zeros((1, 4), np.float32)}, id=rid)


class _InterruptAt:
    """A lock whose ``at``-th acquisition raises KeyboardInterrupt first (a Ctrl-C landing just
    before that ``with``)."""

    def __init__(self, at: int) -> None:
        self._lock = threading.Lock()
        self._left = at

    def __enter__(self) -> None:
        self._left -= 1
        if self._left == 0:
            raise KeyboardInterrupt
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_a_registration_interrupted_anywhere_leaves_its_model_free_to_register_again(
    runtime: MLRuntime, at: int
) -> None:
    """A Ctrl-C as register_model let go of its claim (once the model was registered) left the
    claim for good: unloaded, the model was refused to every other thread as 'being registered'
    by a registration long over."""
    model = _OneAtATime()
    lock = runtime._models_lock
    runtime._models_lock = _InterruptAt(at)  # type: ignore[assignment]
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runtime.register_model("a", model)
    finally:
        runtime._models_lock = lock
    if runtime.registry.names():
        runtime.unload_model("a")
    other, failed = _registering(runtime, "b", model)
    other.join(60)
    assert not failed and runtime.registry.names() == ["b"]


class _CountsCloses(FunctionModel):
    def __init__(self) -> None:
        super().__init__(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def _interrupted_once(target: Any, attr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``target.attr`` raises KeyboardInterrupt the first time it is called, as it is called."""
    real = getattr(target, attr)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(target, attr, real)
        raise KeyboardInterrupt

    monkeypatch.setattr(target, attr, interrupted)


@pytest.mark.parametrize(
    "where", ["lock-1", "lock-2", "lock-3", "lock-4", "_update_batchers", "begin_unloads", "stop"]
)
def test_an_unload_interrupted_anywhere_still_stops_every_version_it_took_out(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A Ctrl-C in unload_model once it had taken the versions out of the registry (as it updated
    the batchers, before a version's stop began, as it let go of one) left those not stopped yet
    running for good: out of the registry, so nothing stopped their batcher threads or closed
    their models, and a model left 'being unloaded' was refused to every other thread. The
    interrupt still propagates; every version it took out is stopped, its model closed once."""
    name = unique_name("m")
    models = [_CountsCloses(), _CountsCloses()]
    runtime.register_model(name, models[0], version="1", max_batch_size=2)  # a batcher thread
    runtime.register_model(name, models[1], version="2")
    lock = runtime._models_lock
    injector = None
    if where.startswith("lock-"):
        injector = _InterruptAt(int(where[5:]))
        runtime._models_lock = injector  # type: ignore[assignment]
    elif where == "stop":
        _interrupted_once(ServedModel, "stop", monkeypatch)
    else:
        _interrupted_once(ModelClaims if where == "begin_unloads" else runtime, where, monkeypatch)
    try:
        raised = False
        try:
            runtime.unload_model(name, drain_timeout=30)
        except KeyboardInterrupt:
            raised = True
    finally:
        runtime._models_lock = lock
    assert raised == (injector is None or injector._left <= 0), "the interrupt did not propagate"
    if runtime.registry.names():  # interrupted before it took any version out
        assert [m.closed for m in models] == [0, 0]
        runtime.unload_model(name)
    assert [m.closed for m in models] == [1, 1]
    assert runtime._batchers == (), "flush() still runs the batcher of a version unloaded"
    deadline = time.monotonic() + 30
    while any(t.name == f"batcher-{name}" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == f"batcher-{name}"], "a batcher thread runs on"
    for i, model in enumerate(models):  # neither is 'being unloaded' any more
        other, failed = _registering(runtime, f"again{i}", model)
        other.join(60)
        assert not failed, failed
    assert runtime.registry.names() == ["again0", "again1"]


class _InterruptOnExit:
    """A version's ``_gate`` whose ``at``-th release raises KeyboardInterrupt once released: a
    Ctrl-C landing as a ``with`` block of it ends (Python checks for signals after that call)."""

    def __init__(self, lock: threading.Lock, at: int) -> None:
        self._lock = lock
        self._left = at

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        self._left -= 1
        if self._left == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("at", [1, 2], ids=["stopping-set", "idle-read"])
def test_an_unload_interrupted_inside_a_versions_stop_still_stops_it(runtime: MLRuntime, at: int) -> None:
    """A Ctrl-C inside a version's stop once it had set ``stopping`` (as it let go of its gate,
    before it stopped the batcher or closed the model) was taken for a stop already done: the
    batcher thread ran on, the model was never closed, and its unload, never released, refused
    the model for good ('while a call of it still ran', no call running), and any other object
    that got its id once it was collected. The interrupt propagates; the stop is finished."""
    name = unique_name("m")
    model = _CountsCloses()
    runtime.register_model(name, model, max_batch_size=2)  # a batcher thread
    served = runtime.registry.get(name, "1")
    served._gate = _InterruptOnExit(served._gate, at)  # type: ignore[assignment]  # (no call runs)
    with pytest.raises(KeyboardInterrupt):
        runtime.unload_model(name, drain_timeout=30)
    assert model.closed == 1
    deadline = time.monotonic() + 30
    while any(t.name == f"batcher-{name}" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == f"batcher-{name}"], "a batcher thread runs on"
    runtime.register_model("again", model)  # not left 'unloaded while a call of it still ran'
    assert runtime.registry.names() == ["again"]


class _CondInterruptedOnEnter:
    """A batcher's ``_cond`` whose first acquisition by ``thread`` raises KeyboardInterrupt (a
    Ctrl-C landing as ``Batcher.stop`` takes it, before it sets its stopping flag); the batcher
    thread's own use of it, and what else a Condition does, pass through."""

    def __init__(self, cond: threading.Condition, thread: threading.Thread) -> None:
        self._cond = cond
        self._thread = thread
        self._armed = True

    def __enter__(self) -> bool:
        if self._armed and threading.current_thread() is self._thread:
            self._armed = False
            raise KeyboardInterrupt
        return self._cond.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._cond.__exit__(*exc)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._cond, attr)


@pytest.mark.parametrize("where", ["entry", "lock", "entry-twice"])
def test_an_unload_interrupted_as_the_batcher_stop_begins_still_stops_the_batcher(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A Ctrl-C at the entry of ``Batcher.stop`` (or as it took its lock), before it set its
    stopping flag, was taken by the version's stop for a batcher stopped: the model was closed
    with the batcher thread running on for good, and the request queued in it was left waiting,
    then run on the closed model. The interrupt propagates; the batcher is stopped (the queued
    request answered), the model closed once, after its last call. Interrupted
    again as the version's stop stops the batcher once more (``entry-twice``), the model is not
    closed under it: the unload's own stop of what it left unstopped does."""
    calls_after_close: list[int] = []

    class Model(_CountsCloses):
        def __init__(self) -> None:
            FunctionModel.__init__(self, self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
            self.closed = 0

        def _run(self, x: np.ndarray) -> np.ndarray:
            if self.closed:
                calls_after_close.append(len(x))
            return x

    name = unique_name("m")
    model = Model()
    runtime.register_model(name, model, max_batch_size=4, max_wait_us=10_000_000, warmup=False)
    served = runtime.registry.get(name, "1")
    batcher = served.batcher
    assert batcher is not None
    replies = Replies()
    runtime(InferenceRequest(name, {"x": np.zeros((1, 4), np.float32)}, id=1), replies.respond(1))
    assert len(batcher._queue) == 1, "the request is not queued"
    if where == "entry":
        _interrupted_once(Batcher, "stop", monkeypatch)
    elif where == "entry-twice":
        real, left = Batcher.stop, [2]

        def interrupted(self: Batcher, *args: Any, **kwargs: Any) -> None:
            left[0] -= 1
            if left[0] >= 0:
                raise KeyboardInterrupt
            real(self, *args, **kwargs)

        monkeypatch.setattr(Batcher, "stop", interrupted)
    else:
        batcher._cond = _CondInterruptedOnEnter(batcher._cond, threading.current_thread())  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        runtime.unload_model(name, drain_timeout=30)
    deadline = time.monotonic() + 30
    while any(t.name == f"batcher-{name}" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == f"batcher-{name}"], "a batcher thread runs on"
    # answered: ShuttingDown, or run as the batcher, told to stop, drained its queue (before the close)
    assert isinstance(replies.wait(1)[1], (ShuttingDown, InferenceResponse))
    assert model.closed == 1 and calls_after_close == []
    runtime.register_model("again", model, warmup=False)  # released
    assert runtime.registry.names() == ["again"]


def test_an_unload_interrupted_once_its_stop_handed_the_close_to_a_call_closes_it_once(
    runtime: MLRuntime,
) -> None:
    """A Ctrl-C as a version's stop let go of its gate once it had handed the model's close to the
    call still running (its drain timed out), the call returning meanwhile and closing the model:
    the stop, begun again, closed it a second time."""
    closed = threading.Event()

    class Model(_OneAtATime):
        closes = 0

        def close(self) -> None:
            self.closes += 1
            closed.set()

    model = Model(gate=True)
    runtime.register_model("a", model, warmup=False)
    served = runtime.registry.get("a", "1")

    class ReturnsThenInterrupts(_InterruptOnExit):
        def __exit__(self, *exc: object) -> None:
            self._lock.release()
            self._left -= 1
            if self._left == 0:  # the close is the call's: it returns and closes the model
                model.release.set()
                assert closed.wait(60), "the call never closed the model"
                raise KeyboardInterrupt

    calling = threading.Thread(target=runtime, args=(_request(1), Replies().respond(1)))
    calling.start()
    try:
        assert model.entered.wait(60), "the call never began"
        served._gate = ReturnsThenInterrupts(served._gate, 2)  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            runtime.unload_model("a", drain_timeout=0)
    finally:
        model.release.set()
        calling.join(60)
    assert model.closes == 1
    runtime.register_model("b", model, warmup=False)  # released


def test_close_does_not_wait_for_an_interrupted_unload_whose_model_is_closed(runtime: MLRuntime) -> None:
    """An unload interrupted as it let go of its versions (their models closed) leaves them listed
    as being unloaded by its thread, which lives on; close() in another thread waited for that
    thread to end, a model already closed."""
    model = _CountsCloses()
    runtime.register_model("a", model)
    interrupted, done = threading.Event(), threading.Event()
    lock = runtime._models_lock

    def unload() -> None:
        with contextlib.suppress(KeyboardInterrupt):
            runtime.unload_model("a")  # its 2nd acquisition: the one that lets go of the version
        interrupted.set()
        done.wait(60)  # the thread lives on

    runtime._models_lock = _InterruptAt(2)  # type: ignore[assignment]
    unloading = threading.Thread(target=unload)
    unloading.start()
    try:
        assert interrupted.wait(60), "the unload never returned"
        runtime._models_lock = lock
        assert model.closed == 1 and runtime._unloading, "not the case this test is about"
        closing = threading.Thread(target=runtime.close, kwargs={"drain_timeout": 60})
        closing.start()
        closing.join(20)
        assert not closing.is_alive(), "close() waits for an unload whose model is closed"
    finally:
        runtime._models_lock = lock
        done.set()
        unloading.join(60)


def test_a_model_being_unloaded_is_not_registered_again_under_it(runtime: MLRuntime) -> None:
    """Registered as 'b' while its unload as 'a' waited for a call, its warm-up ran beside that
    call and the unload then closed it under 'b'."""
    model = _OneAtATime(gate=True)
    with _unloading_during_a_call(runtime, model):
        with pytest.raises(ModelLoadError, match="is being unloaded as 'a' version '1', which closes it"):
            runtime.register_model("b", model)
    assert model.calls == 1 and runtime.registry.names() == []


def test_a_model_whose_unload_timed_out_is_not_registered_again_until_its_late_close(
    runtime: MLRuntime,
) -> None:
    """An unload whose drain timed out with a call still running returns, and that call closes the
    model when it returns. Registered as 'b' in between, the model was accepted, and the late
    close of 'a' then closed it under 'b'. It stays claimed until that close has happened."""
    closes: list[str] = []

    class Model(_OneAtATime):
        def close(self) -> None:
            closes.append(",".join(runtime.registry.names()))

    model = Model(gate=True)
    runtime.register_model("a", model, warmup=False)
    replies = Replies()
    calling = threading.Thread(target=runtime, args=(_request(1), replies.respond(1)))
    calling.start()
    try:
        assert model.entered.wait(60), "the call never began"
        runtime.unload_model("a", drain_timeout=0.05)  # returns with the call still running
        with pytest.raises(ModelLoadError, match="unloaded as 'a' version '1' while a call") as info:
            runtime.register_model("b", model, warmup=False)
        assert info.value.model == "b"
        assert runtime.registry.names() == [] and closes == []
    finally:
        model.release.set()
        calling.join(60)
    assert closes == [""]  # closed once its call returned, serving nothing
    runtime.register_model("b", model)  # and free from then on
    assert runtime.registry.names() == ["b"] and closes == [""]


def test_a_model_still_closing_in_another_runtime_is_not_registered_until_its_late_close(
    runtime: MLRuntime,
) -> None:
    """Claims were kept per runtime: a model whose unload in runtime 'first' timed out with a call
    still running was accepted by another runtime, and the late close of 'a' in 'first' then
    closed it under that runtime's 'b'. It is refused, naming the other runtime, until then."""
    closes: list[str] = []

    class Model(_OneAtATime):
        def close(self) -> None:
            closes.append(",".join(runtime.registry.names()))

    model = Model(gate=True)
    first = MLRuntime(runtime.hub, name="first")
    try:
        first.register_model("a", model, warmup=False)
        calling = threading.Thread(target=first, args=(_request(1), Replies().respond(1)))
        calling.start()
        try:
            assert model.entered.wait(60), "the call never began"
            first.unload_model("a", drain_timeout=0.05)  # returns with the call still running
            with pytest.raises(ModelLoadError) as info:
                runtime.register_model("b", model, warmup=False)
            assert info.value.model == "b"
            assert info.value.message == (
                "this Model was unloaded as 'a' version '1' in another MLRuntime, 'first', while a "
                "call of it still ran, and is closed when that call returns; pass a model of its "
                "own to each name and version"
            )
            assert runtime.registry.names() == [] and closes == []
        finally:
            model.release.set()
            calling.join(60)
        assert closes == [""]  # closed once its call returned, serving nothing
        runtime.register_model("b", model)  # and free from then on
        assert runtime.registry.names() == ["b"] and closes == [""]
    finally:
        first.close()


@pytest.mark.parametrize("state", ["served", "being registered", "unnamed"])
def test_a_model_another_runtime_holds_is_refused_naming_that_runtime(runtime: MLRuntime, state: str) -> None:
    """Served (or being registered) by one runtime, a model was accepted by another: unloading it
    in either closed it under the other."""
    model = _OneAtATime(gate=state == "being registered")
    first = MLRuntime(runtime.hub, name="" if state == "unnamed" else "first")
    registering = None
    try:
        if state == "being registered":
            registering, failed = _registering(first, "a", model)
            assert model.entered.wait(60), "the first registration never warmed the model up"
        else:
            first.register_model("a", model, max_batch_size=2)
        calls = model.calls
        runtime.name = "second"
        with pytest.raises(ModelLoadError) as info:
            runtime.register_model("b", model)
        where = "another MLRuntime (unnamed)" if state == "unnamed" else "another MLRuntime, 'first',"
        says = "is being registered" if state == "being registered" else "is already served"
        assert info.value.message.startswith(f"this _OneAtATime {says} as 'a' version '1' by {where}")
        assert info.value.model == "b" and model.calls == calls  # refused before its warm-up
        if registering is not None:
            model.release.set()
            registering.join(60)
            assert not failed
        first.unload_model("a")
        runtime.register_model("b", model)  # free once the other runtime let go of it
        assert runtime.registry.names() == ["b"]
    finally:
        model.release.set()
        if registering is not None:
            registering.join(60)
        first.close()


def test_a_model_of_a_runtime_dropped_without_close_is_registered_in_another(runtime: MLRuntime) -> None:
    """A runtime dropped without close() (garbage collected) can unload nothing, so it closes none
    of its models; yet a batched one, which its batcher thread kept alive, was refused by every
    other runtime for good ('already served ... by another MLRuntime (unnamed) which closes it
    when it is unloaded'), where it was accepted before the runtimes shared their claims. It is
    accepted, and closed once, by the runtime that serves it now."""
    model = _CountsCloses()
    name = unique_name("dropped")
    first = MLRuntime(runtime.hub, name="first")
    first.register_model(name, model, max_batch_size=2, warmup=False)
    batcher = first.registry.get(name, "1").batcher
    assert batcher is not None
    gone = weakref.ref(first)
    del first
    gc.collect()
    try:
        assert gone() is None, "the runtime was not collected"
        runtime.register_model("b", model, warmup=False)
        assert runtime.registry.names() == ["b"] and model.closed == 0
        runtime.unload_model("b")
        assert model.closed == 1
    finally:
        batcher.stop(0.0)  # the dropped runtime's thread, left running by it


def test_a_model_closing_in_a_runtime_dropped_since_is_not_registered_until_its_late_close(
    runtime: MLRuntime,
) -> None:
    """A runtime dropped after an unload whose drain timed out with a call still running: that
    call's return closes the model all the same, so it is refused until then (the test above
    must not free it)."""

    class Model(_OneAtATime):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    model = Model(gate=True)
    first = MLRuntime(runtime.hub, name="first")
    first.register_model("a", model, warmup=False)
    served = first.registry.get("a", "1")
    respond = Replies().respond(1)
    calling = threading.Thread(target=served.submit, args=(_request(1), respond, time.monotonic_ns()))
    calling.start()
    try:
        assert model.entered.wait(60), "the call never began"
        first.unload_model("a", drain_timeout=0.05)  # returns with the call still running
        gone = weakref.ref(first)
        del first
        gc.collect()
        assert gone() is None, "the runtime was not collected"
        with pytest.raises(ModelLoadError, match=r"was unloaded as 'a' version '1' in another MLRuntime"):
            runtime.register_model("b", model, warmup=False)
        assert runtime.registry.names() == [] and model.closed == 0
    finally:
        model.release.set()
        calling.join(60)
    assert model.closed == 1  # closed once its call returned
    runtime.register_model("b", model, warmup=False)  # and free from then on
    assert runtime.registry.names() == ["b"]


def test_a_forked_child_registers_a_model_its_parents_runtime_serves() -> None:
    """Claims are shared by the runtimes of a process, and a forked child (a preforking server's
    worker, multiprocessing's 'fork') inherited its parent's: a model object the parent's runtime
    served was refused in the child ('already served ... by another MLRuntime, 'parent''), though
    that runtime is the parent's, left serving there, and closes nothing in the child; and a
    parent thread holding the claims' lock at the fork (a registration under way) left it held in
    the child, whose first register_model then hung for ever. Each child registers it."""
    code = """
        import os, signal, threading, traceback
        import foundation_core
        from foundation_ml import FunctionModel, MLRuntime
        from foundation_ml import _claims, _plugin

        hub = foundation_core.start(plugins=[_plugin], entry_points=False)
        model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        parent = MLRuntime(hub, name="parent")
        parent.register_model("a", model, warmup=False)

        def child():  # never returns: any error is its exit status
            signal.alarm(30)  # a register_model that hangs ends the child (SIGALRM)
            status = 1
            try:
                runtime = MLRuntime(hub, name="child")
                runtime.register_model("b", model, warmup=False)
                status = 0 if runtime.registry.names() == ["b"] else 3
                runtime.close()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)

        codes = []
        for held in (False, True):
            held_now, release = threading.Event(), threading.Event()

            def hold():  # another thread of the parent's, in a claim as the fork comes
                with _claims._HELD_LOCK:
                    held_now.set()
                    release.wait()

            holder = threading.Thread(target=hold)
            if held:
                holder.start()
                held_now.wait()
            pid = os.fork()
            if pid == 0:
                child()
            release.set()
            if held:
                holder.join()
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        print("children exited", codes)
        parent.close()
        hub.shutdown()
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "children exited [0, 0]", (done.stdout, done.stderr[-2000:])


def test_close_waits_for_a_model_another_thread_is_unloading(runtime: MLRuntime) -> None:
    """close() found the model already out of the registry (another thread's unload_model was
    waiting for its call) and returned with it still open; it was closed later, when that unload
    finished. close() waits for it, and that unload's drain ends by close's deadline."""
    closed = threading.Event()

    class Model(_OneAtATime):
        def close(self) -> None:
            closed.set()

    model = Model(gate=True)
    with _unloading_during_a_call(runtime, model):
        threading.Timer(0.2, model.release.set).start()  # the call returns within close's drain
        runtime.close(drain_timeout=60)
        assert closed.is_set(), "close returned with the model still open"
    started = time.monotonic()
    with MLRuntime(runtime.hub) as rt:  # the other unload's drain ends by close's deadline
        with _unloading_during_a_call(rt, Model(gate=True)) as unloading:
            rt.close(drain_timeout=0.1)
            assert not unloading.is_alive() and time.monotonic() - started < 30


@contextlib.contextmanager
def _unloading_during_a_call(runtime: MLRuntime, model: _OneAtATime) -> Iterator[threading.Thread]:
    """``model`` registered as 'a', a call of it held at its gate, and another thread's
    ``unload_model("a")`` (yielded) waiting for that call; on leaving, the gate opens and both
    threads are joined."""
    runtime.register_model("a", model, warmup=False)
    replies = Replies()
    calling = threading.Thread(target=runtime, args=(_request(1), replies.respond(1)))
    calling.start()
    unloading = threading.Thread(target=runtime.unload_model, args=("a",), kwargs={"drain_timeout": 60})
    try:
        assert model.entered.wait(60), "the call never began"
        unloading.start()
        deadline = time.monotonic() + 60
        while not runtime._unloading and time.monotonic() < deadline:  # the unload waits for the call
            time.sleep(0.001)
        yield unloading
    finally:
        model.release.set()
        calling.join(60)
        if unloading.ident is not None:
            unloading.join(60)


class _Counting(FunctionModel):
    def __init__(self, version: str = "") -> None:
        super().__init__(self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.version = version
        self.calls = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return x


@pytest.mark.parametrize(("version", "own"), [(None, ""), ("1", ""), (None, "1"), ("2", "")])
def test_a_version_already_served_is_refused_before_the_new_model_loads_or_runs(
    runtime: MLRuntime, version: str | None, own: str
) -> None:
    """A second model for a name and version already served was loaded and warmed up in full, and
    only then refused by the registry."""
    runtime.register_model("a", _Counting())
    runtime.register_model("a", _Counting(), version="2")
    model = _Counting(own)
    with pytest.raises(ModelLoadError, match=f"version '{version or '1'}' is already loaded"):
        runtime.register_model("a", model, version=version)
    assert model.calls == 0 and runtime.versions("a") == ["1", "2"]


def test_a_version_already_served_is_refused_before_its_backend_loads_it() -> None:
    loads: list[int] = []

    def make() -> object:
        loads.append(1)
        return _Linear()

    with _backend_hub(make) as hub, MLRuntime(hub) as runtime:
        runtime.register_model("lin", {"w": 1}, version="3")
        with pytest.raises(ModelLoadError, match="version '3' is already loaded"):
            runtime.register_model("lin", {"w": 1}, version="3")
        assert loads == [1]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"inputs": {"x": "FP64[-1, 4]"}}, r"inputs= \(x: FP64\[-1, 4\]\) differ from the FunctionModel's"),
        ({"outputs": {"z": "FP32[-1, 4]"}}, r"outputs= \(z: FP32\[-1, 4\]\) differ"),
        ({"inputs": {"x": "FP32[-1"}}, r"inputs=: tensor spec 'FP32\[-1' for 'x' is not of the form"),
        ({"backend": "torch"}, r"backend='torch' given with a FunctionModel"),
        ({"threads": 2}, r"threads= given with a FunctionModel"),
        ({"device": "cuda:0"}, r"device='cuda:0' given with a FunctionModel that runs on 'cpu'"),
    ],
)
def test_what_a_loaded_model_is_given_besides_must_agree_with_it(runtime, given, says) -> None:
    """A LoadedModel is served as it is: a signature, backend, option or device that would be
    ignored is refused, naming it, rather than served as if it applied."""
    with pytest.raises(ModelLoadError, match=says):
        runtime.register_model("m", affine_model(), **given)
    assert runtime.registry.names() == []
    same = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}
    runtime.register_model("m", affine_model(), device="cpu", **same)  # agreeing: served
    assert runtime.registry.names() == ["m"]


def test_model_whose_outputs_contradict_its_signature_is_not_served(runtime) -> None:
    wrong = FunctionModel(lambda x: x[:, :2], inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with pytest.raises(ModelLoadError, match=r"output y is FP32\[1, 2\]"):
        runtime.register_model("wrong", wrong)
    assert runtime.registry.names() == []


def test_model_returning_outputs_it_does_not_declare_is_not_served(runtime) -> None:
    extra = FunctionModel(
        lambda x: {"y": x, "secret": x.astype(np.float64)},
        inputs={"x": "FP32[-1, 4]"},
        outputs={"y": "FP32[-1, 4]"},
    )
    with pytest.raises(ModelLoadError, match=r"undeclared output\(s\) secret"):
        runtime.register_model("extra", extra)
    assert runtime.registry.names() == []


def test_model_that_fails_warmup_is_not_served(runtime) -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("weights missing")

    with pytest.raises(ModelLoadError, match=r"raised on its example input at warm-up.*weights missing"):
        runtime.register_model(
            "b", FunctionModel(broken, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        )
    assert runtime.registry.names() == []


def test_a_model_that_fails_warmup_is_told_what_the_example_input_held(runtime) -> None:
    """A model taking indices below 5 (an nn.Embedding(5, ...)) failed on the example's integers
    0..9 with only 'index out of range': nothing said what it had been given."""

    def lookup(ids: np.ndarray) -> np.ndarray:
        return np.arange(10, dtype=np.float32).reshape(5, 2)[ids]

    with pytest.raises(ModelLoadError) as info:
        runtime.register_model(
            "emb", FunctionModel(lookup, inputs={"ids": "INT64[-1, 4]"}, outputs={"e": "FP32[-1, 4, 2]"})
        )
    message = str(info.value)
    assert "IndexError" in message
    example = FunctionModel(lookup, inputs={"ids": "INT64[-1, 4]"}, outputs={"e": "FP32[-1, 4, 2]"})
    ids = example.example_inputs()["ids"]
    assert f"ids: INT64[1, 4], values {ids.min()}..{ids.max()}" in message
    assert runtime.registry.names() == []


def test_requests_after_close_are_refused(runtime, rows) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.close()
    got = call(runtime, InferenceRequest("m", {"x": rows(1)}))
    assert isinstance(got, ShuttingDown | ModelNotFound)


def test_start_after_close_is_refused_and_serves_nothing(runtime, name) -> None:
    """``start()`` on a closed runtime started a server that nothing stopped (close() again did
    nothing, nor did the interpreter's exit): over shm its objects stayed in /dev/shm after the
    process ended. It is refused now, naming the runtime as closed, and nothing is served."""
    runtime.close()
    with pytest.raises(FoundationError, match=rf"^the runtime is closed: start\('inproc', '{name}'\)"):
        runtime.start("inproc", name)
    with pytest.raises(ServerUnavailable):
        InferenceClient(name, transport="inproc")
    assert runtime.servers == []


def test_a_start_that_a_close_in_another_thread_overtook_stops_its_server(
    runtime, name, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close() landing while start() was bringing up its server (after the check, before the
    server was listed) did not see it: the server was left serving, stopped by nobody."""
    from foundation_ml._inproc import InprocTransport

    serve = InprocTransport.serve

    def then_closed(self: Any, address: str, handler: Any, **options: Any) -> Any:
        server = serve(self, address, handler, **options)
        runtime.close()  # as another thread may, now
        return server

    monkeypatch.setattr(InprocTransport, "serve", then_closed)
    with pytest.raises(FoundationError, match=r"^the runtime is closed"):
        runtime.start("inproc", name)
    with pytest.raises(ServerUnavailable):
        InferenceClient(name, transport="inproc")
    assert runtime.servers == []


class _HeldClose(_CountsCloses):
    """A model whose close() waits until ``release`` is set (``closing`` says it began)."""

    def __init__(self) -> None:
        super().__init__()
        self.closing, self.release = threading.Event(), threading.Event()

    def close(self) -> None:
        super().close()
        self.closing.set()
        self.release.wait(60)


@contextlib.contextmanager
def _close_under_way(runtime: MLRuntime) -> Iterator[Callable[[], None]]:
    """Yields ``begin()``: a close() of ``runtime`` in another thread, returning once that close
    has stopped the servers and listed the models to unload, and is held in the first one's
    close() (a model registered here) until the block ends; then that close runs to its end."""
    held = _HeldClose()
    runtime.register_model("a_held", held)  # (unloaded first: in order of name)
    closing = threading.Thread(target=runtime.close)

    def begin() -> None:
        if closing.ident is None:
            closing.start()
        assert held.closing.wait(60)

    try:
        yield begin
    finally:
        held.release.set()
        if closing.ident is not None:
            closing.join(60)


@pytest.mark.parametrize("serve_fails", [False, True])
def test_a_start_overtaken_by_a_close_still_under_way_is_refused(
    runtime, name, monkeypatch: pytest.MonkeyPatch, serve_fails: bool
) -> None:
    """start() saw whether a close() had begun while it brought up its server by ``_closed``, set
    once close began; since 493a618 that is set when close ends, and with a close under way (its
    servers stopped already) the server started meanwhile was listed and left serving for good,
    or, the transport failing, the runtime left accepting. It reads ``_closing``: the start is
    refused (or raises the transport's failure), its server stopped, the runtime not accepting."""
    get = runtime.hub.transports.get
    with _close_under_way(runtime) as begin:

        def then_closing(transport: str) -> Any:
            begin()  # after start()'s check, before its server
            return _FailingTransport if serve_fails else get(transport)

        monkeypatch.setattr(runtime.hub.transports, "get", then_closing)
        raised = (
            (OSError, "the name is taken") if serve_fails else (FoundationError, r"^the runtime is closed")
        )
        with pytest.raises(raised[0], match=raised[1]):
            runtime.start("inproc", name)
        monkeypatch.undo()
        with pytest.raises(ServerUnavailable):
            InferenceClient(name, transport="inproc", hub=runtime.hub)
    assert runtime.servers == [] and runtime.stats()["server"]["accepting"] is False


def test_a_registration_overtaken_by_a_close_still_under_way_is_refused(runtime, monkeypatch) -> None:
    """register_model's last check (as it adds the model) read ``_closed``, set once close began;
    since 493a618 that is set when close ends, and a model whose loading ended while a close was
    unloading the others (having listed them) was added and left loaded, its batcher thread
    running, for good. It reads ``_closing``: refused, the model not served (nor closed: a
    LoadedModel handed over is the caller's to close)."""
    check_outputs = _runtime_models.check_outputs
    model, model_name = _CountsCloses(), unique_name("m")
    with _close_under_way(runtime) as begin:

        def then_closing(*args: Any) -> None:
            begin()  # after register_model's first check, before it adds the model
            check_outputs(*args)

        monkeypatch.setattr(_runtime_models, "check_outputs", then_closing)
        with pytest.raises(ModelLoadError, match="the runtime is closed"):
            runtime.register_model(model_name, model, max_batch_size=2)
    assert (model.closed, runtime.registry.names()) == (0, [])
    assert not [t for t in threading.enumerate() if t.name == f"batcher-{model_name}"]


class _FailingTransport:
    def serve(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the name is taken")


@pytest.mark.parametrize("serve_fails", [False, True])
def test_a_close_overtaking_a_start_before_its_server_leaves_the_runtime_not_accepting(
    runtime, name, monkeypatch: pytest.MonkeyPatch, serve_fails: bool
) -> None:
    """A close() that ran whole after start()'s check but before start() marked the runtime
    accepting left stats() saying ``accepting: true`` on a closed runtime: whether the start was
    then refused (as it should be), or raised the transport's failure (its name taken, say)."""
    get = runtime.hub.transports.get

    def then_closed(transport: str) -> Any:
        impl = get(transport)
        runtime.close()  # as another thread may, now: before start() marks the runtime accepting
        return _FailingTransport if serve_fails else impl

    monkeypatch.setattr(runtime.hub.transports, "get", then_closed)
    raised = (OSError, "the name is taken") if serve_fails else (FoundationError, r"^the runtime is closed")
    with pytest.raises(raised[0], match=raised[1]):
        runtime.start("inproc", name)
    assert runtime.servers == [] and runtime.stats()["server"]["accepting"] is False


def test_handler_errors_are_inference_errors_with_wire_codes(served: InferenceClient) -> None:
    with pytest.raises(InferenceError) as info:
        served.infer("nope", {})
    assert info.value.code.name == "MODEL_NOT_FOUND"


def test_requested_outputs_are_the_only_ones_returned(runtime, name, rows) -> None:
    two = FunctionModel(
        lambda x: {"double": x * 2, "neg": -x},
        inputs={"x": "FP32[-1, 4]"},
        outputs={"double": "FP32[-1, 4]", "neg": "FP32[-1, 4]"},
    )
    runtime.register_model("two", two)
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    x = rows(2)
    assert sorted(client.infer("two", {"x": x})) == ["double", "neg"]
    only = client.infer("two", {"x": x}, outputs=["neg"])
    assert list(only) == ["neg"]
    np.testing.assert_array_equal(only["neg"], -x)


def test_async_infer_gives_the_same_answer(served: InferenceClient, rows) -> None:
    import asyncio

    x = rows(2)
    out = asyncio.run(served.ainfer("affine", {"x": x}))
    np.testing.assert_array_equal(out["y"], x * 2 + 1)


def test_client_outputs_are_the_callers_own_arrays(served: InferenceClient, rows) -> None:
    y1 = served.infer("affine", {"x": rows(1)})["y"]
    y1[...] = 0  # writable, and writing it changes nothing the server or a later call sees
    y2 = served.infer("affine", {"x": rows(1)})["y"]
    np.testing.assert_array_equal(y2, rows(1) * 2 + 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, r"max_batch_size must be an integer >= 1 \(1: no batching\), not 0"),
        ({"max_batch_size": 2.0}, r"max_batch_size must be an integer >= 1 \(1: no batching\), not 2.0"),
        ({"max_wait_us": -1}, r"max_wait_us must be an integer from 0 to 10000000 \(10 s\), not -1"),
        (
            {"max_wait_us": 99999999999999999999999},  # would end the batcher thread: OverflowError
            r"max_wait_us must be an integer from 0 to 10000000 \(10 s\), not 99999999999999999999999",
        ),
    ],
)
def test_batching_settings_that_mean_nothing_are_refused(
    hub: Hub, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^MLRuntime: {message}"):
        MLRuntime(hub, **kwargs)
    model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with MLRuntime(hub) as rt:
        with pytest.raises(ValueError, match=f"^register_model\\('affine'\\): {message}"):
            rt.register_model("affine", model, **kwargs)
        assert rt.registry.names() == []  # nothing registered, nothing half-loaded


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        (5, {}, TypeError, r"^register_model: the model name must be a str, not int \(5\)"),
        ("", {}, ValueError, r"^register_model: the model name '' must be 1-63 UTF-8 bytes"),
        ("m" * 64, {}, ValueError, r"^register_model: the model name 'm{64}' must be 1-63 UTF-8 bytes"),
        ("a\nb", {}, ValueError, r"of printable characters"),
        ("m", {"version": 2}, TypeError, r"^register_model\('m'\): the version must be a str, not int"),
        ("m", {"version": "v" * 16}, ValueError, r"^register_model\('m'\): the version 'v{16}' must be 1-15"),
    ],
)
def test_a_name_or_version_no_transport_can_carry_is_refused(
    hub: Hub, name: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with MLRuntime(hub) as rt:
        with pytest.raises(error, match=message):
            rt.register_model(name, model, **kwargs)
        assert rt.registry.names() == []


def test_a_tensor_name_no_transport_can_carry_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^tensor name 'x{64}' must be 1-63 UTF-8 bytes"):
        FunctionModel(lambda x: {"y": x}, inputs={"x" * 64: "FP32[-1]"}, outputs={"y": "FP32[-1]"})


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "5", 1e11])
def test_a_client_timeout_that_is_not_a_positive_number_is_refused(hub: Hub, timeout: Any) -> None:
    with pytest.raises(
        ValueError, match=r"^InferenceClient: timeout must be a number of seconds in \(0, 1e\+09\] or None"
    ):
        InferenceClient("anything", transport="inproc", hub=hub, timeout=timeout)


def test_a_timeout_of_numpy_s_numbers_is_seconds_to_the_client(hub: Hub, served: InferenceClient) -> None:
    """(np.float64(5), a float, was 'no number of seconds' to the client and to each call.)"""
    client = InferenceClient(served.name, transport="inproc", hub=hub, timeout=np.float64(2.5))
    assert client.timeout == 2.5 and type(client.timeout) is float
    client.close()
    x = np.zeros((1, 4), np.float32)
    for timeout in (np.float32(5), np.int64(5)):
        np.testing.assert_array_equal(served.infer("affine", {"x": x}, timeout=timeout)["y"], x * 2 + 1)


def test_a_call_timeout_that_is_not_positive_is_refused(served: InferenceClient) -> None:
    x = np.zeros((1, 4), np.float32)
    refused = r"^timeout must be a number of seconds in \(0, 1e\+09\] or None"
    for timeout in (0, -2.5, float("nan"), 1e11):
        with pytest.raises(ValueError, match=refused):
            served.infer("affine", {"x": x}, timeout=timeout)
    np.testing.assert_array_equal(served.infer("affine", {"x": x}, timeout=5)["y"], x * 2 + 1)


def test_inproc_refuses_an_empty_address_as_check_address_says(runtime: MLRuntime) -> None:
    from foundation_ml._inproc import InprocTransport

    with pytest.raises(ValueError, match="the inproc address must not be empty"):
        InprocTransport().check_address("")
    with pytest.raises(ValueError, match="the inproc address must not be empty"):
        runtime.start("inproc", "")
    InprocTransport().check_address("any name/at all")


def test_metadata_carries_the_signature_of_every_loaded_version(runtime: MLRuntime) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(
        "m",
        FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 8]"}, outputs={"y": "FP32[-1, 8]"}),
        version="2",
    )
    doc = runtime.metadata("m")
    assert doc["inputs"][0]["shape"] == [-1, 8]  # the latest
    assert {v: s["inputs"][0]["shape"] for v, s in doc["signatures"].items()} == {"1": [-1, 4], "2": [-1, 8]}


def _slow_model(seconds: float) -> FunctionModel:
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(seconds)
        return {"y": x}

    return FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})


def test_inproc_answer_after_the_deadline_is_deadline_exceeded(runtime: MLRuntime, rows) -> None:
    """The model runs in the caller's thread on inproc: the answer exists, but it came late."""
    runtime.register_model("slow", _slow_model(0.3), max_batch_size=1)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        with pytest.raises(DeadlineExceeded):
            client.infer("slow", {"x": rows(1)}, timeout=0.05)
        assert client.infer("slow", {"x": rows(1)}, timeout=5)["y"].shape == (1, 4)


def test_async_calls_fill_a_batch_and_the_timeout_counts_from_the_call(runtime: MLRuntime, rows) -> None:
    import asyncio

    # the batch closes when full: a wait far longer than 16 calls take, on a loaded machine too
    # (200 ms split it now and then, its calls started late)
    runtime.register_model("affine", affine_model(), max_batch_size=16, max_wait_us=10_000_000)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:

        async def sixteen() -> list[dict[str, np.ndarray]]:
            return await asyncio.gather(*(client.ainfer("affine", {"x": rows(1)}) for _ in range(16)))

        assert len(asyncio.run(sixteen())) == 16
        assert runtime.stats()["models"]["affine"]["batch_sizes"] == {"16": 1}


def test_async_call_waiting_for_a_thread_past_its_deadline_is_not_sent(
    runtime: MLRuntime, rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from foundation_ml import _client

    monkeypatch.setattr(_client, "AINFER_THREADS", 1)
    runtime.register_model("slow", _slow_model(0.3), max_batch_size=1)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:

        async def two() -> list[object]:
            first = client.ainfer("slow", {"x": rows(1)}, timeout=5)
            second = client.ainfer("slow", {"x": rows(1)}, timeout=0.1)  # waits 0.3 s for the thread
            return await asyncio.gather(first, second, return_exceptions=True)

        done, late = asyncio.run(two())
        assert isinstance(done, dict) and isinstance(late, DeadlineExceeded)
        assert "no thread free" in str(late)
    assert runtime.stats()["models"]["slow"]["requests"] == 1


def test_a_signature_whose_example_is_absurdly_large_is_refused_at_warm_up(runtime: MLRuntime) -> None:
    huge = FunctionModel(
        lambda x: {"y": x[:, :1]}, inputs={"x": "FP32[-1, 1000000000000000]"}, outputs={"y": "FP32[-1, 1]"}
    )
    with pytest.raises(
        ModelLoadError,
        match=r"^model 'huge': <FunctionModel> cannot be warmed up: tensor x: FP32\[-1, 1000000000000000\]: "
        r"its example \(variable dimensions as 1\) would take 4000000000000000 bytes",
    ):
        runtime.register_model("huge", huge)
    assert runtime.registry.names() == []


def test_a_package_naming_an_unregistered_backend_is_refused_naming_its_manifest(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    path = write_package(
        tmp_path / "p.zip",
        name="m",
        version="1",
        backend="onnx",
        factory="pkg.mod:build",
        inputs=parse_signature({"x": "FP32[-1, 4]"}),
        outputs=parse_signature({"y": "FP32[-1, 4]"}),
        files={"model.onnx": b"onnx"},
    )
    registered = ", ".join(runtime.hub.model_backends.names()) or "none"
    message = (
        rf"p\.zip:manifest\.json names backend 'onnx', which is not registered \(registered: {registered}\)"
    )
    with pytest.raises(PackageError, match=message) as info:
        runtime.register_model("m", str(path))
    assert info.value.file == "manifest.json"
    assert runtime.registry.names() == []


def test_a_damaged_package_is_a_package_error_before_any_backend_is_chosen(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "deep.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(PackageError, match=r"deep\.zip:manifest\.json nests arrays or objects too deeply"):
        runtime.register_model("m", str(path))


def test_a_non_array_output_is_named_at_warm_up(runtime) -> None:
    """It was an AttributeError ('int' object has no attribute 'dtype') out of the check itself."""
    odd = FunctionModel(lambda x: {"y": 3}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with pytest.raises(ModelLoadError, match=r"output y is int, not an array \(declared outputs: y: FP32"):
        runtime.register_model("odd", odd)
    assert runtime.registry.names() == []


# --- a third-party backend's mistakes, named at registration --------------------------------------


class _Linear(LoadedModel):
    """A backend's model: ``y = x @ w`` (FP32[-1, 2] -> FP32[-1, 2])."""

    platform = "numpy"

    def __init__(self, *, signature: bool = True, answer: str = "dict") -> None:
        if signature:
            self.inputs = parse_signature({"x": "FP32[-1, 2]"})
            self.outputs = parse_signature({"y": "FP32[-1, 2]"})
        self.answer = answer

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        y = inputs["x"] * 2
        return y if self.answer == "array" else {"y": y}


class _WeightsBackend(ModelBackend):
    """Takes a dict of weights (``accepts``) or any string; what it loads is set per test."""

    name = "weights"
    make: Callable[[], object] = _Linear

    @classmethod
    def accepts(cls, obj: object) -> bool:
        return isinstance(obj, dict) and "w" in obj

    def load(self, spec: Any, *, name: str, **options: Any) -> Any:
        return type(self).make()


def test_a_backend_that_cannot_package_says_which_method_it_lacks(tmp_path: Path) -> None:
    """``foundation package --backend npz`` said only "cannot write model packages": not that the
    backend lacks ``package()``, nor where a backend author reads how to write one."""
    with pytest.raises(NotImplementedError) as got:
        _WeightsBackend().package({"w": 1}, tmp_path / "pkg", name="m")
    assert str(got.value) == (
        "backend 'weights' cannot write model packages: its _WeightsBackend does not define "
        "package() (docs/serving.md, 'Writing a model backend')"
    )
    assert not (tmp_path / "pkg").exists()


def _backend_hub(make: Callable[[], object] = _Linear) -> Any:
    """A hub with the ml plugin and ``weights`` registered lazily, as plugins.md tells plugins to."""

    class Backend(_WeightsBackend):
        pass

    Backend.make = staticmethod(make)  # type: ignore[assignment]
    globals()["_LazyBackend"] = Backend

    class Plugin:
        @hookimpl
        def foundation_register_model_backends(self, register: Any) -> None:
            register("weights", f"{__name__}:_LazyBackend")

    return foundation_core.start(plugins=[ml_plugin, Plugin()], entry_points=False)


def test_a_lazily_registered_backend_is_asked_whether_it_accepts_an_object() -> None:
    """A lazy backend was never imported, so its accepts() was never asked: 'no backend
    recognises a builtins.dict (backends: weights)' though that one takes it."""
    with _backend_hub() as hub, MLRuntime(hub) as runtime:
        assert hub.model_backends.entry("weights").lazy
        assert runtime.register_model("lin", {"w": 1}).platform == "numpy"


class _RaisingBackend(_WeightsBackend):
    """A third-party backend whose ``accepts`` raises on what it does not know."""

    @classmethod
    def accepts(cls, obj: object) -> bool:
        raise RuntimeError("cannot judge it")


def test_a_backend_whose_accepts_raises_is_named_and_the_others_are_still_asked() -> None:
    """One backend's accepts() raising failed every object's registration as '<dict> failed to
    load: RuntimeError: cannot judge it', naming no backend, though another backend took it."""

    class Plugin:
        @hookimpl
        def foundation_register_model_backends(self, register: Any) -> None:
            register("broken", f"{__name__}:_RaisingBackend")  # asked first
            register("weights", f"{__name__}:_WeightsBackend")

    with (
        foundation_core.start(plugins=[ml_plugin, Plugin()], entry_points=False) as hub,
        MLRuntime(hub) as runtime,
    ):
        assert list(hub.model_backends.names()).index("broken") < list(hub.model_backends.names()).index(
            "weights"
        )
        assert runtime.register_model("lin", {"w": 1}).platform == "numpy"
        with pytest.raises(
            ModelLoadError, match=r"'broken'\.accepts\(\) raised RuntimeError: cannot judge it"
        ):
            runtime.register_model("lin2", [1])


def test_an_object_no_backend_accepts_names_the_backends_asked() -> None:
    with _backend_hub() as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError, match=r"no backend recognises a builtins\.list \(backends: weights\)"
        ):
            runtime.register_model("lin", [1])


def test_a_path_without_backend_says_which_backend_was_assumed() -> None:
    """'... is loaded by torch' was nowhere: a numpy backend's file given without backend= failed
    with NotRegisteredError "no model backend named 'torch'" (or torch's own complaint)."""
    with _backend_hub() as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError,
            match=r"w\.npz: a path or reference is loaded by the 'torch' backend unless backend= names "
            r"another, and 'torch' is not registered \(registered: weights\)",
        ):
            runtime.register_model("lin", "w.npz")
        assert runtime.register_model("lin", "w.npz", backend="weights").platform == "numpy"


def test_a_backend_returning_something_else_than_a_loaded_model_is_named() -> None:
    """It was AttributeError: 'str' object has no attribute 'outputs'."""
    with _backend_hub(lambda: "a model") as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError,
            match=rf"backend 'weights' \({re.escape(__name__)}:_LazyBackend\.load\) returned builtins\.str, "
            r"not a foundation_ml\.LoadedModel",
        ):
            runtime.register_model("lin", "w.npz", backend="weights")
        assert runtime.registry.names() == []


@pytest.mark.parametrize("warmup", [True, False])
def test_a_loaded_model_without_its_signature_is_named(warmup: bool) -> None:
    """It was AttributeError: '_Linear' object has no attribute 'outputs'."""
    closed = []

    class Unsigned(_Linear):
        def close(self) -> None:
            closed.append(self)

    with _backend_hub(lambda: Unsigned(signature=False)) as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError,
            match=rf"backend 'weights' \({re.escape(__name__)}:_LazyBackend\.load\): the Unsigned has no "
            r"inputs: set self\.inputs = parse_signature\(",
        ):
            runtime.register_model("lin", "w.npz", backend="weights", warmup=warmup)
        assert len(closed) == 1  # what the backend loaded is released
        with pytest.raises(ModelLoadError, match=r"register_model: the Unsigned has no inputs"):
            runtime.register_model("lin", Unsigned(signature=False))


def test_a_signature_that_is_not_tensor_specs_is_named(runtime: MLRuntime) -> None:
    model = _Linear()
    model.outputs = {"y": "FP32[-1, 2]"}  # type: ignore[assignment]
    with pytest.raises(
        ModelLoadError,
        match=r"the _Linear's outputs are dict \{'y': 'FP32\[-1, 2\]'\}, not a tuple of TensorSpec",
    ):
        runtime.register_model("lin", model)


def test_a_model_answering_an_array_instead_of_a_mapping_is_named_at_warm_up(runtime: MLRuntime) -> None:
    """It was TypeError: unhashable type: 'numpy.ndarray', out of the warm-up's check."""
    with pytest.raises(
        ModelLoadError, match=r"the model returned ndarray, not a mapping of output names to arrays"
    ):
        runtime.register_model("lin", _Linear(answer="array"))
    assert runtime.registry.names() == []


class _Closes(FunctionModel):
    closed = 0

    def close(self) -> None:
        _Closes.closed += 1


@pytest.mark.parametrize("raised", [RuntimeError("toy: stop failed"), KeyboardInterrupt()])
def test_close_stops_every_server_and_unloads_every_model_whatever_one_stop_raises(runtime, raised) -> None:
    """A server whose stop() raised (or a Ctrl-C during its drain) left the servers after it
    serving and every model loaded: close() had marked itself done, so nothing ever retried."""
    _Closes.closed = 0
    for model in ("a", "b"):
        runtime.register_model(
            model, _Closes(lambda x: {"y": x}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})
        )
    first, second = unique_name(), unique_name()
    runtime.start("inproc", first)
    runtime.start("inproc", second)
    [(_, broken), _] = runtime.servers
    stop = broken.stop

    def stop_raises(drain_timeout: float = 5.0) -> None:
        stop(drain_timeout)
        raise raised

    broken.stop = stop_raises  # type: ignore[method-assign]
    with pytest.raises(type(raised)):
        runtime.close()
    assert _Closes.closed == 2
    assert runtime.registry.names() == []
    assert runtime.servers == []
    with pytest.raises(ServerUnavailable):
        InferenceClient(second, transport="inproc", hub=runtime.hub)


def _close_interrupted(
    hub: Hub, transport: str, name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[MLRuntime, _CountsCloses, str]:
    """A runtime serving a batching model on ``transport``, whose close() a Ctrl-C interrupted
    between its steps: as it made the batchers drain, or once it had stopped the servers (as it
    reported what they abandoned). Returns it, its model and the model's name."""
    rt = MLRuntime(hub)
    model, model_name = _CountsCloses(), unique_name("m")
    rt.register_model(model_name, model, max_batch_size=2)  # a batcher thread
    rt.start(transport, name)
    _interrupted_once(Batcher if where == "drain" else _runtime_lifecycle, where, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        rt.close()
    return rt, model, model_name


def _leave_nothing(rt: MLRuntime) -> None:
    """Stop what the old code's close left running: its failure leaks nothing either."""
    for _, server in rt._stopping:
        server.stop(0)
    for left in rt.registry.names():
        rt.unload_model(left, drain_timeout=0)


def _all_stopped(rt: MLRuntime, model: _CountsCloses, model_name: str, transport: str, name: str) -> None:
    assert (model.closed, rt.registry.names()) == (1, [])
    assert not [t for t in threading.enumerate() if t.name == f"batcher-{model_name}"]
    with pytest.raises(ServerUnavailable):
        InferenceClient(name, transport=transport, hub=rt.hub)
    assert shm_entries(name) == []
    assert rt not in _runtime_lifecycle.OPEN


@pytest.mark.parametrize("transport", ["inproc", "shm"])
@pytest.mark.parametrize("where", ["drain", "_report_abandoned"])
def test_a_close_interrupted_between_its_steps_is_finished_by_a_second_close(
    request: pytest.FixtureRequest, name: str, monkeypatch: pytest.MonkeyPatch, transport: str, where: str
) -> None:
    """A Ctrl-C landing in close() between its steps (leaving a ``with MLRuntime()`` block as
    it is pressed) left the models loaded, their batcher threads and the servers running (over
    shm, their objects in /dev/shm), and a second close() did nothing: the runtime was marked
    closed, and out of the set closed at exit, from the first step on. A second close() now
    stops what is left, each model closed once; a third does nothing."""
    hub = request.getfixturevalue("shm_hub" if transport == "shm" else "hub")
    rt, model, model_name = _close_interrupted(hub, transport, name, where, monkeypatch)
    try:
        assert rt in _runtime_lifecycle.OPEN
        rt.close()
        _all_stopped(rt, model, model_name, transport, name)
        rt.close()
        assert model.closed == 1
    finally:
        _leave_nothing(rt)


def test_a_runtime_whose_close_was_interrupted_refuses_requests_and_new_work(
    hub: Hub, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C as close() made the batchers drain left its servers accepting and the runtime
    serving requests, though closing. From the first close() on, requests are refused
    ``ShuttingDown``, a model or a server refused as ever ("the runtime is closed")."""
    rt, model, model_name = _close_interrupted(hub, "inproc", name, "drain", monkeypatch)
    try:
        replies = Replies()
        rt(InferenceRequest(model_name, {"x": np.zeros((1, 4), np.float32)}, id=1), replies.respond(1))
        assert isinstance(replies.wait(1)[1], ShuttingDown)
        with pytest.raises(ModelLoadError, match="the runtime is closed"):
            rt.register_model(unique_name("m"), _CountsCloses())
        with pytest.raises(FoundationError, match=r"^the runtime is closed"):
            rt.start("inproc", unique_name())
        assert model.closed == 0  # (closed by the second close, below)
    finally:
        rt.close()
        _leave_nothing(rt)


def test_a_runtime_whose_close_was_interrupted_is_closed_at_exit(
    hub: Hub, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C as close() made the batchers drain, and no close() after it: the interpreter's
    exit did not close the runtime either (it was out of the set closed then), its models and
    server left running. The exit closes it now, as any runtime still open."""
    monkeypatch.setattr(_runtime_lifecycle, "OPEN", weakref.WeakSet())  # this test's runtime alone
    rt, model, model_name = _close_interrupted(hub, "inproc", name, "drain", monkeypatch)
    try:
        _runtime_lifecycle._close_open_runtimes()
        _all_stopped(rt, model, model_name, "inproc", name)
    finally:
        _leave_nothing(rt)


class _HeldStop(TransportServer):
    """A server whose first stop() waits until ``release`` is set."""

    address = "held"

    def __init__(self) -> None:
        self.stops = 0
        self.stopping, self.release = threading.Event(), threading.Event()

    def stop(self, drain_timeout: float = 5.0) -> None:
        self.stops += 1
        if self.stops == 1:
            self.stopping.set()
            self.release.wait(60)


def test_a_close_while_another_thread_closes_returns_at_once_and_stops_nothing_twice(
    runtime: MLRuntime,
) -> None:
    """close() is safe to run again after an interrupted one, but not beside one under way: a
    second close while the first stops its servers returns at once (as before), rather than
    stop the same server again or take it off the list the first is working through."""
    held = _HeldStop()
    runtime.servers.append(("fake", held))
    closing = threading.Thread(target=runtime.close)
    closing.start()
    try:
        assert held.stopping.wait(60)
        runtime.close()
        assert held.stops == 1
    finally:
        held.release.set()
        closing.join(60)
    assert held.stops == 1 and runtime not in _runtime_lifecycle.OPEN


def _ctrl_c_at(n: int, where: Callable[[FrameType], bool], point: list[str]) -> Callable[..., None]:
    """A profile function (``sys.setprofile``) that raises KeyboardInterrupt at the ``n``-th
    point (0 the first) where CPython could run a Ctrl-C's handler in a frame ``where`` picks or
    in a function it calls: as a function begins or returns, or as a C function returns (before
    its result is used). ``point`` is told where."""
    left = [n]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call" or not (where(frame) or (frame.f_back is not None and where(frame.f_back))):
            return  # not picked; nor as a C function is called (a handler runs once it returns)
        left[0] -= 1
        if left[0] < 0:
            point.append(f"{event} {frame.f_code.co_name}:{frame.f_lineno} {getattr(arg, '__name__', '')}")
            raise KeyboardInterrupt

    return profile


def _what_close_left(
    rt: MLRuntime, model: _CountsCloses, model_name: str, transport: str, name: str
) -> list[str]:
    """What a close left running: the model not closed (or twice), its batcher thread (given a
    moment to end: a hurried unload does not wait for it), the server, its /dev/shm objects."""
    left = [] if (model.closed, rt.registry.names()) == (1, []) else [f"model closed {model.closed} time(s)"]
    deadline = time.monotonic() + 30
    while (
        any(t.name == f"batcher-{model_name}" for t in threading.enumerate()) and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    if any(t.name == f"batcher-{model_name}" for t in threading.enumerate()):
        left.append("its batcher thread")
    with contextlib.suppress(ServerUnavailable):
        InferenceClient(name, transport=transport, hub=rt.hub).close()
        left.append("the server")
    return left + shm_entries(name)


def _close_interrupted_everywhere(
    new_runtime: Callable[[], MLRuntime],
    transport: str,
    where: Callable[[FrameType], bool],
    also: Callable[[MLRuntime], list[str]] = lambda rt: [],
) -> tuple[list[str], int]:
    """For each point of close() ``where`` picks (``_ctrl_c_at``) in turn, a new runtime serving
    a batching model on ``transport`` whose close() a Ctrl-C interrupts there, then closed again:
    what each point left running after that second close (``_what_close_left``, and what
    ``also`` finds), and how many points there were."""
    failures: list[str] = []
    for n in itertools.count():
        rt = new_runtime()
        model, model_name, name = _CountsCloses(), unique_name("m"), unique_name()
        rt.register_model(model_name, model, max_batch_size=2)  # a batcher thread
        server = rt.start(transport, name)
        point: list[str] = []
        sys.setprofile(_ctrl_c_at(n, where, point))
        try:
            rt.close()
        except KeyboardInterrupt:
            pass
        finally:
            sys.setprofile(None)
        if not point:  # past the last point: this close ran uninterrupted
            return failures, n
        rt.close()
        left = _what_close_left(rt, model, model_name, transport, name) + also(rt)
        if left:
            failures.append(f"{point[0]}: {', '.join(left)}")
            server.stop(0)  # (leaking nothing either)
            for left_name in rt.registry.names():
                rt.unload_model(left_name, drain_timeout=0)
    raise AssertionError("unreachable")


# a Ctrl-C handled in a weakref callback (an object dying in close) is printed and lost, as ever
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_as_close_begins_leaves_a_runtime_a_second_close_closes(hub: Hub) -> None:
    """close() took a lock, then entered the try whose finally let it go: a Ctrl-C handled as the
    acquire() returned left the lock held for good, and every later close() (the exit's too)
    returned at once, the models and servers left running. A Ctrl-C at each point of close()
    itself (not in its steps) now leaves a runtime that a second close() closes."""
    close = _runtime_lifecycle.close.__code__
    failures, points = _close_interrupted_everywhere(
        lambda: MLRuntime(hub), "inproc", lambda f: f.f_code is close
    )
    assert not failures, "\n".join(failures)
    assert points > 10  # (the profile function saw close's points)


class _CountsShutdowns:
    """A plugin noting each hub it is shut down with."""

    foundation_name = "counts_shutdowns"

    def __init__(self) -> None:
        self.hubs: list[Hub] = []

    @hookimpl
    def foundation_shutdown(self, hub: Hub) -> None:
        self.hubs.append(hub)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # (as above)
@pytest.mark.parametrize("transport", ["inproc", "shm", "own-hub"])
def test_a_ctrl_c_anywhere_in_close_leaves_a_runtime_a_second_close_closes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """Each step of close() caught what it raised, a Ctrl-C too, and went on: one handled as a
    server's stop(), a model's unload or the runtime's own hub's shutdown began (before it did
    anything) left that server serving, that model loaded (its batcher thread running) or the
    hub's plugins never shut down, for good, the runtime marked closed. A step a Ctrl-C
    interrupts is now run once more, at once; a Ctrl-C at any point of close() and its steps
    leaves a runtime that a second close() closes (if the first did not). ``own-hub``: an
    ``MLRuntime()`` serving inproc, with a hub of its own."""
    shutdowns = _CountsShutdowns()
    if transport == "own-hub":
        start, transport = foundation_core.start, "inproc"
        monkeypatch.setattr(
            foundation_core, "start", lambda: start(plugins=[ml_plugin, shutdowns], entry_points=False)
        )
        new_runtime = MLRuntime
    else:
        hub = request.getfixturevalue("shm_hub" if transport == "shm" else "hub")
        new_runtime = functools.partial(MLRuntime, hub)

    def hub_shut_down_once(rt: MLRuntime) -> list[str]:
        times = shutdowns.hubs.count(rt.hub)
        return [] if times == int(rt._own_hub) else [f"its hub shut down {times} time(s)"]

    lifecycle = _runtime_lifecycle.__file__
    failures, points = _close_interrupted_everywhere(
        new_runtime, transport, lambda f: f.f_code.co_filename == lifecycle, hub_shut_down_once
    )
    assert not failures, "\n".join(failures)
    assert points > 40  # (the profile function saw close's steps)


class _ClosesTheRuntime(_CountsCloses):
    """A model whose close() closes its runtime, noting what the other model's count was then."""

    def __init__(self, runtime: MLRuntime, other: _CountsCloses) -> None:
        super().__init__()
        self.runtime, self.other, self.other_then = runtime, other, -1

    def close(self) -> None:
        super().close()
        self.runtime.close()
        self.other_then = self.other.closed


def test_a_close_called_by_a_model_s_close_returns_at_once(runtime: MLRuntime) -> None:
    """A model's close() calling close() on its runtime, as the runtime's close unloads it: that
    close is the one under way, in this thread, and returns at once (it neither waits for itself
    nor runs the steps a second time, unloading the other models from inside this one's close)."""
    other = _CountsCloses()
    first = _ClosesTheRuntime(runtime, other)
    runtime.register_model("a_first", first)  # (unloaded in order of name)
    runtime.register_model("b_other", other)
    runtime.start("inproc", unique_name())
    runtime.close()
    assert (first.closed, first.other_then, other.closed) == (1, 0, 1)
    assert runtime not in _runtime_lifecycle.OPEN


class _CloseRaises(FunctionModel):
    def close(self) -> None:
        _Closes.closed += 1
        raise RuntimeError("toy: version 1 cannot close")


@pytest.mark.parametrize("how", ["unload_model", "close"])
def test_every_version_is_stopped_whatever_one_versions_close_raises(runtime, how) -> None:
    """unload_model (and so close) stopped the versions of a model one after another: one whose
    stop raised (its model's close()) left those after it running, out of the registry already,
    so nothing ever stopped them or closed their models."""
    _Closes.closed = 0
    spec = {"inputs": {"x": "FP32[-1]"}, "outputs": {"y": "FP32[-1]"}}
    runtime.register_model("m", _CloseRaises(lambda x: {"y": x}, **spec), version="1")
    runtime.register_model("m", _Closes(lambda x: {"y": x}, **spec), version="2")
    unload = runtime.close if how == "close" else functools.partial(runtime.unload_model, "m")
    with pytest.raises(RuntimeError, match="version 1 cannot close"):
        unload()
    assert _Closes.closed == 2  # version 2's model closed too
    assert runtime.registry.names() == []


class _CloseFails(_Linear):
    """A backend's model whose ``close()`` raises."""

    def close(self) -> None:
        raise RuntimeError("toy: cannot close")


@pytest.mark.parametrize(
    ("answer", "says"),
    [("dict", "version '1' is already loaded"), ("array", "the model returned ndarray, not a mapping")],
    ids=["same-version", "warm-up-fails"],
)
def test_a_registration_that_fails_says_why_though_releasing_its_model_raises_too(
    answer: str, says: str
) -> None:
    """A registration that failed after its model was loaded (the version already served, a
    warm-up that failed) released the model; its close() raising replaced the reason with
    'RuntimeError: toy: cannot close' (the reason only its __context__)."""
    hub = _backend_hub(lambda: _CloseFails(answer=answer))
    rt = MLRuntime(hub)
    try:
        rt.register_model("m", {"w": 1}, warmup=False)
        batchers = {t for t in threading.enumerate() if t.name.startswith("batcher-")}
        with pytest.raises(ModelLoadError, match=says) as info:
            # (no version=: the loaded model's own, '1', is known only once it is loaded)
            rt.register_model("m", {"w": 2}, version=None if answer == "dict" else "2", max_batch_size=4)
        assert info.value.model == "m"
        assert info.value.__notes__ == ["releasing model 'm' also raised: RuntimeError('toy: cannot close')"]
        assert rt.versions("m") == ["1"]
        assert {t for t in threading.enumerate() if t.name.startswith("batcher-")} == batchers
    finally:
        with contextlib.suppress(RuntimeError):  # the first model's close() raises too
            rt.close()
        hub.shutdown()


class _UnloadsOnExit:
    """The runtime's ``_models_lock``: as ``thread`` lets go of it the ``at``-th time, another
    thread's ``unload(name)`` runs to its end, then a Ctrl-C lands (Python checks for signals as
    a ``with`` block ends). Other threads take it as a plain lock."""

    def __init__(self, lock: threading.Lock, at: int, unload: Callable[[str], None], name: str) -> None:
        self._lock, self._left, self._unload, self._name = lock, at, unload, name
        self._thread = threading.current_thread()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        if threading.current_thread() is not self._thread:
            return
        self._left -= 1
        if self._left == 0:
            other = threading.Thread(target=self._unload, args=(self._name,))
            other.start()
            other.join(60)
            assert not other.is_alive(), "the other thread's unload never returned"
            raise KeyboardInterrupt


def test_a_registration_interrupted_once_served_leaves_an_unload_in_another_thread_to_close_it() -> None:
    """A Ctrl-C as register_model let go of its lock once its version was in the registry, another
    thread's unload_model taking that version out (and closing its model) before the failed
    registration's undo took the lock: the undo found the version gone and stopped it too,
    closing the model a second time. It is the unload's: closed once."""
    closes: list[int] = []

    class Model(_Linear):
        def close(self) -> None:
            closes.append(1)

    hub = _backend_hub(Model)
    rt = MLRuntime(hub)
    try:
        lock = rt._models_lock
        rt._models_lock = _UnloadsOnExit(lock, 2, rt.unload_model, "m")  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                rt.register_model("m", {"w": 1}, warmup=False, max_batch_size=4)
        finally:
            rt._models_lock = lock
        assert closes == [1], "the model was not closed exactly once"
        assert rt.registry.names() == [] and not rt._unloading
        assert not [t for t in threading.enumerate() if t.name == "batcher-m"], "a batcher thread runs on"
        rt.register_model("m", {"w": 1})  # nothing of it left behind
        assert rt.versions("m") == ["1"]
    finally:
        rt.close()
        hub.shutdown()


class _UnloadingOnExit:
    """The runtime's ``_models_lock``: as ``thread`` lets go of it the second time (its version now
    in the registry), ``begin()`` runs (a call of the model, then another thread's unload_model,
    which waits for that call), then a Ctrl-C lands. Other threads take it as a plain lock."""

    def __init__(self, lock: threading.Lock, begin: Callable[[], None]) -> None:
        self._lock, self._left, self._begin = lock, 2, begin
        self._thread = threading.current_thread()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        if threading.current_thread() is self._thread:
            self._left -= 1
            if self._left == 0:
                self._begin()
                raise KeyboardInterrupt


def test_a_registration_interrupted_while_another_threads_unload_drains_it_closes_it_once() -> None:
    """As above, with the other thread's unload still waiting for a call of the model when the
    failed registration's undo ran (``ModelClaims.unloaded``: being unloaded, not yet stopped):
    the undo stopped it too, and both stops closed the model once that call returned. The undo
    leaves it to that unload: closed once, after the call."""
    closes: list[int] = []
    entered, release = threading.Event(), threading.Event()

    class Model(_Linear):
        def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
            entered.set()
            assert release.wait(60), "never released"
            return super().__call__(inputs)

        def close(self) -> None:
            closes.append(1)

    hub = _backend_hub(Model)
    rt = MLRuntime(hub)
    replies = Replies()
    threads: list[threading.Thread] = []

    def begin() -> None:
        request = InferenceRequest("m", {"x": np.zeros((1, 2), np.float32)}, id=1)
        threads.append(threading.Thread(target=rt, args=(request, replies.respond(1))))
        threads[-1].start()
        assert entered.wait(60), "the call never began"
        threads.append(threading.Thread(target=rt.unload_model, args=("m",), kwargs={"drain_timeout": 60}))
        threads[-1].start()
        deadline = time.monotonic() + 60
        while not rt._unloading and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rt._unloading, "the unload never began"

    try:
        lock = rt._models_lock
        rt._models_lock = _UnloadingOnExit(lock, begin)  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                rt.register_model("m", {"w": 1}, warmup=False)
        finally:
            rt._models_lock = lock
        assert closes == [], "the model was closed under its call"
        release.set()
        for thread in threads:
            thread.join(60)
        assert isinstance(replies.wait(1)[1], InferenceResponse)
        assert closes == [1], "the model was not closed exactly once"
        assert rt.registry.names() == [] and not rt._unloading
    finally:
        release.set()
        rt.close()
        hub.shutdown()


def test_a_batcher_thread_that_cannot_start_fails_the_registration_at_once_typed(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batcher thread that failed to start (out of threads) raised RuntimeError out of
    register_model, and only after undoing the registration had waited the full 5 s drain for
    a thread that never ran. It is a ModelLoadError naming the model, at once, nothing left."""
    start = threading.Thread.start

    def cannot_start(thread: threading.Thread) -> None:
        if thread.name.startswith("batcher-"):
            raise RuntimeError("can't start new thread")
        start(thread)

    model = _CountsCloses()
    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    began = time.monotonic()
    with pytest.raises(ModelLoadError, match="its batcher thread did not start: RuntimeError") as info:
        runtime.register_model("m", model, max_batch_size=4)
    assert time.monotonic() - began < 4, "the undo waited for a thread that never ran"
    assert info.value.model == "m" and not getattr(info.value, "__notes__", None)  # (undone cleanly)
    assert runtime.registry.names() == [] and model.closed == 0  # (the caller's: not closed)
    monkeypatch.setattr(threading.Thread, "start", start)
    runtime.register_model("m", model, max_batch_size=4)  # not left claimed
    assert runtime.versions("m") == ["1"]


@pytest.mark.parametrize("batch", [1, 4], ids=["unbatched", "batched"])
def test_a_registration_interrupted_once_its_version_is_listed_leaves_nothing_behind(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """A Ctrl-C that landed in register_model just after the registry took the new version: the
    version was stopped (its batcher, its model) but stayed listed, as the latest; every request for
    no version in particular was then handed back to the handler by the stopping version, found it
    again, and spun there for good (no answer, a core busy). The registration is undone whole."""
    spec = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 4]"}}
    runtime.register_model("m", FunctionModel(lambda x: {"y": x}, **spec), version="1", max_batch_size=batch)
    new = FunctionModel(lambda x: {"y": x * 2}, **spec)
    real = runtime._update_batchers

    def interrupted() -> None:
        monkeypatch.setattr(runtime, "_update_batchers", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "_update_batchers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runtime.register_model("m", new, version="2", max_batch_size=batch)
    answered: list[object] = []
    got = threading.Event()

    def respond(answer: object) -> None:
        answered.append(answer)
        got.set()

    request = InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=1)
    caller = threading.Thread(target=runtime, args=(request, respond), daemon=True)
    caller.start()
    caller.join(5)
    spinning = caller.is_alive()
    if spinning:  # let it go: the version it keeps finding leaves the registry
        runtime.registry.remove("m", "2")
        caller.join(10)
    assert not spinning, "the request spun in the handler"
    assert got.wait(60)
    [answer] = answered
    assert isinstance(answer, InferenceResponse) and answer.version == "1", answer
    assert runtime.versions("m") == ["1"]


def test_a_ctrl_c_while_a_failed_registration_releases_its_model_notes_why_it_failed(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration refused (its warm-up failed) whose release was interrupted raised the
    KeyboardInterrupt first, as it should, but noted the refusal on it as something the release
    had raised: 'releasing model 'm' also raised: ModelLoadError(... warm-up ...)'."""
    spec = {"inputs": {"x": "FP32[-1]"}, "outputs": {"y": "FP32[-1]"}}
    real = ServedModel.stop

    def stop(self: ServedModel, *args: Any, **kwargs: Any) -> bool:
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    def fails(x: np.ndarray) -> dict[str, np.ndarray]:
        raise ValueError("cannot")

    monkeypatch.setattr(ServedModel, "stop", stop)
    with pytest.raises(KeyboardInterrupt) as info:
        runtime.register_model("m", FunctionModel(fails, **spec))
    [note] = info.value.__notes__
    assert note.startswith("registering model 'm' had failed: ModelLoadError(")
    assert "raised on its example input at warm-up" in note
