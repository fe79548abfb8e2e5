"""A call waiting for a channel that another thread's call has (not an abandoned one: that is
``test_resend``'s) when the server dies: its request was never written, so it is sent once to a
server restarted under the name, or fails '... is gone; not sent: REASON' (spec 7.5), as a call
waiting behind an abandoned one does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._channel import _Connection
from foundation_shm._client import ShmClient

from foundation_ml import InferenceRequest
from foundation_ml.errors import ServerUnavailable

from .conftest import EchoProcess, dying, stopped, until
from .test_resend import _busy, _requests, unnoticed

pytestmark = pytest.mark.slow

__all__ = ["unnoticed"]  # the fixture, shared with test_resend

X = np.arange(4.0)


def _call(client: ShmClient, into: list[object], request: InferenceRequest) -> None:
    """``client.infer(request)`` (30 s), what it returns or raises appended to ``into``."""
    try:
        into.append(client.infer(request, timeout=30))
    except BaseException as exc:  # reported by the test
        into.append(exc)


def _busy_then_waiting(client: ShmClient) -> tuple[list[object], list[object], list[threading.Thread]]:
    """On a client of one channel: a call on a thread whose request (a minute of sleep: the
    server is killed long before, however slow the machine) is with the server's handler, then
    the next call (an echo of ``X * 2``), on another thread, waiting for that channel. What each
    returns or raises lands in its list; returned once the second waits."""
    first: list[object] = []
    second: list[object] = []

    held = threading.Thread(
        target=_call,
        args=(client, first, InferenceRequest("sleep", {"x": X}, id=8001, parameters={"ms": 60000})),
    )
    held.start()
    assert until(lambda: _busy(client.name)), "the sleep never reached the handler"
    waiting = threading.Thread(
        target=_call, args=(client, second, InferenceRequest("echo", {"x": X * 2}, id=8002))
    )
    waiting.start()
    assert until(lambda: client._pool._waiters > 0), "the next call never waited for the channel"
    return first, second, [held, waiting]


def test_a_call_waiting_for_another_threads_call_with_no_server_since_fails_not_sent(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """The waiting call failed with its reconnect's plain error ('(pid N) is gone'), as if its
    request might have run; it says it was not sent, and why. The other thread's call, whose
    request the handler had, fails plain gone."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        first, second, threads = _busy_then_waiting(client)
        server.kill()
        for thread in threads:
            thread.join(30)
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        assert type(first[0]) is ServerUnavailable and first[0].message == gone, first
        exc = second[0]
        assert type(exc) is ServerUnavailable, exc
        assert exc.message == f"{gone}; not sent: no server has started under that name since"
        assert (exc.model, exc.request_id) == ("echo", 8002)


def test_a_call_waiting_for_another_threads_call_that_looks_right_after_the_kill_fails_not_sent(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """The same, the killed server's pid still a zombie whose other threads hold its lock file
    (``dying``) when the calls look."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        first, second, threads = _busy_then_waiting(client)
        with dying(server):
            for thread in threads:
                thread.join(30)
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        assert type(first[0]) is ServerUnavailable and first[0].message == gone, first
        exc = second[0]
        assert type(exc) is ServerUnavailable, exc
        assert exc.message == f"{gone}; not sent: no server has started under that name since"


def test_a_call_waiting_for_another_threads_call_is_sent_to_the_restarted_server(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """A server restarted under the name before the calls look: the waiting call's request goes
    to it, once, and is answered; the other's, which the dead server's handler had, is not."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        first, second, threads = _busy_then_waiting(client)
        notice = unnoticed(server.pid)
        server.kill()
        echo_process("--channels", "1")
        notice()
        for thread in threads:
            thread.join(30)
        assert type(first[0]) is ServerUnavailable, first
        resp = second[0]
        assert not isinstance(resp, BaseException), resp
        assert (resp.id, resp.model) == (8002, "echo")  # type: ignore[attr-defined]
        np.testing.assert_array_equal(resp.outputs["x"], X * 2)  # type: ignore[attr-defined]
    assert _requests(name) == 1


def test_a_call_waiting_for_a_hung_servers_beat_to_claim_one_more_channel_fails_not_sent_if_it_dies(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client of two channels, one in another thread's call whose request a hung (stopped)
    server has: the next call waits for its beat to claim a second, and the server is killed.
    That call failed with the beat wait's plain '(pid N) is gone'; it was never sent."""
    server = echo_process()
    with ShmTransport().connect(name, channels=2, connect_timeout=30) as client:
        assert isinstance(client, ShmClient)
        beating = threading.Event()  # the next call is in its wait for the beat (not a sleep's guess)
        real_wait = _Connection.wait_beating

        def wait_beating(conn: _Connection, wait: float, limit: str) -> None:
            beating.set()
            real_wait(conn, wait, limit)

        monkeypatch.setattr(_Connection, "wait_beating", wait_beating)
        first: list[object] = []
        second: list[object] = []

        request = InferenceRequest("sleep", {"x": X}, parameters={"ms": 60000})
        held = threading.Thread(target=_call, args=(client, first, request))
        held.start()
        assert until(lambda: _busy(name)), "the sleep never reached the handler"
        with stopped(server):
            time.sleep(1.2)  # no beat for over 10 intervals of 100 ms: hung (spec 10.3)
            waiting = threading.Thread(
                target=_call, args=(client, second, InferenceRequest("echo", {"x": X}))
            )
            waiting.start()
            # waiting for the beat: killed before it first looked, the other thread's call could
            # drop the connection first, and the call would start on a server already gone
            assert until(beating.is_set), "the next call never waited for the beat"
            assert not second, second
            server.kill()
            waiting.join(30)
            held.join(30)
        exc = second[0]
        assert type(exc) is ServerUnavailable, exc
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        assert exc.message == f"{gone}; not sent: no server has started under that name since"
