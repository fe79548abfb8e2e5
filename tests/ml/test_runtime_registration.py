"""A registration refused, failing or interrupted leaves its model free and nothing half-served."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from foundation_ml import FunctionModel, InferenceRequest, InferenceResponse, MLRuntime, ModelLoadError
from foundation_ml._serving import ServedModel

from ._runtime_support import _backend_hub, _CountsCloses, _InterruptAt, _Linear, _OneAtATime, _registering
from .conftest import Replies


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
    caller.join(60)  # answered at once; 5 s was a bound a loaded machine could pass
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
