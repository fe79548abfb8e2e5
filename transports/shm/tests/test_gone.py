"""A call that finds no connection (an earlier call's failure dropped it) and connects as it
begins, its server gone, has written nothing and says so: '... is gone; not sent: no server has
started under that name since' (spec 10.3), not the bare '... is gone' of a call whose handler
may have run it. A connect that is no call's, and a loan's begin (which sends nothing), say
'... is gone'."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._channel import _Connection
from foundation_shm._client import ShmClient

from foundation_ml import ClientCounters, InferenceRequest
from foundation_ml.errors import ServerUnavailable

from .conftest import EchoProcess, stopped, until
from .test_resend import _busy

pytestmark = pytest.mark.slow

X = np.arange(4.0)
ECHO = InferenceRequest("echo", {"x": X})
SINCE = "no server has started under that name since"

# each call of a client that connects as it begins, and the model its error names
CALLS: dict[str, tuple[Callable[[ShmClient], Any], str]] = {
    "infer": (lambda c: c.infer(ECHO, timeout=30), "echo"),
    "infer_copy": (lambda c: c.infer_copy(ECHO, timeout=30), "echo"),
    "ainfer": (lambda c: asyncio.run(c.ainfer(ECHO, timeout=30)), "echo"),
    "metadata": (lambda c: c.metadata("echo", timeout=30), "echo"),
    "stats": (lambda c: c.stats(timeout=30), ""),
}


def _fails(call: Callable[[], object]) -> ServerUnavailable:
    """What ``call()`` raises: a plain ``ServerUnavailable`` (no private type of the client's)."""
    with pytest.raises(ServerUnavailable) as got:
        call()
    assert type(got.value) is ServerUnavailable, repr(got.value)
    return got.value


def _dropped(client: ShmClient, server: EchoProcess) -> str:
    """``server`` killed (no server since) and a call failed for it, dropping the connection:
    the first says it was not sent again. Returns the gone words."""
    client.infer(ECHO)
    server.kill()
    gone = f"shm server {client.name!r} (pid {server.pid}) is gone"
    assert _fails(lambda: client.infer(ECHO, timeout=30)).message == f"{gone}; not sent again: {SINCE}"
    return gone


@pytest.mark.parametrize("kind", CALLS)
def test_a_call_after_one_that_found_its_server_gone_says_it_was_not_sent(
    echo_process: Callable[..., EchoProcess], name: str, kind: str
) -> None:
    """It said '... is gone', the words of a call whose handler may have run it; its connect
    found the dead server's region, and nothing of it was written. So does the call after it."""
    call, model = CALLS[kind]
    server = echo_process()
    with ShmTransport().connect(name, timeout=30) as client:
        assert isinstance(client, ShmClient)
        gone = _dropped(client, server)
        for _ in range(2):
            exc = _fails(lambda: call(client))
            assert exc.message == f"{gone}; not sent: {SINCE}"
            assert exc.model == model and exc.request_id > 0  # the call is named, as any failure's
        assert str(exc) == (f"model {model!r}: " if model else "") + exc.message


def test_a_call_after_one_its_handler_may_have_run_says_its_own_was_not_sent(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """The call the server died in (its request with the handler) fails '... is gone'; the next,
    which connects and finds the server gone, wrote nothing: the two said the same words."""
    server = echo_process()
    with ShmTransport().connect(name, timeout=30) as client:
        assert isinstance(client, ShmClient)
        client.infer(ECHO)
        failed: list[BaseException] = []

        def sleep() -> None:
            try:
                client.infer(InferenceRequest("sleep", {"x": X}, parameters={"ms": 60000}), timeout=60)
            except BaseException as exc:  # reported by the test
                failed.append(exc)

        held = threading.Thread(target=sleep)
        held.start()
        assert until(lambda: _busy(name)), "the sleep never reached the handler"
        server.kill()
        held.join(30)
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        assert type(failed[0]) is ServerUnavailable and failed[0].message == gone, failed
        assert _fails(lambda: client.infer(ECHO, timeout=30)).message == f"{gone}; not sent: {SINCE}"


def test_a_connect_and_a_loans_begin_after_a_failed_call_say_gone(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """A connect is no call's, and a loan sends nothing as it begins: both say '... is gone',
    as before, a plain ``ServerUnavailable`` (the loan's naming its model); the client's calls,
    between them, say their own words."""
    server = echo_process()
    with ShmTransport().connect(name, timeout=30) as client:
        assert isinstance(client, ShmClient)
        gone = _dropped(client, server)
        assert _fails(lambda: ShmTransport().connect(name, timeout=30)).message == gone
        exc = _fails(lambda: client.loan("echo", {"x": ("float64", (4,))}, timeout=30))
        assert exc.message == gone and str(exc) == f"model 'echo': {gone}"
        assert _fails(lambda: client.stats(timeout=30)).message == f"{gone}; not sent: {SINCE}"


def _killed_in_the_beat_wait(
    echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch, connect: Callable[[], object]
) -> tuple[ServerUnavailable, int]:
    """A server restarted under the name, hung (stopped), killed while ``connect()`` (a call's
    connect, or a client's) waits for its beat (spec 10.3: reported gone at once). Returns
    what it raised and the pid of the server it found."""
    beating = threading.Event()  # the connect is in its wait for the beat (not a sleep's guess)
    real_wait = _Connection.wait_beating

    def wait_beating(conn: _Connection, wait: float, limit: str) -> None:
        beating.set()
        real_wait(conn, wait, limit)

    monkeypatch.setattr(_Connection, "wait_beating", wait_beating)
    server = echo_process()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            connect()
        except BaseException as exc:  # reported by the test
            failed.append(exc)

    with stopped(server):
        time.sleep(1.2)  # no beat for over 10 intervals of 100 ms: hung (spec 10.3)
        waiting = threading.Thread(target=run)
        waiting.start()
        assert until(beating.is_set), "the connect never waited for the beat"
        server.kill()
        waiting.join(30)
    assert len(failed) == 1 and type(failed[0]) is ServerUnavailable, failed
    return failed[0], server.pid


def test_a_call_whose_connect_finds_its_server_gone_while_waiting_for_its_beat_says_not_sent(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed call the server is restarted under the name, hung, and dies while the next
    call's connect waits for its beat: that call said '... is gone'; it wrote nothing."""
    first = echo_process()
    with ShmTransport().connect(name, timeout=30, connect_timeout=30) as client:
        assert isinstance(client, ShmClient)
        _dropped(client, first)
        exc, pid = _killed_in_the_beat_wait(echo_process, monkeypatch, lambda: client.infer(ECHO, timeout=30))
        assert exc.message == f"shm server '{name}' (pid {pid}) is gone; not sent: {SINCE}"


def test_a_connect_that_finds_its_server_gone_while_waiting_for_its_beat_says_gone(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a new client's connect, no call's: '... is gone', a plain error."""
    exc, pid = _killed_in_the_beat_wait(
        echo_process, monkeypatch, lambda: ShmTransport().connect(name, timeout=30, connect_timeout=30)
    )
    assert exc.message == f"shm server '{name}' (pid {pid}) is gone"


@pytest.mark.parametrize("kind", ["infer", "metadata"])
def test_a_call_moved_off_a_stopped_server_whose_region_stays_says_not_sent_again(
    echo_process: Callable[..., EchoProcess], name: str, kind: str
) -> None:
    """A region STOPPED while its objects stay (the serving loop died: the server's beat marks it
    so, its process alive): the call that finds it STOPPED is moved (``_gone.again``), and its
    connect, the moved attempt's first step, finds the same region. It wrote nothing and was
    moved: '...; not sent again: ...', as a moved call whose reconnect failed; it said '...; not
    sent: ...', the words of a later call. The call after it says those."""
    call, model = CALLS[kind]
    server = echo_process()
    with ShmTransport().connect(name, timeout=30) as client:
        assert isinstance(client, ShmClient)
        client.infer(ECHO)
        conn = client._pool._conn
        assert conn is not None
        conn.ctl.u32[L.RegionField.STATE // 4] = L.RegionState.STOPPED  # as the beat marks it
        gone = f"shm server {name!r} (pid {server.pid}) is gone"
        exc = _fails(lambda: call(client))
        assert exc.message == f"{gone}; not sent again: {SINCE}"
        assert exc.model == model and exc.request_id > 0
        assert _fails(lambda: call(client)).message == f"{gone}; not sent: {SINCE}"
        assert client.counters() == ClientCounters()  # no connection made, nothing sent
