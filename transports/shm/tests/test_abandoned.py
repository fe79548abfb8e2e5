"""The call after an abandoned one (it passed its deadline, was interrupted, or its ``ainfer`` was
cancelled) while the server still runs the abandoned request: that request's channel stays with
the server until its late answer is in. On a server with a channel to spare the next call claims
it; on one whose channels are all taken it waits for the late answer, up to its own deadline
(``DeadlineExceeded`` naming the channel still with the server), then sends its own request and
gets its own answer, never the abandoned one's. A server that is hung (spec 10.3) meanwhile fails
it ``ServerUnavailable`` after ``connect_timeout``, deadline or none."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from foundation_shm import ShmTransport, _channel, _ownership, _pool
from foundation_shm._channel import _Channel, _Connection
from foundation_shm._client import ShmClient
from foundation_shm._echo import EchoHandler

from foundation_ml import InferenceClient, InferenceRequest, InferenceResponse
from foundation_ml.errors import DeadlineExceeded, Overloaded, ServerUnavailable

from .conftest import EchoProcess, HeldHandler, stopped, until

ABANDONED, NEXT = 7001, 7002


def _slow(ms: int) -> InferenceRequest:
    return InferenceRequest("sleep", {"x": np.full(4, 1.0)}, id=ABANDONED, parameters={"ms": ms})


def _next(client: ShmClient, timeout: float | None) -> InferenceResponse:
    return client.infer(InferenceRequest("echo", {"x": np.full(4, 2.0)}, id=NEXT), timeout=timeout)


def _assert_own(resp: InferenceResponse) -> None:
    """The next call's answer, not the abandoned call's (model sleep, id ABANDONED, ones)."""
    assert (resp.id, resp.model) == (NEXT, "echo")
    np.testing.assert_array_equal(resp.outputs["x"], 2.0)


def _published(client: ShmClient) -> Callable[[], bool]:
    """Whether a request was published on the client's one channel since this was called."""
    ch = client._all[0]
    before = ch.words[ch.cseq]
    return lambda: ch.words[ch.cseq] != before


def _beats_again(client: ShmClient) -> None:
    """The server, resumed after being hung, has beaten again: until then a call still finds it
    hung and gives up after the client's ``connect_timeout`` (50 ms in these tests), which a
    resumed process on a loaded machine may take to be run at all."""
    conn = client._all[0].conn
    assert until(lambda: conn.hung() is None), "the resumed server did not beat again"


def _next_call(
    client: ShmClient, timeout: float | None
) -> tuple[list[BaseException | InferenceResponse], threading.Thread]:
    """The next call as a thread, not started (``run()`` makes it in this thread): what it returns
    or raises lands in the list."""
    got: list[BaseException | InferenceResponse] = []

    def call() -> None:
        try:
            got.append(_next(client, timeout))
        except BaseException as exc:  # reported by the test
            got.append(exc)

    return got, threading.Thread(target=call, daemon=True)


def _abandon(client: ShmClient, how: str, ms: int, server: EchoProcess | None = None) -> None:
    """Send a request the server answers ``ms`` ms later, and abandon its call ``how``. With
    ``server``, an interrupted or cancelled call's server is stopped until the call is abandoned,
    so that its request is still with it then, however long a loaded machine takes to get there
    (an interrupt or a cancel that landed after the answer found the call answered, and the
    interrupt then hit whatever ran next). A call past its deadline needs the server to have
    taken its request before the deadline: it runs."""
    with stopped(server) if server is not None and how != "deadline" else contextlib.nullcontext():
        _abandon_now(client, how, ms)
        assert any(not ch.idle() for ch in client._all)  # its request still with the server


_TRIES = 20  # calls abandoned at their deadline, until one leaves its request with the server


def _abandon_now(client: ShmClient, how: str, ms: int) -> None:
    if how == "deadline":
        # a third of the sleep: the server must take the request before its deadline passes, or
        # it refuses it at once, and nothing is left with it (a 20 ms deadline was too short for
        # a loaded machine: the next call then went straight through); and the call must give up
        # before the answer is in, or it reads it. Neither is sure on a loaded machine (a server
        # run late, a client thread run late): the call is made again until its request is left
        # with the server
        for _ in range(_TRIES):
            try:
                client.infer(_slow(ms), timeout=ms / 3000)
            except DeadlineExceeded:
                if any(not ch.idle() for ch in client._all):
                    return
        raise AssertionError(f"no call of {_TRIES} left its request with the server")
    elif how == "interrupt":  # KeyboardInterrupt in the waiting (main) thread
        sent = _published(client)

        def interrupt() -> None:
            assert until(sent)
            _thread.interrupt_main()

        t = threading.Thread(target=interrupt)
        t.start()
        with pytest.raises(KeyboardInterrupt):
            client.infer(_slow(ms), timeout=60)
        t.join()
    else:  # the ainfer's task cancelled (by wait_for): its thread stops waiting within a slice
        sent = _published(client)

        async def cancelled() -> None:
            task = asyncio.ensure_future(client.ainfer(_slow(ms), timeout=60))
            while not sent():
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())


@pytest.mark.parametrize("how", ["deadline", "interrupt", "ainfer"])
@pytest.mark.parametrize("where", ["same thread", "another thread"])
@pytest.mark.parametrize("server_channels", ["1", "2"])
def test_the_call_after_an_abandoned_one_gets_its_own_answer(
    name: str, echo_process: Callable[..., EchoProcess], how: str, where: str, server_channels: str
) -> None:
    """Before the fix, on a server of one channel, the next call of a client that may use more
    (``channels=4``, the default) tried to claim another at once and failed ``Overloaded``
    ('all 1 channels are in use'), deadline or none, though its own channel was about to come
    free. With a channel to spare it claims that one."""
    server = echo_process("--channels", server_channels)
    with ShmTransport().connect(name) as client:
        _abandon(client, how, 300, server)
        for timeout in (60.0, None):
            got, t = _next_call(client, timeout)
            if where == "same thread":
                t.run()
            else:
                t.start()
                t.join()
            assert isinstance(got[0], InferenceResponse), got
            _assert_own(got[0])
            _abandon(client, "deadline", 300)  # the second round: no deadline


def test_an_inference_client_after_an_abandoned_call_gets_its_own_answer(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The same through ``InferenceClient`` (copies, its 30 s default timeout): before the fix its
    next call failed ``Overloaded``."""
    echo_process("--channels", "1")
    with InferenceClient(name) as client:
        shm = client._client
        assert isinstance(shm, ShmClient)
        # again while the call left nothing with the server: a client thread run 90 ms late reads
        # the answer, a server run 10 ms late refuses the request ('deadline passed before the
        # request ran', DeadlineExceeded too, the next call then straight through)
        for _ in range(_TRIES):
            try:
                client.infer("sleep", {"x": np.full(4, 1.0)}, timeout=0.01)  # sleeps 100 ms
            except DeadlineExceeded:
                if any(not ch.idle() for ch in shm._all):
                    break
        else:
            raise AssertionError(f"no call of {_TRIES} left its request with the server")
        np.testing.assert_array_equal(client.infer("echo", {"x": np.full(4, 2.0)})["x"], 2.0)


@pytest.mark.parametrize("channels", [1, 4])
def test_a_late_answer_that_does_not_come_before_the_deadline_fails_the_next_call_saying_so(
    name: str, echo_process: Callable[..., EchoProcess], channels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is stopped (SIGSTOP), so the late answer comes only once the test lets it.
    Before the fix a client of 4 channels failed ``Overloaded``; one of 1 waited, as now. The
    server is late here, not hung: a loaded machine that took over a second to get to the next
    call saw it hung (10.3) and failed it ``ServerUnavailable`` (the tests below)."""
    monkeypatch.setattr(_channel, "HUNG_MIN_NS", 600 * 10**9)
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=channels) as client:
        with stopped(server):
            with pytest.raises(DeadlineExceeded):
                client.infer(_slow(10), timeout=0.02)
            pending = (
                r"previous request on channel 0 \(a call that passed its deadline\) is still with the server"
            )
            with pytest.raises(DeadlineExceeded, match=pending):
                _next(client, 0.05)
        _assert_own(_next(client, 60))


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("timeout", [None, 60.0])
def test_a_call_waiting_for_a_late_answer_from_a_hung_server_fails_server_unavailable(
    name: str, echo_process: Callable[..., EchoProcess], channels: int, timeout: float | None
) -> None:
    """A stopped server counts hung (10.3) once its heartbeat is a second old: it answers nothing,
    and a call waiting to send gives up after ``connect_timeout``, as a claim on it does. Before
    the fix a call without a deadline waited for ever (a client of 4 channels was told
    'all 1 channels are in use', or that the hung server takes no new client)."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=channels, connect_timeout=0.05) as client:
        with stopped(server):
            with pytest.raises(DeadlineExceeded):
                client.infer(_slow(10), timeout=0.02)
            got, t = _next_call(client, timeout)
            t.start()
            t.join(60)  # (not a timing check: a wait for ever fails here, not at pytest's limit)
            assert got, "the call still waits for the hung server's late answer"
        assert isinstance(got[0], ServerUnavailable), got
        message = str(got[0])
        assert "is hung: no heartbeat for" in message, message
        assert "within connect_timeout (0.05 s)" in message, message
        assert (
            "the previous request on channel 0 (a call that passed its deadline) is still with it" in message
        )
        t.join()
        _beats_again(client)
        _assert_own(_next(client, 60))  # the server runs again: its late answer in, the call sent


def test_a_call_waiting_for_another_threads_channel_that_is_then_kept_for_views_fails_overloaded(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The call found the server's one channel taken by another thread's call, and waits for it;
    that call returns views, so its thread keeps the channel (until its next call, or its end):
    nothing of the client's comes free any more. Before the fix the call waited for ever (no
    deadline); before the wait was added it failed ``Overloaded`` at once, saying why, as now."""
    echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=4) as client:
        sent = _published(client)
        done = threading.Event()
        views: list[InferenceResponse] = []

        def holder() -> None:  # a call that returns views, its thread alive after it, calling no more
            views.append(client.infer(_slow(300), timeout=60))
            done.wait()

        t1 = threading.Thread(target=holder, daemon=True)
        t1.start()
        assert until(sent)
        got, t2 = _next_call(client, None)
        t2.start()
        t2.join(60)  # (not a timing check: a wait for ever fails here, not at pytest's limit)
        try:
            assert got, "the call still waits for a channel its thread keeps for views"
            assert isinstance(got[0], Overloaded), got
            assert "this client keeps 1 of them for threads holding output views" in str(got[0])
        finally:
            done.set()
            t1.join()
    t2.join()


@pytest.mark.slow
def test_a_call_waiting_for_a_late_answer_claims_a_channel_another_client_gives_back(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The server's two channels are taken: one by another client, one by this client's abandoned
    call, whose late answer comes 3 s later (the serving loop sleeps). The next call waits; the
    other client closes, its channel is free: the call claims it. Before the fix it kept waiting
    for the late answer (a call with a deadline shorter than that failed ``DeadlineExceeded``
    though a channel was free)."""
    echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=4) as client:
        other = ShmTransport().connect(name, channels=1)
        try:
            _abandon(client, "deadline", 3000)
            got, t = _next_call(client, None)
            t.start()
            assert until(lambda: client._pool._waiters > 0 or bool(got))  # it waits
            assert not got, got
        finally:
            other.close()
        # claimed while the late answer is still owed (the serving loop still sleeps)
        assert until(lambda: len(client._all) == 2), "the call did not claim the channel given back"
        t.join()
        assert isinstance(got[0], InferenceResponse), got
        _assert_own(got[0])


def test_a_late_answer_that_comes_while_the_next_call_claims_in_vain_leaves_it_that_channel(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next call, its channel still with the server, claims another and finds the server's
    one taken (by that very channel); the late answer comes in just then. Before the fix the call
    looked for a channel of its own still with the server, found none (the one it waited for had
    come free) and failed ``Overloaded`` ('all 1 channels are in use') with that channel free in
    its pool: seen under load. It takes that channel."""
    monkeypatch.setattr(_channel, "HUNG_MIN_NS", 600 * 10**9)  # stopped, the server is late, not hung
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=4) as client:
        ch = client._all[0]
        claim = _pool.ChannelPool._claim

        def refused_then_answered(pool: _pool.ChannelPool, *args: object, **kw: object) -> _Channel:
            try:
                return claim(pool, *args, **kw)  # type: ignore[arg-type]
            except Overloaded:
                os.kill(server.pid, signal.SIGCONT)  # the late answer comes in now
                assert until(ch.idle), "the late answer did not come"  # in before the refusal lands
                raise

        with stopped(server):  # the request stays with it until the claim is refused
            _abandon(client, "deadline", 300)
            monkeypatch.setattr(_pool.ChannelPool, "_claim", refused_then_answered)
            _assert_own(_next(client, 60))
        assert client._all == [ch]


def test_a_call_waiting_for_another_threads_channel_on_a_hung_server_fails_server_unavailable(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The server's one channel is in another thread's call, and the server stops (hung a second
    later): the next call, its claim refused ('all 1 channels are in use'), waits for that
    channel, and without a deadline it waited for ever, its request not even sent. It waits for
    the hung server as a claim does: ``ServerUnavailable`` after ``connect_timeout``."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=4, copy_outputs=True, connect_timeout=0.05) as client:
        sent = _published(client)
        first = threading.Thread(target=lambda: client.infer(_slow(300), timeout=None), daemon=True)
        got, t = _next_call(client, None)
        # stopped first: the call in the other thread is still with it when the next call comes,
        # however long a loaded machine takes to get there (it was answered 300 ms after it was
        # sent, the next call then sent on its channel and waiting for ever for the stopped server)
        with stopped(server):
            first.start()
            assert until(sent)
            t.start()
            t.join(60)  # (not a timing check: a wait for ever fails here, not at pytest's limit)
            assert got, "the call still waits for a channel of a hung server"
        assert isinstance(got[0], ServerUnavailable), got
        assert "is hung: no heartbeat for" in str(got[0]), got[0]
        first.join()
        _assert_own(_next(client, 60))


def test_a_call_after_an_abandoned_one_on_a_server_already_hung_says_its_request_is_still_with_it(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The same, the server hung already when the next call starts (a loaded machine took over a
    second to get there): a client of 4 channels, free to claim one more, waited for the hung
    server's beat as a claim does, and failed without saying that its previous request was still
    with the server (the test above failed so now and then). It waits for that request's channel."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=4, connect_timeout=0.05) as client:
        with stopped(server):
            with pytest.raises(DeadlineExceeded):
                client.infer(_slow(10), timeout=0.02)
            conn = client._all[0].conn
            assert until(lambda: conn.hung() is not None)
            with pytest.raises(ServerUnavailable) as got:
                _next(client, None)
        message = str(got.value)
        assert "is hung: no heartbeat for" in message, message
        assert "within connect_timeout (0.05 s)" in message, message
        assert (
            "the previous request on channel 0 (a call that passed its deadline) is still with it" in message
        ), message
        _beats_again(client)
        _assert_own(_next(client, 60))


# --- close() after an abandoned call: an answer still owed gets a moment -------------------------


def test_a_client_closed_after_an_abandoned_call_frees_its_channel_once_the_late_answer_is_in(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call passed its deadline, its client closed at once and a new one connected: on a server
    whose channels were all taken (here its one), the new client failed ``Overloaded`` ("all 1
    channels are in use") though the server answered the abandoned request a moment later; the
    channel, given back (``owner_start_time = 0``), stayed taken until the server's next beat
    reclaimed it. ``close()`` now waits for an answer still owed up to 100 ms (``_OWED_GRACE``),
    as the C, Go and Rust clients do, and frees the channel once it is in."""
    monkeypatch.setattr(_ownership, "_OWED_GRACE", 60.0)  # the answer, a second late, comes in time anywhere
    server = ShmTransport().serve(name, EchoHandler(), channels=1, heartbeat_ms=60_000)  # no beat: no reclaim
    try:
        first = ShmTransport().connect(name, timeout=30)
        with pytest.raises(DeadlineExceeded):
            first.infer(_slow(1000), timeout=0.05)
        first.close()  # the answer comes a second after the call began: after the deadline and this
        with ShmTransport().connect(name, timeout=30) as second:
            _assert_own(_next(second, 30))
    finally:
        server.stop()


def test_a_client_closed_after_an_abandoned_call_gives_its_channel_back_if_no_answer_comes(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The wait for an answer still owed is a moment, not the request's time: a handler that never
    answers leaves the channel given back (``owner_start_time = 0``), for the server's reclaim."""
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=1, heartbeat_ms=60_000)
    try:
        first = ShmTransport().connect(name, timeout=30)
        with pytest.raises(DeadlineExceeded):
            first.infer(InferenceRequest("held", {"x": np.full(4, 1.0)}), timeout=0.05)
        first.close()
        with pytest.raises(Overloaded, match="all 1 channels are in use"):
            ShmTransport().connect(name, timeout=30)
        with caplog.at_level("INFO", logger="foundation_shm"):
            server._reap()  # the next beat's reclaim
        assert [r.getMessage() for r in caplog.records if "reclaimed" in r.getMessage()] == [
            f"shm {name}: reclaimed channel 0 given back by client pid {os.getpid()}"
        ]
        with ShmTransport().connect(name, timeout=30) as second:
            _assert_own(_next(second, 30))
    finally:
        server.stop()


def test_a_close_interrupted_while_it_waits_for_an_owed_answer_still_gives_the_channels_back(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt during ``close()``'s wait for an answer still owed skipped the release
    of the channels: they stayed owned by this live process, which the server never reclaims (spec
    10.4), so a client connecting after it failed ``Overloaded`` for as long as the process lived.
    The interrupt propagates, the channels given back first."""
    monkeypatch.setattr(_ownership, "_OWED_GRACE", 60.0)  # the wait is still on when the interrupt comes
    waiting = threading.Event()
    await_owed = _pool.await_owed

    def noted(conn: _Connection, channels: list[_Channel], busy: set[_Channel]) -> None:
        waiting.set()
        await_owed(conn, channels, busy)

    monkeypatch.setattr(_pool, "await_owed", noted)
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=1, heartbeat_ms=60_000)  # no beat: _reap below
    try:
        first = ShmTransport().connect(name, timeout=30)
        with pytest.raises(DeadlineExceeded):
            first.infer(InferenceRequest("held", {"x": np.full(4, 1.0)}), timeout=0.05)
        threading.Thread(target=lambda: waiting.wait(30) and _thread.interrupt_main(), daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            first.close()
        server._reap()  # the next beat: it reclaims a channel given back, not one owned by a live client
        with ShmTransport().connect(name, timeout=30) as second:
            _assert_own(_next(second, 30))
    finally:
        server.stop()


class _NoWait:
    """``time`` for ``_ownership``, but a sleep (close()'s wait for an answer still owed) fails the test."""

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        raise AssertionError(f"close() waited ({seconds} s) for an answer from a server that answers nothing")


def test_a_client_closed_after_an_abandoned_call_waits_for_no_answer_from_a_server_that_stopped(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that stopped (its region STOPPED, its process alive: a runtime closed, a process
    about to exit) answers nothing more, yet ``close()`` gave the request it abandoned the whole
    moment (100 ms) for each client; it waits only for a server that serves (spec 10.1)."""
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=1, heartbeat_ms=60_000)
    stopped_yet = False
    try:
        client = ShmTransport().connect(name, timeout=30)
        with pytest.raises(DeadlineExceeded):
            client.infer(InferenceRequest("held", {"x": np.full(4, 1.0)}), timeout=0.05)
        server.stop(drain_timeout=0)  # the held request abandoned, the region STOPPED
        stopped_yet = True
        monkeypatch.setattr(_ownership, "time", _NoWait())
        client.close()
    finally:
        if not stopped_yet:
            server.stop(drain_timeout=0)


def test_a_close_that_another_thread_is_doing_returns_once_the_channels_are_given_back(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` called while another thread's close waited for an answer still owed returned
    at once, the channel still taken: a client connecting right after failed ``Overloaded`` ("all
    1 channels are in use"). It returns once that close is done, the channel freed."""
    monkeypatch.setattr(_ownership, "_OWED_GRACE", 60.0)  # the answer, a second late, comes in time anywhere
    waiting = threading.Event()
    await_owed = _pool.await_owed

    def noted(conn: _Connection, channels: list[_Channel], busy: set[_Channel]) -> None:
        waiting.set()
        await_owed(conn, channels, busy)

    monkeypatch.setattr(_pool, "await_owed", noted)
    server = ShmTransport().serve(name, EchoHandler(), channels=1, heartbeat_ms=60_000)  # no beat: no reclaim
    try:
        first = ShmTransport().connect(name, timeout=30)
        with pytest.raises(DeadlineExceeded):
            first.infer(_slow(1000), timeout=0.05)
        other = threading.Thread(target=first.close, daemon=True)
        other.start()
        assert waiting.wait(30)
        first.close()  # the other thread's close is waiting for the late answer
        with ShmTransport().connect(name, timeout=30) as second:
            _assert_own(_next(second, 30))
        other.join(30)
    finally:
        server.stop()
