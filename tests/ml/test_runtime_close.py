"""close() stops every server and unloads every model, whatever raises or interrupts it."""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType

import numpy as np
import pytest

import foundation_core
from foundation_core import Hub, hookimpl
from foundation_core.errors import FoundationError
from foundation_ml import (
    FunctionModel,
    InferenceClient,
    InferenceRequest,
    MLRuntime,
    ModelLoadError,
    _runtime_lifecycle,
)
from foundation_ml import _plugin as ml_plugin
from foundation_ml._batching import Batcher
from foundation_ml._process import shm_entries
from foundation_ml._transport import TransportServer
from foundation_ml.errors import ServerUnavailable, ShuttingDown

from ._runtime_support import _CountsCloses, _interrupted_once
from .conftest import Replies, unique_name


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


class _Abandons(TransportServer):
    """A server whose stop() gives up on ``n`` in-flight requests (``abandoned``), once."""

    address = "abandons"

    def __init__(self, n: int) -> None:
        self.n, self.abandoned = n, 0

    def stop(self, drain_timeout: float = 5.0) -> None:
        self.abandoned, self.n = self.abandoned + self.n, 0


def test_a_close_finishing_an_interrupted_one_warns_only_of_what_its_own_stops_abandoned(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A close interrupted once it had stopped the servers (and warned of the request one gave
    up on) left the warning to be logged again, with the same count, by the close finishing it;
    ``abandoned`` still counts every request given up on."""
    runtime.servers.append(("fake", _Abandons(1)))
    _interrupted_once(_runtime_lifecycle, "_unload_models", monkeypatch)
    with caplog.at_level("WARNING", logger="foundation_ml"), pytest.raises(KeyboardInterrupt):
        runtime.close(drain_timeout=0.5)
    assert caplog.text.count("stopped without answering 1 in-flight request(s)") == 1
    caplog.clear()
    runtime.servers.append(("fake", _Abandons(2)))  # (a start refused while closing: by hand)
    with caplog.at_level("WARNING", logger="foundation_ml"):
        runtime.close(drain_timeout=0.5)
    assert "stopped without answering 2 in-flight request(s)" in caplog.text
    assert "stopped without answering 1 " not in caplog.text and "answering 3 " not in caplog.text
    assert runtime.abandoned == 3 and runtime not in _runtime_lifecycle.OPEN


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
