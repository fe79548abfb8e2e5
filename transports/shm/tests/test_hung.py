"""A hung server (spec 10.3: its heartbeat older than 10 intervals, a stopped or stalled process)
takes no new channel: a claim waits for its next beat up to ``connect_timeout`` (a call's up to its
own deadline), then ``ServerUnavailable``. The server is hung for real: SIGSTOP, waited for with
``WUNTRACED`` (SIGSTOP is asynchronous), SIGCONT always."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._channel import _Connection
from foundation_shm._client import ShmClient
from foundation_shm._echo import EchoHandler
from foundation_shm._region import read_region
from foundation_shm._segments import Segment

from foundation_ml import InferenceRequest, Respond
from foundation_ml.errors import DeadlineExceeded, ServerUnavailable

from .conftest import EchoProcess, until

pytestmark = pytest.mark.slow

REQUEST = InferenceRequest("echo", {"x": np.ones(4, np.float32)})
STALE_S = 1.0  # the echo server beats every 100 ms: 10 intervals (and the 1 s floor)


def _gave_up(what: str) -> AssertionError:
    return AssertionError(f"gave up waiting for {what}")


@contextlib.contextmanager
def _hung(server: EchoProcess) -> Iterator[None]:
    """The server stopped (SIGSTOP) until the block ends, and hung by spec 10.3 once it starts:
    its last beat more than 10 intervals ago."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        _, status = os.waitpid(server.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        if not until(lambda: read_region(server.name)["heartbeat_age_s"] > STALE_S + 0.01):
            raise _gave_up("the stopped server's heartbeat to go stale")
        yield
    finally:
        if server.proc.poll() is None:  # (a test may have killed it)
            os.kill(server.pid, signal.SIGCONT)


def _owned_by_us(name: str) -> int:
    """How many of the server's channels this process owns."""
    return read_region(name)["clients"].count(os.getpid())


def _beat_waits(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once a claim begins to wait for a hung server's beat."""
    waiting = threading.Event()
    wait_beating = _Connection.wait_beating

    def watched(conn: _Connection, wait: float, limit: str) -> None:
        waiting.set()
        wait_beating(conn, wait, limit)

    monkeypatch.setattr(_Connection, "wait_beating", watched)
    return waiting


def _echoes(client: ShmClient) -> None:
    """``client``'s call (30 s) is answered with its input."""
    np.testing.assert_array_equal(client.infer(REQUEST, timeout=30).outputs["x"], REQUEST.inputs["x"])


def test_connects_to_a_hung_server_claim_no_channel_and_say_it_is_hung(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Each connect to a stopped server claimed a channel and its call left a request there that
    the server could not answer (DeadlineExceeded), so a service retrying through the stall took
    every channel: after 4 tries on a 4-channel server, 'all 4 channels are in use' (Overloaded)
    for every client, when the server was hung, not overloaded (and, resumed, it logged 'no data
    segment to answer in; parking the channel' for each). Now a connect waits up to
    connect_timeout for a beat, then ServerUnavailable naming the server, its pid and how long it
    has not beaten, with nothing claimed; resumed, the server is connected to at once."""
    server = echo_process("--channels", "4")
    hung = rf"shm server '{name}' \(pid {server.pid}\) is hung: no heartbeat for \d+ ms"
    with _hung(server):
        for _ in range(8):
            with pytest.raises(ServerUnavailable, match=rf"{hung} .*within connect_timeout \(0.2 s\)"):
                with ShmTransport().connect(name, channels=1, connect_timeout=0.2) as client:
                    client.infer(REQUEST, timeout=0.2)
        assert read_region(name)["clients"] == []
    # just resumed (its next beat up to an interval away): the connect waits for that beat
    with ShmTransport().connect(name, channels=1, connect_timeout=30) as client:
        _echoes(client)


def test_a_call_claiming_a_channel_of_a_hung_server_waits_for_a_beat_within_its_own_timeout(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """A call in flight on a hung server still ends DeadlineExceeded at its deadline; the next
    call, its channel still with the server, claimed another (and left a request there too).
    Now that claim waits for a beat no longer than the call's timeout (connect_timeout is a
    minute here), then ServerUnavailable saying the server is hung."""
    server = echo_process("--channels", "4")
    with ShmTransport().connect(name, channels=2, connect_timeout=60) as client:
        client.infer(REQUEST, timeout=30)
        with _hung(server):
            with pytest.raises(DeadlineExceeded, match=r"no response from .* before the deadline"):
                client.infer(REQUEST, timeout=0.2)
            with pytest.raises(ServerUnavailable, match=r"is hung: .*before the call's deadline"):
                client.infer(REQUEST, timeout=0.2)
            assert _owned_by_us(name) == 1
        _echoes(client)  # resumed: it answers the old request, and the channel serves again


def test_a_hung_server_that_dies_while_a_connect_waits_for_its_beat_is_reported_gone(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connect waiting (connect_timeout: a minute) for a hung server's beat looks at its
    liveness too: a server that dies meanwhile is 'gone' then, not 'hung' once the minute has
    passed."""
    server = echo_process()
    pid = server.pid
    waiting = _beat_waits(monkeypatch)
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            ShmTransport().connect(name, connect_timeout=60).close()
        except BaseException as exc:
            failed.append(exc)

    connecting = threading.Thread(target=connect)
    with _hung(server):
        connecting.start()
        if not waiting.wait(60):
            raise _gave_up("the connect to wait for a beat")
        server.kill()
    connecting.join(30)
    assert not connecting.is_alive(), "the connect still waits for a dead server's beat"
    assert len(failed) == 1 and isinstance(failed[0], ServerUnavailable), failed
    assert str(failed[0]) == f"shm server {name!r} (pid {pid}) is gone"


def test_a_claim_waiting_for_a_hung_servers_beat_keeps_no_other_thread_waiting(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that claims a channel of a hung server waits for its beat (here up to
    connect_timeout, 10 minutes) and it waited holding the pool's lock: another thread's call
    that needed a channel too waited as long, past its own 0.2 s timeout, and so did
    ``close()``. Now the wait holds no lock: the other call waits for the beat within its own
    timeout (then ServerUnavailable, nothing claimed), close() returns, and the waiting call then
    fails ServerUnavailable, all while the server is still hung."""
    server = echo_process("--channels", "4")
    waiting = _beat_waits(monkeypatch)
    client = ShmTransport().connect(name, channels=3, connect_timeout=600)
    failed: dict[str, BaseException] = {}

    def call(who: str, timeout: float | None) -> threading.Thread:
        def run() -> None:
            try:
                client.infer(REQUEST, timeout=timeout)
            except BaseException as exc:
                failed[who] = exc

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    try:
        client.infer(REQUEST, timeout=30)
        first = client._take(0)  # the free channel: each call below claims one
        with _hung(server):
            a = call("a", None)
            if not waiting.wait(60):
                raise _gave_up("the call to wait for a beat")
            b = call("b", 0.2)
            b.join(60)
            assert not b.is_alive(), "a call waits for another thread's wait for a hung server's beat"
            assert a.is_alive()
            assert isinstance(failed.get("b"), ServerUnavailable), failed
            assert re.search(r"is hung: .*before the call's deadline", str(failed["b"])), failed
            assert _owned_by_us(name) == 1
            client._give(first)
            closing = threading.Thread(target=client.close)
            closing.start()
            closing.join(60)
            assert not closing.is_alive(), "close() waits for a call's wait for a hung server's beat"
            a.join(60)
            assert not a.is_alive(), "a call still waits for the beat of a closed client's server"
            assert isinstance(failed.get("a"), ServerUnavailable), failed
            assert "closed" in str(failed["a"]), failed
            assert read_region(name)["clients"] == []
    finally:
        client.close()


def test_a_claim_waiting_for_a_hung_servers_beat_when_another_thread_drops_the_connection_looks_again(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hung server dies while a claim waits for its beat, and another thread's call drops the
    connection first (its wait noticed the death): the claim failed "the client ... was closed
    during the call", though nothing was closed. It looks again: a new connection, here to no
    live server, which is what it says."""
    server = echo_process("--channels", "4")
    waiting = _beat_waits(monkeypatch)
    client = ShmTransport().connect(name, channels=3, connect_timeout=600)
    failed: list[BaseException] = []

    def claim() -> None:
        try:
            client.infer(REQUEST, timeout=None)
        except BaseException as exc:
            failed.append(exc)

    try:
        client.infer(REQUEST, timeout=30)
        first = client._take(0)  # another thread's call on it: the drop leaves it to that call
        claiming = threading.Thread(target=claim)
        with _hung(server):
            claiming.start()
            if not waiting.wait(60):
                raise _gave_up("the call to wait for a beat")
            server.kill()
            with client._pool._cond:  # what the other call does on seeing the server dead
                client._pool._drop_connection()
        claiming.join(60)
        assert not claiming.is_alive(), "the call still waits for a dead server's beat"
        assert len(failed) == 1 and isinstance(failed[0], ServerUnavailable), failed
        assert "closed" not in str(failed[0]), failed
        client._give(first)
    finally:
        client.close()


def test_a_server_whose_heartbeat_is_stale_but_moves_again_is_connected_to(
    name: str, echo_server: EchoProcess
) -> None:
    """A server that has just resumed from a stall beats within an interval: connect waits for
    that beat rather than refusing it as hung. (Its heartbeat is set back by hand here; its next
    beat moves it.)"""
    ctl = Segment.open(L.control_name(name))
    try:
        stale = time.monotonic_ns() - 5_000_000_000
        ctl.u64[L.RegionField.HEARTBEAT_NS // 8] = stale
        with ShmTransport().connect(name, connect_timeout=30) as client:
            assert ctl.u64[L.RegionField.HEARTBEAT_NS // 8] > stale
            client.infer(REQUEST, timeout=30)
    finally:
        ctl.close()


class _Computing(EchoHandler):
    """A model that computes until the test lets it finish: a Python loop on the serving thread,
    holding the GIL but at the interpreter's switches."""

    def __init__(self) -> None:
        super().__init__()
        self.since = 0.0
        self.running = threading.Event()
        self.finish = threading.Event()

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        self.since = time.monotonic()
        self.running.set()
        n = 0
        while not self.finish.is_set():
            n += 1
        super().__call__(request, respond)


def test_a_model_that_runs_for_seconds_does_not_make_its_server_hung(name: str) -> None:
    """The server beats from a thread of its own (spec 10.3): while its serving thread runs one
    model call for longer than 10 heartbeat intervals, a new client still connects (with a
    connect_timeout far shorter than an interval: a stale heartbeat would fail it), and is
    served once the model is done."""
    handler = _Computing()
    with ShmTransport().serve(name, handler, channels=4) as _server:
        with ShmTransport().connect(name) as first:
            answers: list[object] = []
            call = threading.Thread(target=lambda: answers.append(first.infer(REQUEST, timeout=120)))
            call.start()
            try:
                if not handler.running.wait(60):
                    raise _gave_up("the model to start")
                if not until(lambda: time.monotonic() - handler.since > STALE_S + 0.5):
                    raise _gave_up("the model to run past 10 heartbeat intervals")
                second = ShmTransport().connect(name, connect_timeout=0.01)
            finally:
                handler.finish.set()
                call.join(60)
            with second:
                out = second.infer(REQUEST, timeout=60).outputs["x"]
            np.testing.assert_array_equal(out, REQUEST.inputs["x"])
            assert len(answers) == 1
