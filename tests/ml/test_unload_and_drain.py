"""Unloading and shutting down while requests are in flight: every request is answered (a result
or a typed error), a model is never closed under a running call, and a drain keeps its bound."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import (
    FunctionModel,
    InferenceClient,
    InferenceRequest,
    InferenceResponse,
    MLRuntime,
    _runtime_drain,
)
from foundation_ml._batching import MAX_WAIT_US, Batcher
from foundation_ml._process import shm_entries
from foundation_ml._serving import ServedModel
from foundation_ml._transport import TransportServer
from foundation_ml.errors import ModelLoadError, ModelNotFound, ShuttingDown

from .conftest import Replies, unique_name

HANG_S = 60  # how long a test waits for what must happen at once before it calls it a hang


class Blocking(FunctionModel):
    """``y = x * k``; a first element of 1001 blocks in the model until ``release``. Like the
    torch backend's models, a closed one raises when called; ``events`` records the order."""

    def __init__(self, k: float = 1.0) -> None:
        self.k = k
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False
        self.events: list[str] = []
        super().__init__(self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.closed:
            raise RuntimeError("the model was unloaded")
        if x.size and x.flat[0] == 1001:
            self.entered.set()
            assert self.release.wait(60), "never released"
        self.events.append("returned")
        return x * self.k

    def close(self) -> None:
        self.events.append("closed")
        self.closed = True


def _x(value: float = 1.0) -> np.ndarray:
    return np.full((1, 4), value, np.float32)


def _call_in_thread(runtime: MLRuntime, replies: Replies, rid: int, value: float) -> threading.Thread:
    t = threading.Thread(
        target=runtime, args=(InferenceRequest("m", {"x": _x(value)}, id=rid), replies.respond(rid))
    )
    t.start()
    return t


@pytest.mark.parametrize("batch", [1, 4], ids=["unbatched", "batched"])
def test_an_unload_never_closes_the_model_under_a_running_call(runtime: MLRuntime, batch: int) -> None:
    """The drain timed out (0 s) while a call blocks: the call that began before the unload gets
    its answer, and the model is closed when that call returns, not before."""
    model = Blocking()
    runtime.register_model("m", model, max_batch_size=batch, max_wait_us=0, warmup=False)
    replies = Replies()
    t = _call_in_thread(runtime, replies, 1, 1001)
    assert model.entered.wait(60)
    runtime.unload_model("m", drain_timeout=0)
    assert model.events == []  # still running: not closed under it
    model.release.set()
    t.join(60)
    answer = replies.wait(1)[1]
    assert isinstance(answer, InferenceResponse) and answer.version == "1"
    for th in threading.enumerate():  # batched: the batcher thread ran it, and closes the model
        if th.name == "batcher-m":
            th.join(60)
    assert model.events == ["returned", "closed"]


def test_an_inline_request_racing_an_unload_is_told_the_version_is_unloaded(runtime: MLRuntime) -> None:
    """A transport thread looked the version up just before the unload closed it: the request is
    answered ShuttingDown, not run on the closed model (which raised: a HandlerError)."""
    model = Blocking()
    runtime.register_model("m", model, version="3", warmup=False)
    served = runtime.registry.get("m")
    runtime.unload_model("m")
    replies = Replies()
    served.submit(InferenceRequest("m", {"x": _x()}, id=1), replies.respond(1), time.monotonic_ns())
    answer = replies.wait(1)[1]
    assert isinstance(answer, ShuttingDown) and "version '3' is being unloaded" in str(answer)
    assert answer.request_id == 1 and model.events == ["closed"]


def test_a_request_for_the_latest_version_racing_its_unload_is_served_by_the_version_left(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling reload unloads the newest version just after a request (for no version in
    particular) found it: the request is served by the version still loaded."""
    old, new = Blocking(k=1.0), Blocking(k=2.0)
    runtime.register_model("m", old, version="1", warmup=False)
    runtime.register_model("m", new, version="2", warmup=False)
    real_get = runtime.registry.get
    raced: list[str] = []

    def get(name: str, version: str = "") -> ServedModel:
        served = real_get(name, version)
        if not raced:  # the unload lands between the lookup and the call
            raced.append(served.version)
            runtime.unload_model("m", "2")
        return served

    monkeypatch.setattr(runtime.registry, "get", get)
    replies = Replies()
    runtime(InferenceRequest("m", {"x": _x(3.0)}, id=1), replies.respond(1))
    answer = replies.wait(1)[1]
    assert raced == ["2"]
    assert isinstance(answer, InferenceResponse) and answer.version == "1"
    np.testing.assert_array_equal(answer.outputs["y"], _x(3.0))


def test_a_drain_that_times_out_answers_the_queued_requests_shutting_down(runtime: MLRuntime) -> None:
    """The batcher thread is stuck in the model; the requests queued behind it are answered
    ShuttingDown when the drain times out, not left waiting for a model that may never return;
    the stuck call still gets its answer when the model returns."""
    model = Blocking()
    runtime.register_model("m", model, max_batch_size=4, max_wait_us=0, warmup=False)
    replies = Replies()
    runtime(InferenceRequest("m", {"x": _x(1001)}, id=1), replies.respond(1))  # the thread runs it
    assert model.entered.wait(60)
    runtime(InferenceRequest("m", {"x": _x()}, id=2), replies.respond(2))
    runtime(InferenceRequest("m", {"x": _x()}, id=3), replies.respond(3))
    runtime.unload_model("m", drain_timeout=0)
    got = dict(replies.got)  # answered by the time unload returned
    assert sorted(got) == [2, 3]
    for rid in (2, 3):
        answer = got[rid]
        assert isinstance(answer, ShuttingDown) and answer.request_id == rid
        assert "the drain timed out after 0 s before this request ran" in str(answer)
    model.release.set()
    assert isinstance(replies.wait(3)[1], InferenceResponse)


def test_close_keeps_one_drain_bound_for_the_transports_and_the_models(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport that used the whole drain leaves the models none (it was drain_timeout each:
    with a stuck model, close took twice its bound)."""
    now = [100.0]
    monkeypatch.setattr(_runtime_drain, "_clock", lambda: now[0])

    class SlowServer(TransportServer):
        address = "slow"

        def stop(self, drain_timeout: float = 5.0) -> None:
            now[0] += drain_timeout  # it waited for its in-flight requests the whole time

    runtime.register_model("m", Blocking(), max_batch_size=4, max_wait_us=0, warmup=False)
    runtime.servers.append(("fake", SlowServer()))
    given: list[float] = []
    real_stop = ServedModel.stop

    def stop(self: ServedModel, drain_timeout: float = 5.0, *args: Any, **kwargs: Any) -> bool:
        given.append(drain_timeout)
        return real_stop(self, drain_timeout, *args, **kwargs)

    monkeypatch.setattr(ServedModel, "stop", stop)
    runtime.close(drain_timeout=2.0)
    assert given == [0.0]


def test_a_runtime_that_is_closed_loads_no_model(runtime: MLRuntime) -> None:
    """Registered after close (no transport, no unload would ever stop it), a batching model's
    thread was left running for good."""
    runtime.close()
    model = Blocking()
    # an earlier test's batcher of a model "m", stopped without waiting (drain_timeout 0), may
    # still be on its way out: only a thread started here counts
    before = set(threading.enumerate())
    with pytest.raises(ModelLoadError, match="the runtime is closed"):
        runtime.register_model("m", model, max_batch_size=4, warmup=False)
    assert not [t for t in threading.enumerate() if t.name == "batcher-m" and t not in before]


def test_close_goes_on_when_a_model_is_unloaded_meanwhile(runtime: MLRuntime, monkeypatch) -> None:
    """Another thread unloaded a model while close() went through the list: the others are still
    unloaded (close raised ModelNotFound and left them loaded)."""
    model = Blocking()
    runtime.register_model("m", model, warmup=False)
    names = runtime.registry.names
    monkeypatch.setattr(runtime.registry, "names", lambda: ["gone", *names()])
    runtime.close()
    assert model.events == ["closed"] and runtime.registry.snapshot() == ({}, {})


def test_rejections_counted_by_many_threads_add_up(runtime: MLRuntime) -> None:
    """Two transport threads reject a request at once: both count (a read-modify-write of the
    dict without a lock lost one)."""
    meet = threading.Barrier(2)

    class Racing(dict):
        def get(self, key: str, default: int = 0) -> int:
            value = super().get(key, default)
            try:  # with the lock, the other thread cannot get here until this one is done
                meet.wait(timeout=0.5)
            except threading.BrokenBarrierError:
                pass
            return value

    runtime._rejected = Racing()
    threads = [
        threading.Thread(target=runtime, args=(InferenceRequest("nope", {"x": _x()}, id=i), lambda v: None))
        for i in (1, 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert runtime.stats()["server"]["rejected"] == {"MODEL_NOT_FOUND": 2}


@pytest.mark.parametrize("batch", [1, 4])
def test_a_drain_without_limit_waits_as_long_as_it_takes_and_releases_everything(hub, batch: int) -> None:
    """``drain_timeout=math.inf`` (or any huge number) once failed with OverflowError half-way: the
    model out of the registry, its batcher thread left running, the model never closed."""
    rt = MLRuntime(hub)
    models = [Blocking(), Blocking()]
    rt.register_model("a", models[0], max_batch_size=batch)
    rt.register_model("b", models[1], max_batch_size=batch)
    threads = [s.batcher._thread for s in rt.registry.all() if s.batcher is not None]
    rt.start("inproc", unique_name())
    rt.unload_model("a", drain_timeout=math.inf)
    assert models[0].closed and rt.registry.names() == ["b"]
    rt.close(drain_timeout=1e300)
    assert models[1].closed and rt.registry.names() == []
    assert not [t for t in threads if t.is_alive()]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"drain_timeout": None},
            TypeError,
            r"unload_model\('m'\): drain_timeout must be a number of seconds, not None",
        ),
        ({"drain_timeout": "5"}, TypeError, r"drain_timeout must be a number of seconds, not '5'"),
        ({"drain_timeout": True}, TypeError, r"drain_timeout must be a number of seconds, not True"),
        ({"drain_timeout": np.int64(-1)}, ValueError, r"drain_timeout must be >= 0 seconds, not "),
        ({"drain_timeout": -1}, ValueError, r"drain_timeout must be >= 0 seconds, not -1"),
        ({"drain_timeout": math.nan}, ValueError, r"drain_timeout must be >= 0 seconds, not nan"),
        ({"version": ""}, ValueError, r"unload_model\('m'\): the version '' must be 1-15 UTF-8 bytes"),
        ({"version": 1}, TypeError, r"unload_model\('m'\): the version must be a str, not int"),
    ],
)
def test_an_unload_told_nonsense_refuses_before_anything_stops(
    runtime: MLRuntime, kwargs: dict, error: type[Exception], message: str
) -> None:
    """Once, version '' or 1 read 'no such model (serving: m)' or 'no version 1 (versions: 1)'."""
    model = Blocking()
    runtime.register_model("m", model, max_batch_size=2)
    with pytest.raises(error, match=message):
        runtime.unload_model("m", **kwargs)
    if "drain_timeout" in kwargs:
        with pytest.raises(error, match=message.replace(r"unload_model\('m'\)", "close")):
            runtime.close(drain_timeout=kwargs["drain_timeout"])
    assert runtime.versions("m") == ["1"] and not model.closed
    assert runtime.registry.get("m").batcher is not None


def _batcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "batcher-m"]


@pytest.mark.parametrize("batch", [1, 4], ids=["unbatched", "batched"])
def test_hurry_ends_the_models_drain_and_the_model_is_closed_when_its_call_returns(
    hub, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hurry() (a second Ctrl-C under serve() or at exit) ended the transports' drain, but once
    close had moved on to the models' drain it still waited for a blocked call until
    drain_timeout (here none): the exit hung on the Ctrl-C. It now ends there too; the requests
    queued behind the call are answered ShuttingDown and the model is closed when the call returns."""
    rt = MLRuntime(hub)
    model = Blocking()
    rt.register_model("m", model, max_batch_size=batch, max_wait_us=0, warmup=False)
    before = set(_batcher_threads())
    replies = Replies()
    caller = _call_in_thread(rt, replies, 1, 1001)
    assert model.entered.wait(HANG_S)
    if batch > 1:  # queued behind the blocked batch
        rt(InferenceRequest("m", {"x": _x()}, id=2), replies.respond(2))
    unloading = threading.Event()
    real_stop = ServedModel.stop

    def stop(self: ServedModel, *args: Any, **kwargs: Any) -> bool:
        unloading.set()
        return real_stop(self, *args, **kwargs)

    monkeypatch.setattr(ServedModel, "stop", stop)
    closer = threading.Thread(target=rt.close, kwargs={"drain_timeout": math.inf})
    closer.start()
    try:
        assert unloading.wait(HANG_S)
        rt.hurry()
        closer.join(HANG_S)
        assert not closer.is_alive(), "close() waited for the blocked call after hurry()"
        assert model.events == []  # never closed under its call
        if batch > 1:
            queued = replies.got[2]
            assert isinstance(queued, ShuttingDown)
            assert "the drain was cut short before this request ran" in str(queued)
    finally:
        model.release.set()
        closer.join(HANG_S)
    caller.join(HANG_S)
    for t in set(_batcher_threads()) - before:  # batched: its thread runs the call and closes it
        t.join(HANG_S)
    assert isinstance(replies.wait(2 if batch > 1 else 1)[1], InferenceResponse)  # the call's answer
    assert model.events == ["returned", "closed"]
    assert rt.registry.names() == []


@contextlib.contextmanager
def _a_close_hurried_mid_call(rt: MLRuntime, model: Blocking, call: Callable[[], None]) -> Iterator[None]:
    """``call()`` in a thread blocks in ``model``; ``rt.close()`` with an endless drain, then
    ``rt.hurry()``: the close must end while the call still runs (the block checks the rest);
    then the model is let go and the caller joined."""
    caller = threading.Thread(target=call)
    caller.start()
    assert model.entered.wait(HANG_S)
    closer = threading.Thread(target=rt.close, kwargs={"drain_timeout": math.inf})
    closer.start()
    try:
        rt.hurry()
        closer.join(HANG_S)
        assert not closer.is_alive(), "close() waited for the call under way after hurry()"
        yield
    finally:
        model.release.set()
        closer.join(HANG_S)
    caller.join(HANG_S)
    assert not caller.is_alive()


def test_hurry_ends_an_inproc_servers_drain(hub) -> None:
    """The inproc server's stop waited for its calls under way (an unbatched model runs inline in
    the caller's thread) until drain_timeout whatever hurry() said: it had no hurry()."""
    rt = MLRuntime(hub)
    model = Blocking()
    rt.register_model("m", model, warmup=False)
    address = unique_name()
    rt.start("inproc", address)
    [(_, server)] = rt.servers
    got: list[dict[str, np.ndarray]] = []

    def call() -> None:
        with InferenceClient(address, transport="inproc", hub=hub) as client:
            got.append(client.infer("m", {"x": _x(1001)}))

    with _a_close_hurried_mid_call(rt, model, call):
        assert model.events == [] and not server.accepting
    np.testing.assert_array_equal(got[0]["y"], _x(1001))  # its caller still got the answer
    assert model.events == ["returned", "closed"]


def test_hurry_ends_an_shm_servers_drain(shm_hub) -> None:
    """``MLRuntime.hurry()`` reaches the shm server's own ``hurry()``: its stop gives up on the
    call under way (abandoned) instead of waiting out the drain. The signal tests cannot tell
    (the runtime's warning names the hurry either way), so without this a runtime that stopped
    passing the hurry on waited the whole drain, and every test passed."""
    rt = MLRuntime(shm_hub)
    model = Blocking()
    rt.register_model("m", model, warmup=False)
    address = unique_name()
    rt.start("shm", address)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with InferenceClient(address, transport="shm", hub=shm_hub, timeout=HANG_S) as client:
                client.infer("m", {"x": _x(1001)})
        except BaseException as exc:  # the server went: the call is abandoned, typed
            errors.append(exc)

    with _a_close_hurried_mid_call(rt, model, call):
        assert rt.abandoned == 1
    assert len(errors) == 1, errors
    assert shm_entries(address) == []


_CTRL_C_IN_THE_MODELS_DRAIN = """
import math
import signal
import sys
import threading

import numpy as np
from foundation_ml import FunctionModel, InferenceClient, MLRuntime
from foundation_ml._batching import Batcher
from foundation_ml.errors import DeadlineExceeded

signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whoever started us
how, name = sys.argv[1:]
stop = Batcher.stop


said = threading.Event()


def stop_and_say(self, *args, **kwargs):  # the models' drain: the cue for the second Ctrl-C
    if not said.is_set():  # once: that Ctrl-C landing before the stop ran has it stopped again
        said.set()
        print("draining the model", flush=True)
    return stop(self, *args, **kwargs)


Batcher.stop = stop_and_say
release = threading.Event()
closed = threading.Event()


class Stuck(FunctionModel):
    def close(self):
        closed.set()


def stuck(x):
    if x[0] == 1001:
        release.wait(600)
    return x * 2


blocked = MLRuntime(max_batch_size=2, max_wait_us=0)  # its batcher thread runs the call
spec = {"inputs": {"x": "FP32[-1]"}, "outputs": {"y": "FP32[-1]"}}
blocked.register_model("stuck", Stuck(stuck, **spec), warmup=False)
blocked.start(transport="inproc", name=name)
idle = MLRuntime()  # closed after it: its shared memory must go too
idle.register_model("idle", FunctionModel(lambda x: x, **spec))
idle.start(transport="shm", name=name)
with InferenceClient(name, transport="inproc", hub=blocked.hub, timeout=0.5) as client:
    try:  # the client gives up: no call in flight on the transport, the model's call runs on
        client.infer("stuck", {"x": np.full(2, 1001, np.float32)})
    except DeadlineExceeded:
        pass
if how == "exit":  # the runtimes are never closed: the exit closes them, with no drain limit
    MLRuntime.close.__defaults__ = (math.inf, *MLRuntime.close.__defaults__[1:])
    print("waiting", flush=True)
    threading.Event().wait()  # until Ctrl-C
try:
    with idle, blocked:
        print("waiting", flush=True)
        threading.Event().wait()  # until Ctrl-C: blocked.close() drains
except KeyboardInterrupt:
    print("interrupted", flush=True)
release.set()  # the call returns: the model is closed then
print("model closed" if closed.wait(20) else "model left open", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "close"])
def test_a_second_ctrl_c_in_the_models_drain_ends_it_and_still_releases_everything(
    shm_hub, name: str, how: str
) -> None:
    """A second Ctrl-C once close() had moved on to the models' drain: at exit (the hook's
    hurry()) it waited for the blocked call until the drain's end (here none: it hung); in
    close() itself its KeyboardInterrupt left the model unclosed for good. Now it ends the drain
    at once, the shared memory of every runtime still goes, the model is closed when its call
    returns, and the interrupt is what the process ends with."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_IN_THE_MODELS_DRAIN, how, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n", proc.communicate(timeout=HANG_S)
        proc.send_signal(signal.SIGINT)  # the script ends: its runtimes are closed, draining
        assert proc.stdout.readline() == "draining the model\n", proc.communicate(timeout=HANG_S)
        proc.send_signal(signal.SIGINT)  # enough waiting
        out, err = proc.communicate(timeout=HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if how == "exit":
        assert proc.returncode == -signal.SIGINT, err  # ended by its (first) Ctrl-C
        assert "Exception ignored in atexit callback" not in err, err
    else:
        assert (out, proc.returncode) == ("interrupted\nmodel closed\n", 0), err
    assert shm_entries(name) == [], err


@pytest.mark.parametrize("by", ["put", "flush"])
def test_a_batch_a_transport_thread_took_just_before_an_unload_runs_before_the_model_is_closed(
    runtime: MLRuntime, by: str
) -> None:
    """A transport thread took a batch off the queue (the request that filled it, or flush())
    just as an unload began: the unload saw no call under way and closed the model, then the
    batch ran on the closed model and its callers got HandlerError 'the model was unloaded',
    after unload_model had returned. The model is now closed when that batch returns."""
    model = Blocking()
    runtime.register_model("m", model, max_batch_size=2, max_wait_us=MAX_WAIT_US, warmup=False)
    batcher = runtime.registry.get("m").batcher
    assert batcher is not None
    took, go = threading.Event(), threading.Event()
    real_run_items = batcher._run_items

    def run_items(items: list) -> None:  # the transport thread holds the batch it took
        took.set()
        assert go.wait(HANG_S)
        real_run_items(items)

    batcher._run_items = run_items  # type: ignore[method-assign]
    replies = Replies()
    runtime(InferenceRequest("m", {"x": _x(1.0)}, id=1), replies.respond(1))  # queued for 10 s
    if by == "put":  # the second request fills the batch: its thread runs it
        taker = _call_in_thread(runtime, replies, 2, 2.0)
    else:  # the batch is due (a drain), but the batcher thread sleeps on: flush() runs it
        batcher._draining = True
        taker = threading.Thread(target=batcher.flush)
        taker.start()
    assert took.wait(HANG_S)
    runtime.unload_model("m", drain_timeout=0)
    go.set()
    taker.join(HANG_S)
    got = replies.wait(2 if by == "put" else 1)
    for rid, answer in got.items():
        assert isinstance(answer, InferenceResponse), answer
        np.testing.assert_array_equal(answer.outputs["y"], _x(float(rid)))
    assert model.events == ["returned", "closed"]


@pytest.mark.parametrize(
    ("batch", "raced"),
    [(1, "submit"), (4, "submit"), (4, "put")],
    ids=["unbatched", "batched-before-the-batcher", "batched-in-the-batcher"],
)
def test_a_request_for_the_latest_version_handed_to_it_as_its_unload_began_is_served_by_the_version_left(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch, batch: int, raced: str
) -> None:
    """The unload of the newest version began after the handler had looked the request (for no
    version in particular) up and found that version not stopping, before the version took it:
    the request got ShuttingDown although version 1 was still served."""
    runtime.register_model("m", Blocking(k=1.0), version="1", max_batch_size=batch, warmup=False)
    runtime.register_model("m", Blocking(k=2.0), version="2", max_batch_size=batch, warmup=False)
    owner = ServedModel if raced == "submit" else Batcher
    real = getattr(owner, raced)
    unloads = [lambda: runtime.unload_model("m", "2")]

    def handed(self: Any, *args: Any, **kwargs: Any) -> Any:
        while unloads:  # the unload lands as version 2 (or its batcher) is handed the request
            unloads.pop()()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, raced, handed)
    replies = Replies()
    runtime(InferenceRequest("m", {"x": _x(3.0)}, id=1), replies.respond(1))
    answer = replies.wait(1)[1]
    assert not unloads and runtime.versions("m") == ["1"]
    assert isinstance(answer, InferenceResponse) and answer.version == "1", answer
    np.testing.assert_array_equal(answer.outputs["y"], _x(3.0))
    stats = runtime.stats()["models"]["m"]
    assert (stats["requests"], stats["errors"]) == (1, 0)  # counted once, by the version that answered it


@pytest.mark.parametrize("batch", [1, 4], ids=["unbatched", "batched"])
def test_a_version_stopping_while_still_listed_as_the_latest_answers_rather_than_spins(
    runtime: MLRuntime, batch: int
) -> None:
    """A version that hands a request for no version back (it is stopping) was looked up again
    and again while it stayed the registry's latest (a registration interrupted just after the
    registry took it left it so, once): the handler spun for good, no answer. It is told
    ShuttingDown, as before the hand-back."""
    runtime.register_model("m", Blocking(k=1.0), version="1", max_batch_size=batch, warmup=False)
    runtime.register_model("m", Blocking(k=2.0), version="2", max_batch_size=batch, warmup=False)
    runtime.registry.get("m", "2").stop(drain_timeout=0, why="version '2' is being unloaded")
    replies = Replies()
    caller = _call_in_thread(runtime, replies, 1, 3.0)
    caller.join(HANG_S)  # answered at once; 5 s was a bound a loaded machine could pass
    spinning = caller.is_alive()
    if spinning:  # let it go: the version it keeps finding leaves the registry
        runtime.registry.remove("m", "2")
        caller.join(HANG_S)
    assert not spinning, "the request spun in the handler"
    answer = replies.wait(1)[1]
    assert isinstance(answer, ShuttingDown) and answer.request_id == 1, answer
    assert "version '2' is being unloaded" in str(answer)
    assert runtime.stats()["server"]["rejected"] == {"SHUTTING_DOWN": 1}


class _Versioned(FunctionModel):
    """``y = x * k`` (``k``: its version), raising once closed (as a torch model does); counts
    the calls made after close (none may be)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.closed = False
        self.after_close = 0
        super().__init__(self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.closed:
            self.after_close += 1
            raise RuntimeError("called after close")
        return x * self.k

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("batch", [1, 3], ids=["unbatched", "batched"])
def test_every_request_racing_unloads_registers_and_close_is_answered_exactly_once(
    hub: Hub, batch: int
) -> None:
    """Transport threads send requests (for no version, and for versions 1-3) while another
    unloads and registers versions again at random, then closes the runtime: each request is
    answered exactly once, with its version's answer or ShuttingDown / ModelNotFound, never
    another error (a closed model's HandlerError, an InternalError), and no model is called
    after it was closed. What is asserted holds in every interleaving; the lookup lets the GIL
    go, so that unloads land between it and the version's taking the request (the hand-back
    paths run hundreds of times a run)."""
    rng = random.Random(20261124)
    rt = MLRuntime(hub)
    models: list[_Versioned] = []

    def register(version: str) -> None:
        model = _Versioned(int(version))
        models.append(model)
        rt.register_model("m", model, version=version, max_batch_size=batch, max_wait_us=200, warmup=False)

    for v in ("1", "2", "3"):
        register(v)
    lookup = rt.registry.get

    def get(name: str, version: str = "") -> ServedModel:
        served = lookup(name, version)
        time.sleep(0)  # the GIL let go: an unload lands between the lookup and the version's taking it
        return served

    rt.registry.get = get  # type: ignore[method-assign]
    calls: dict[int, list[object]] = {}
    lock = threading.Condition()
    senders, per_sender = 4, 100
    start = threading.Barrier(senders + 1)

    def respond(rid: int) -> Callable[[object], None]:
        def answer(value: object) -> None:
            with lock:
                calls[rid].append(value)
                lock.notify_all()

        return answer

    def send(s: int) -> None:
        start.wait(HANG_S)
        for i in range(per_sender):
            rid = s * per_sender + i + 1
            version = ["", "", "1", "2", "3"][rid % 5]
            with lock:
                calls[rid] = []
            rt(InferenceRequest("m", {"x": _x(float(rid))}, id=rid, version=version), respond(rid))
            if i % 8 == 0:
                rt.flush()  # as a polling transport does: batches run in this thread too
            time.sleep(0.0005)  # the unloads and registrations go on meanwhile

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    start.wait(HANG_S)
    total = senders * per_sender
    while len(calls) < total * 3 // 4 and all(t.is_alive() for t in threads):  # then close() races
        loaded = rt.registry.snapshot()[0].get("m", {})
        version = rng.choice(["1", "2", "3"])
        if version not in loaded:  # registered again, perhaps while its old model still drains
            register(version)
        elif len(loaded) > 1 or rng.random() < 0.3:  # the last one too, at times: ModelNotFound
            rt.unload_model("m", version, drain_timeout=rng.choice([0.0, 1.0]))
    rt.close(drain_timeout=HANG_S)
    for t in threads:
        t.join(HANG_S)
    assert not [t for t in threads if t.is_alive()]
    with lock:  # a batch of a version unloaded without a drain may still be answering
        assert lock.wait_for(lambda: len(calls) == total and all(calls.values()), HANG_S)
    for rid, got in sorted(calls.items()):
        assert len(got) == 1, (rid, got)
        answer = got[0]
        version = ["", "", "1", "2", "3"][rid % 5]
        if isinstance(answer, InferenceResponse):
            assert answer.version == (version or answer.version), (rid, answer)
            np.testing.assert_array_equal(answer.outputs["y"], _x(float(rid)) * int(answer.version))
        else:
            assert isinstance(answer, (ShuttingDown, ModelNotFound)), (rid, answer)
            assert answer.request_id == rid, (rid, answer)
    assert [m.after_close for m in models] == [0] * len(models)
    assert all(m.closed for m in models)
