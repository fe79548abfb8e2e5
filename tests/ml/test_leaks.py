"""Long runs hold nothing: an unloaded model, a failed call's inputs and a closed runtime are freed
by reference counting alone (the garbage collector is off in these tests, as it may not run for a
long while in a server), and threads and descriptors come back to their count.

Counts, never timings. Each test repeats its cycle a few hundred times at most.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import FunctionModel, InferenceClient, InferenceRequest, MLRuntime
from foundation_ml._inproc import InprocTransport
from foundation_ml.errors import HandlerError, InferenceError, InvalidInput, ModelNotFound

from .conftest import affine_model, unique_name

CYCLES = 200


@pytest.fixture(autouse=True)
def _model_failures_logged_not_kept(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A model's failure is logged with its traceback (once per type and line), and a traceback's
    frames, through their callers', hold the failed request. pytest's log capture keeps every
    record for its report (as a MemoryHandler would until it flushes), which would hold them here:
    these tests are about what the runtime keeps, so its records go to a handler that formats them
    and keeps only the text."""
    logger = logging.getLogger("foundation_ml")
    handler = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The garbage collector off: what stays alive here stays alive until it happens to run."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


class Weights(FunctionModel):
    """``y = x``, with weights of its own (a weak reference tells when they are freed)."""

    def __init__(self) -> None:
        self.weights = np.ones(1000, np.float32)
        super().__init__(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("batch", [1, 4])
def test_an_unloaded_model_is_freed_and_its_batcher_thread_ends(runtime: MLRuntime, batch: int) -> None:
    """A batched model and its batcher referred to each other: every unloaded model (its weights)
    stayed alive until the garbage collector ran (measured: 1.2 GB held after 100 cycles of an
    80 MB model)."""
    threads, fds = _thread_names(), _descriptors()
    for _ in range(CYCLES):
        model = Weights()
        weights = weakref.ref(model.weights)
        runtime.register_model("m", model, max_batch_size=batch)
        if batch > 1:
            assert "batcher-m" in _thread_names()
        del model
        runtime.unload_model("m")
        assert weights() is None
    assert _thread_names() == threads and _descriptors() == fds


def _failing_runtime(runtime: MLRuntime) -> str:
    def fails(x: np.ndarray) -> np.ndarray:
        raise ValueError("no")

    spec = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 4]"}}
    runtime.register_model("ok", affine_model())
    runtime.register_model("okb", affine_model(), max_batch_size=4, max_wait_us=0)
    runtime.register_model("fails", FunctionModel(fails, **spec), warmup=False)
    runtime.register_model("failsb", FunctionModel(fails, **spec), max_batch_size=4, warmup=False)
    name = unique_name()
    runtime.start("inproc", name)
    return name


# (model, input shape, error): each way a call fails before, in and after the model
FAILURES = [
    ("ok", (2, 3), InvalidInput),
    ("okb", (2, 3), InvalidInput),
    ("nosuch", (2, 4), ModelNotFound),
    ("fails", (2, 4), HandlerError),
    ("failsb", (2, 4), HandlerError),
]


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize(("model", "shape", "error"), FAILURES)
def test_a_failed_inproc_call_holds_none_of_its_inputs(
    runtime: MLRuntime, model: str, shape: tuple[int, ...], error: type[InferenceError]
) -> None:
    """The error raised to the caller reached, through its traceback, a frame holding the reply
    that held the error (in the client) or the respond that took it (in the runtime): a cycle
    that kept the request's inputs alive until the garbage collector ran (measured: 1.7 GB for a
    loop of calls with 40 MB inputs). A batched model's batcher thread holds its batch for the
    few bytecodes after it answers: the call may return first (the thread preempted), so that
    release is waited for; a cycle (the collector is off) is never released."""
    with InferenceClient(_failing_runtime(runtime), transport="inproc", hub=runtime.hub) as client:
        for _ in range(CYCLES // 4):
            x = np.ones(shape, np.float32)
            gone = weakref.ref(x)
            with pytest.raises(error):
                client.infer(model, {"x": x})
            del x
            _released(gone)


def _released(gone: weakref.ref[Any], patience: float = 10.0) -> None:
    """Assert that ``gone``'s object is freed at once, or by ``patience`` s from now when a batcher
    thread still held it (its answer out, its batch not yet let go)."""
    end = time.monotonic() + patience
    while gone() is not None and time.monotonic() < end:
        time.sleep(0.001)
    assert gone() is None


class Raises:
    """A request handler that raises its error rather than answering it (allowed: the inproc
    client answers the caller with it)."""

    def __call__(self, request: InferenceRequest, respond: object) -> None:
        raise InvalidInput("no", model=request.model, request_id=request.id)

    def metadata(self, model: str) -> dict[str, object]:
        return {}

    def stats(self) -> dict[str, object]:
        return {}


@pytest.mark.usefixtures("no_gc")
def test_an_error_a_handler_raises_holds_none_of_the_inputs() -> None:
    transport = InprocTransport()
    server = transport.serve(unique_name(), Raises())
    try:
        with transport.connect(server.address) as client:
            for _ in range(CYCLES // 4):
                x = np.ones((2, 4), np.float32)
                gone = weakref.ref(x)
                with pytest.raises(InvalidInput):
                    client.infer(InferenceRequest("m", {"x": x}))
                del x
                assert gone() is None
    finally:
        server.stop()


class RaisesFrom(Raises):
    """Raises its error ``from`` the exception that caused it, or answers it once raised so."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def __call__(self, request: InferenceRequest, respond: Any) -> None:
        try:
            try:
                int("not a number")
            except ValueError as exc:
                raise InvalidInput("x is not a number") from exc
        except InvalidInput as error:
            if not self.answers:
                raise
            respond(error)


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("answers", [False, True], ids=["raised", "answered"])
def test_an_error_with_a_cause_holds_none_of_the_inputs(answers: bool) -> None:
    """The traceback of what caused it (or its own, answered) reached the handler's frame, which
    held the respond that held the error: a cycle that kept the inputs alive until the garbage
    collector ran, one copy per failed call."""
    transport = InprocTransport()
    server = transport.serve(unique_name(), RaisesFrom(answers))
    try:
        with transport.connect(server.address) as client:
            for _ in range(CYCLES // 4):
                x = np.ones((2, 4), np.float32)
                gone = weakref.ref(x)
                with pytest.raises(InvalidInput) as info:
                    client.infer(InferenceRequest("m", {"x": x}))
                assert isinstance(info.value.__cause__, ValueError)
                del x, info
                assert gone() is None
    finally:
        server.stop()


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize(("model", "shape", "error"), FAILURES[:4])
def test_an_error_answered_holds_none_of_the_request(
    runtime: MLRuntime, model: str, shape: tuple[int, ...], error: type[InferenceError]
) -> None:
    """A respond that keeps its answer (a transport's queue, a list) held the request through
    the error's traceback, which held the runtime's frames."""
    _failing_runtime(runtime)
    answers: list[object] = []
    for _ in range(CYCLES // 4):
        x = np.ones(shape, np.float32)
        gone = weakref.ref(x)
        runtime(InferenceRequest(model, {"x": x}), answers.append)
        del x
        assert gone() is None
    assert all(type(a) is error for a in answers)


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize(("model", "shape", "error"), [FAILURES[0], FAILURES[2], FAILURES[3]])
def test_a_failed_ainfer_holds_none_of_its_inputs(
    runtime: MLRuntime, model: str, shape: tuple[int, ...], error: type[InferenceError]
) -> None:
    """The error raised from ``await`` reached ainfer's frame, which held the future holding it.
    (Counted among what only the garbage collector frees: a weak reference could be checked too
    soon, while the pool's thread still lets go of its call.)"""
    with InferenceClient(_failing_runtime(runtime), transport="inproc", hub=runtime.hub) as client:

        async def calls() -> None:
            for _ in range(CYCLES // 4):
                with pytest.raises(error):
                    await client.ainfer(model, {"x": np.ones(shape, np.float32)})

        asyncio.run(calls())
        assert _only_the_collector_frees(InferenceRequest) == 0


def _only_the_collector_frees(kind: type) -> int:
    """How many objects of ``kind`` are in reference cycles that nothing else reaches."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(type(o) is kind for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_long_run_of_calls_keeps_threads_and_descriptors(runtime: MLRuntime) -> None:
    """Calls that succeed and calls that fail, direct and batched: nothing accumulates."""
    name = _failing_runtime(runtime)
    x, bad = np.ones((2, 4), np.float32), np.ones((2, 3), np.float32)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        client.infer("okb", {"x": x})
        threads, fds = _thread_names(), _descriptors()
        for _ in range(CYCLES):
            for model in ("ok", "okb"):
                np.testing.assert_array_equal(client.infer(model, {"x": x})["y"], x * 2 + 1)
                with pytest.raises(InvalidInput):
                    client.infer(model, {"x": bad})
    assert _thread_names() == threads and _descriptors() == fds


@pytest.mark.usefixtures("no_gc")
def test_a_closed_runtime_is_freed(hub: Hub) -> None:
    """The transport servers a runtime had stopped referred back to it (their handler): a closed
    runtime, and what it held, stayed alive until the garbage collector ran."""
    threads, fds = _thread_names(), _descriptors()
    for _ in range(CYCLES // 4):
        rt = MLRuntime(hub)
        rt.register_model("m", affine_model(), max_batch_size=4)
        rt.start("inproc", unique_name())
        rt.close()
        gone = weakref.ref(rt)
        del rt
        assert gone() is None
    assert _thread_names() == threads and _descriptors() == fds


def test_runtimes_with_hubs_of_their_own_leave_nothing_behind() -> None:
    """``MLRuntime()`` starts a hub of its own and shuts it down on close: threads, descriptors,
    signal handlers and the root logger's handlers are as they were."""
    import logging
    import signal

    def state() -> tuple[object, ...]:
        signals = tuple(signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
        return _thread_names(), _descriptors(), signals, len(logging.getLogger().handlers)

    def cycle() -> None:
        with MLRuntime(max_batch_size=4) as rt:
            rt.register_model("m", affine_model())
            name = unique_name()
            rt.start("inproc", name)
            with InferenceClient(name, transport="inproc", hub=rt.hub) as client:
                client.infer("m", {"x": np.ones((1, 4), np.float32)})

    cycle()
    before = state()
    for _ in range(20):
        cycle()
    assert state() == before
