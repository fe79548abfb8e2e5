"""An unload interrupted anywhere (a Ctrl-C) still stops every version it took out, once."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np
import pytest

from foundation_ml import FunctionModel, InferenceRequest, InferenceResponse, MLRuntime
from foundation_ml._batching import Batcher
from foundation_ml._claims import ModelClaims
from foundation_ml._serving import ServedModel
from foundation_ml.errors import ShuttingDown

from ._runtime_support import (
    _CountsCloses,
    _InterruptAt,
    _interrupted_once,
    _OneAtATime,
    _registering,
    _request,
)
from .conftest import Replies, unique_name


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
