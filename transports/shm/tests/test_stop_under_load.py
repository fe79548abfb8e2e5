"""A server stopped while several threads of one client call it: a thread whose call found the
region STOPPED drops the connection while another thread's call still waits on it, or has its
answer in hand. That call fails with what the server's stop says (spec 10.2, 10.3: '... is
gone'), or returns its answer; never 'the client ... was closed during the call', as if someone
had closed the client."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport, _client, _client_repeat
from foundation_shm import _layout as L
from foundation_shm._channel import _Connection
from foundation_shm._client import ShmClient

from foundation_ml import InferenceRequest, InferenceResponse
from foundation_ml.errors import ServerUnavailable

from .conftest import EchoProcess, HeldHandler, stopped, until

pytestmark = pytest.mark.slow

X = np.arange(4.0)
ECHO = InferenceRequest("echo", {"x": X})
HELD = InferenceRequest("held", {"x": X})


def _stopped(conn: _Connection) -> bool:
    return bool(conn.ctl.u32[L.RegionField.STATE // 4] == L.RegionState.STOPPED)


class _Caller:
    """``client.infer(request)`` (HELD) in a thread of its own; ``outcome`` is its answer or its error."""

    def __init__(self, client: ShmClient, request: InferenceRequest = HELD) -> None:
        self.outcome: list[object] = []
        self.thread = threading.Thread(target=self._call, args=(client, request))
        self.thread.start()

    def _call(self, client: ShmClient, request: InferenceRequest) -> None:
        try:
            self.outcome.append(client.infer(request, timeout=60, copy_outputs=True))
        except BaseException as exc:
            self.outcome.append(exc)

    def result(self) -> object:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the held call never ended"
        assert len(self.outcome) == 1, self.outcome
        return self.outcome[0]


@pytest.fixture
def served(name: str) -> Iterator[tuple[HeldHandler, Any, ShmClient]]:
    """A server in this process holding "held" requests, and a client of it with two channels
    (one for the held call, one for the calls of the main thread)."""
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=4)
    try:
        with ShmTransport().connect(name, timeout=30, channels=2, spin_us=0) as client:
            assert isinstance(client, ShmClient)
            yield handler, server, client
    finally:
        server.stop(drain_timeout=0.1)  # (stopped already: nothing)


def _drop_by_a_call(client: ShmClient) -> None:
    """A call of this thread finds the region STOPPED and fails: the client drops the connection,
    with the other thread's call still on it."""
    conn = client._pool._conn
    with pytest.raises(ServerUnavailable):
        client.infer(ECHO, timeout=30, copy_outputs=True)
    assert conn is not None and client._pool._conn is not conn and conn.closing


def test_a_call_waiting_when_another_threads_call_drops_the_stopped_servers_connection_fails_gone(
    served: tuple[HeldHandler, Any, ShmClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held call waits; the server stops with it unanswered (its drain timed out). Before
    the held call's next look at the server, the main thread's call finds the region STOPPED and
    drops the connection. The held call failed 'the client of shm server ... was closed during
    the call' (the drop's flag taken for a close()); it fails '... (pid N) is gone', as it does
    when it looks first."""
    handler, server, client = served
    dropped = threading.Event()
    looked = _client._still_awaited

    def gated(conn: _Connection) -> None:  # the held call's look, once the region is STOPPED
        if threading.current_thread() is not threading.main_thread() and _stopped(conn):
            dropped.wait(60)
        looked(conn)

    monkeypatch.setattr(_client, "_still_awaited", gated)
    caller = _Caller(client)
    assert until(lambda: bool(handler.held)), "the held request never reached the handler"
    client.infer(ECHO, timeout=30, copy_outputs=True)  # the main thread's channel, claimed now
    server.stop(drain_timeout=0.1)  # the held request abandoned: the region STOPPED
    _drop_by_a_call(client)
    dropped.set()
    got = caller.result()
    assert isinstance(got, ServerUnavailable), got
    assert got.message == f"shm server {client.name!r} (pid {os.getpid()}) is gone"


def test_a_call_answered_during_the_drain_keeps_its_answer_when_another_thread_drops_the_connection(
    served: tuple[HeldHandler, Any, ShmClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held call's request was published before the stop, so the drain serves it; the call
    has its answer in the response area when the main thread's call finds the region STOPPED
    and drops the connection. The held call failed 'was closed during the call' (a drop taken
    for a close(), whose channel the server may have reclaimed); no one gave its channel back,
    and the answer is the server's: the call returns it."""
    handler, server, client = served
    dropped = threading.Event()
    read = ShmClient._response

    def gated(self: ShmClient, *args: Any) -> InferenceResponse:  # the held call's answer, come
        if threading.current_thread() is not threading.main_thread():
            dropped.wait(60)
        return read(self, *args)

    monkeypatch.setattr(ShmClient, "_response", gated)
    caller = _Caller(client)
    assert until(lambda: bool(handler.held)), "the held request never reached the handler"
    client.infer(ECHO, timeout=30, copy_outputs=True)  # the main thread's channel, claimed now
    stopper = threading.Thread(target=functools.partial(server.stop, drain_timeout=60))
    stopper.start()
    request, respond = handler.held[0]
    assert until(lambda: server._stopping)  # (the request was published before: it is drained)
    respond(InferenceResponse(request.id, "held", {"x": X * 2}))
    stopper.join(60)
    assert not stopper.is_alive() and server.abandoned == 0
    _drop_by_a_call(client)
    dropped.set()
    got = caller.result()
    assert isinstance(got, InferenceResponse), got
    np.testing.assert_array_equal(got.outputs["x"], X * 2)


def test_a_call_about_to_send_when_another_thread_drops_the_stopped_servers_connection_goes_to_the_new_server(
    served: tuple[HeldHandler, Any, ShmClient], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A call took its channel, then found the region STOPPED before publishing; meanwhile the
    main thread's call, finding it STOPPED too, dropped the connection, and a new server started
    under the name. Nothing of the call was sent: it goes once to the new server (spec 10.2,
    7.5), as it does when no other thread dropped the connection first. It failed '... (pid N) is
    gone' (before b8faacc: 'the client ... was closed during the call'), the drop taken for a
    reason not to move it."""
    handler, server, client = served
    gated, dropped = threading.Event(), threading.Event()
    checks = [_client.check_before_sending, _client_repeat.check_before_sending]

    def gate(original: Callable[[_Connection, bool], None], conn: _Connection, closed: bool) -> None:
        if threading.current_thread() is not threading.main_thread():
            gated.set()
            dropped.wait(60)
        original(conn, closed)

    held = _Caller(client)  # both channels of the client claimed, then free
    assert until(lambda: bool(handler.held)), "the held request never reached the handler"
    client.infer(ECHO, timeout=30, copy_outputs=True)
    request, respond = handler.held[0]
    respond(InferenceResponse(request.id, "held", request.inputs))
    assert isinstance(held.result(), InferenceResponse)
    server.stop(drain_timeout=0.1)
    monkeypatch.setattr(_client, "check_before_sending", functools.partial(gate, checks[0]))
    monkeypatch.setattr(_client_repeat, "check_before_sending", functools.partial(gate, checks[1]))
    caller = _Caller(client, ECHO)
    assert gated.wait(60), "the call never looked before sending"
    _drop_by_a_call(client)
    restarted = ShmTransport().serve(name, HeldHandler(), channels=4)
    try:
        dropped.set()
        got = caller.result()
        assert isinstance(got, InferenceResponse), got
        np.testing.assert_array_equal(got.outputs["x"], X)
        assert client.counters().resends == 1
    finally:
        restarted.stop(drain_timeout=0.1)


def test_an_answer_that_came_before_the_server_died_is_read_when_another_thread_dropped_the_connection(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call's answer came, then its server was killed, and another thread's call, finding it
    dead, dropped the connection before this call looked again. The answer came before the death:
    it is read (spec 10.3), as when no other thread dropped the connection first; the call
    failed '... (pid N) is gone', the drop taken for a close whose reclaim ended its wait."""
    server = echo_process()
    armed, gated, dropped = threading.Event(), threading.Event(), threading.Event()
    looked = _client._still_awaited

    def gate(conn: _Connection) -> None:
        if armed.is_set() and threading.current_thread() is not threading.main_thread():
            gated.set()
            dropped.wait(60)
        looked(conn)

    monkeypatch.setattr(_client, "_still_awaited", gate)
    with ShmTransport().connect(name, timeout=30, channels=2, spin_us=0) as client:
        assert isinstance(client, ShmClient)
        conn = client._pool._conn
        assert conn is not None
        with stopped(server):  # the call published, unanswered: its look (a slice later) held
            armed.set()
            caller = _Caller(client, ECHO)
            assert gated.wait(60), "the call never looked at its server"
        (ch,) = client._pool._busy
        assert until(ch.idle), "the server never answered"
        server.kill()
        with pytest.raises(ServerUnavailable):  # another thread's look finds it dead ...
            conn.check()
        with pytest.raises(ServerUnavailable):  # ... and its next call drops the connection
            client.infer(ECHO, timeout=30, copy_outputs=True)
        assert conn.closing and client._pool._conn is not conn
        dropped.set()
        got = caller.result()
        assert isinstance(got, InferenceResponse), got
        np.testing.assert_array_equal(got.outputs["x"], X)
