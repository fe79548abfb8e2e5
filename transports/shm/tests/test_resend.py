"""A call whose server died before dispatching its request is sent once more to a server
restarted under the name (spec 10.3); one the dead server may have run is not."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from foundation_shm import ShmTransport, _channel, _liveness
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._gone import Lender
from foundation_shm._loan import Loan
from foundation_shm._segments import Segment

from foundation_ml import InferenceRequest
from foundation_ml.errors import DeadlineExceeded, InferenceError, ServerUnavailable

from .conftest import EchoProcess, dying, stopped, until

pytestmark = pytest.mark.slow

X = np.arange(4.0)
_CLIENT = """
import sys, time, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
from foundation_shm._accel import hot
c = ShmTransport().connect(sys.argv[1], timeout=10)
x = np.arange(4.0)
for _ in range(3):  # the same request again: the C client's repeat lane (_hot.exchange)
    c.infer(InferenceRequest("echo", {"x": x}))
print("called", "python" if hot is None else "c", flush=True)
sys.stdin.readline()
t = time.monotonic()
try:
    out = c.infer(InferenceRequest("echo", {"x": x})).outputs["x"].tolist()
    print("served", out, round((time.monotonic() - t) * 1000, 1), flush=True)
except Exception as exc:
    print("failed", type(exc).__name__, exc, flush=True)
c.close()
"""


def _env(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FDN_SHM_PURE"}
    if pure:
        env["FDN_SHM_PURE"] = "1"
    return env


def _requests(name: str) -> int:
    """How many requests the server now serving ``name`` has run (its own ``stats()``)."""
    with ShmTransport().connect(name) as other:
        return int(other.stats()["requests"])


def _crash_and_restart(server: EchoProcess, start: Callable[..., EchoProcess]) -> EchoProcess:
    server.kill()  # SIGKILL: its region stays READY, its objects stay until the next server's start
    return start()


@pytest.mark.parametrize("pure", [False, True], ids=["c", "python"])
def test_an_idle_clients_call_after_a_crash_and_restart_is_served_by_the_new_server(
    echo_process: Callable[..., EchoProcess], name: str, pure: bool
) -> None:
    """It failed ServerUnavailable '(pid N) is gone' after a slice, the new server already up:
    the request went to the dead server's channel, which it never dispatched (server_busy 0)."""
    server = echo_process()
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(pure),
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        assert client.stdout.readline().split() == ["called", "python" if pure else "c"]
        _crash_and_restart(server, echo_process)
        client.stdin.write("again\n")
        client.stdin.flush()
        line = client.stdout.readline()
        assert line.startswith("served [0.0, 1.0, 2.0, 3.0]"), line
        assert client.wait(30) == 0
    finally:
        client.kill()
        client.wait()
        client.stdin.close()
        client.stdout.close()
    assert _requests(name) == 1  # the call sent once more, to the new server


def test_metadata_stats_and_ainfer_after_a_crash_and_restart_are_served_by_the_new_server(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    server = echo_process()
    with ShmTransport().connect(name, timeout=10) as client:
        client.infer(InferenceRequest("echo", {"x": X}))
        server = _crash_and_restart(server, echo_process)
        assert client.metadata("echo")["name"] == "echo"
        server = _crash_and_restart(server, echo_process)
        assert client.stats()["requests"] == 0
        server = _crash_and_restart(server, echo_process)
        out = asyncio.run(client.ainfer(InferenceRequest("echo", {"x": X}))).outputs["x"]
        np.testing.assert_array_equal(out, X)


def test_every_thread_of_a_client_is_served_by_the_restarted_server(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """A client of 4 channels, each idle after a call: 4 calls at once after the crash and
    restart all succeed (each failed, one channel after another)."""
    server = echo_process()
    threads = 4
    with ShmTransport().connect(name, timeout=10, channels=threads) as client:
        barrier = threading.Barrier(threads)
        failed: list[BaseException] = []

        def call() -> None:
            barrier.wait()
            try:
                sleep = InferenceRequest("sleep", {"x": X}, parameters={"ms": 100})
                np.testing.assert_array_equal(client.infer_copy(sleep).outputs["x"], X)
            except BaseException as exc:
                failed.append(exc)

        def all_at_once() -> None:
            workers = [threading.Thread(target=call) for _ in range(threads)]
            for t in workers:
                t.start()
            for t in workers:
                t.join(60)

        all_at_once()
        assert not failed and len(client._all) == threads  # four channels, all idle now
        _crash_and_restart(server, echo_process)
        all_at_once()
        assert not failed, failed
    assert _requests(name) == threads


def test_a_crash_with_no_server_since_fails_the_call_gone_within_a_slice(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    server = echo_process()
    with ShmTransport().connect(name, timeout=10) as client:
        client.infer(InferenceRequest("echo", {"x": X}))
        server.kill()
        t = time.monotonic()
        gone = rf"model 'echo': shm server '{name}' \(pid {server.pid}\) is gone"
        with pytest.raises(
            ServerUnavailable, match=f"{gone}; not sent again: no server has started under that name since$"
        ):
            client.infer(InferenceRequest("echo", {"x": X}))
        assert time.monotonic() - t < 2  # a slice (50 ms) and a connect, not the timeout (10 s)


def _busy(name: str) -> bool:
    """Whether a channel of ``name``'s server says its request is with the handler (server_busy)."""
    ctl = Segment.open(L.control_name(name))
    try:
        return any(
            ctl.u32[(L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + L.ChannelField.SERVER_BUSY) // 4]
            for i in range(ctl.u32[L.RegionField.CHANNEL_COUNT // 4])
        )
    finally:
        ctl.close()


@pytest.fixture
def unnoticed(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Callable[[], None]]:
    """``unnoticed(pid)``: the client takes process ``pid`` for alive until the returned function is
    called, so that a test can kill a server and start the next one before its call looks."""
    real = _channel.is_alive
    hidden: set[int] = set()

    def is_alive(pid: int, started: int) -> bool:
        return pid in hidden or real(pid, started)

    monkeypatch.setattr(_channel, "is_alive", is_alive)

    def hide(pid: int) -> Callable[[], None]:
        hidden.add(pid)
        return lambda: hidden.discard(pid)

    return hide


def test_a_request_the_dead_server_had_dispatched_is_not_sent_again(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """server_busy was 1 when it died: the handler may have run it, so the call fails 'gone',
    although a new server is up by the time the client looks, and that one never sees it."""
    server = echo_process()
    with ShmTransport().connect(name, timeout=30) as client:
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                client.infer(InferenceRequest("sleep", {"x": X}, parameters={"ms": 3000}))
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=call)
        waiter.start()
        assert until(lambda: _busy(name)), "the request never reached the handler"
        notice = unnoticed(server.pid)
        _crash_and_restart(server, echo_process)
        notice()
        waiter.join(30)
        assert not waiter.is_alive()
        assert type(outcome[0]) is ServerUnavailable, outcome
        assert str(outcome[0]).endswith(f"shm server '{name}' (pid {server.pid}) is gone")
    assert _requests(name) == 0


def test_a_loans_call_is_not_sent_again_after_a_crash_and_restart(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """Its inputs were written into the dead server's request area: the call fails 'gone'."""
    server = echo_process()
    with ShmTransport().connect(name) as client:
        with client.loan("echo", {"x": (np.float64, (4,))}, timeout=5) as loan:
            loan["x"][:] = X
            loan.infer(timeout=5)
            pid = server.pid
            _crash_and_restart(server, echo_process)
            with pytest.raises(ServerUnavailable, match=rf"\(pid {pid}\) is gone$") as got:
                loan.infer(timeout=5)
            assert type(got.value) is ServerUnavailable
        assert _requests(name) == 0
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": X})).outputs["x"], X)


def test_the_resent_call_keeps_its_deadline(echo_process: Callable[..., EchoProcess], name: str) -> None:
    """Sent once more within the same deadline (absolute, in the request), not a new one. (The
    deadline is far off: the new server's start comes out of it, and a loaded machine took more
    than the 2 s it was to start one, failing the call DeadlineExceeded.)"""
    server = echo_process()
    with ShmTransport().connect(name) as client:
        assert isinstance(client, ShmClient)
        client.infer(InferenceRequest("echo", {"x": X}))
        deadline = time.monotonic_ns() + 120_000_000_000
        _crash_and_restart(server, echo_process)
        seen: list[int] = []
        send = client._send

        def spy(request: InferenceRequest, rid: int, at: int, copy: bool, lender: Lender) -> object:
            seen.append(at)
            return send(request, rid, at, copy, lender)

        client._send = spy  # type: ignore[method-assign]
        client.infer(InferenceRequest("echo", {"x": X}, deadline_ns=deadline))
        assert seen == [deadline, deadline]


def test_a_server_whose_liveness_cannot_be_read_is_not_taken_for_dead(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/PID/stat that cannot be opened (EMFILE: this process at its file limit for a
    while) is no proof of death: kill(pid, 0) says the server lives, so a request queued behind
    another client's (server_busy 0) waits and is answered, run once. It was taken for one:
    first the request was sent once more on a new connection to the same live server, which
    ran it twice (46e8fcb), then the call failed SERVER_UNAVAILABLE '... is gone' though the
    server lived and answered it, and the client reconnected, its old channels left with the
    live server for good."""
    server = echo_process()
    with ShmTransport().connect(name, timeout=20) as a, ShmTransport().connect(name, timeout=20) as b:
        a.infer(InferenceRequest("echo", {"x": X}))  # the server maps a's data segment
        before = int(a.stats()["requests"])
        real, me, blind = _liveness._stat_fields, threading.get_ident(), [False]

        def stat_fields(pid: int) -> list[bytes]:
            if pid == server.pid and threading.get_ident() == me and blind[0]:
                raise OSError(errno.EMFILE, "Too many open files", f"/proc/{pid}/stat")
            return real(pid)

        monkeypatch.setattr(_liveness, "_stat_fields", stat_fields)
        slow = threading.Thread(
            target=b.infer, args=(InferenceRequest("sleep", {"x": X}, parameters={"ms": 1500}),)
        )
        slow.start()
        try:
            assert until(lambda: _busy(name)), "the slow request never reached the handler"
            blind[0] = True  # every look of this call, through its wait of many slices
            np.testing.assert_array_equal(a.infer(InferenceRequest("echo", {"x": X})).outputs["x"], X)
            blind[0] = False
        finally:
            slow.join(30)
        assert until(lambda: int(b.stats()["requests"]) >= before + 2)
        time.sleep(0.2)  # a second run of the echo, if any, would be in by now
        assert int(b.stats()["requests"]) == before + 2  # the sleep, and the echo once


def test_a_reconnect_that_cannot_open_a_file_fails_the_call_gone(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconnect after a crash at this process's file limit (EMFILE opening the control
    segment): the call raised that bare OSError, not ServerUnavailable with the gone message."""
    server = echo_process()
    with ShmTransport().connect(name, timeout=10) as client:
        client.infer(InferenceRequest("echo", {"x": X}))
        server.kill()
        server = echo_process()  # a new server: only the file limit keeps the client from it
        real = Segment.open

        def open_(seg: str, **kw: bool) -> Segment:
            if seg == L.control_name(name):
                raise OSError(errno.EMFILE, "This process already has the maximum number of files open")
            return real(seg, **kw)

        monkeypatch.setattr(_channel.Segment, "open", staticmethod(open_))
        gone = rf"shm server '{name}' \(pid \d+\) is gone; not sent again: .*maximum number of files open"
        with pytest.raises(ServerUnavailable, match=gone):
            client.infer(InferenceRequest("echo", {"x": X}))
        monkeypatch.undo()
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": X})).outputs["x"], X)


# --- a call waiting behind an abandoned one (spec 7.5) --------------------------------------------


def _abandoned_then_waiting(
    client: ShmClient, timeout: float, loan: bool = False
) -> tuple[list[object], threading.Thread]:
    """On a client of one channel: a call abandoned at its deadline (its request, 3 s of sleep,
    left with the server), then the next call (``loan``: a loan of ``x``, 4 float64), on a thread,
    waiting for that late answer before it writes its own request (returned once it waits: what
    it returns or raises lands in the list). The server must take the abandoned request before
    its deadline, or it refuses it at once and nothing is left with it (the next call then goes
    straight through): the deadline is a third of the sleep (it was 0.3 s, which a server run
    late on a loaded machine can pass), and a request refused by the time the call has given up
    is sent again."""
    for _ in range(20):
        with pytest.raises(DeadlineExceeded):
            client.infer(InferenceRequest("sleep", {"x": X}, id=7001, parameters={"ms": 3000}), timeout=1.0)
        if not client._all[0].idle():
            break
    else:
        raise AssertionError("the server refused each of 20 requests as late")
    got: list[object] = []

    def call() -> None:
        try:
            if loan:
                got.append(client.loan("echo", {"x": (np.float64, (4,))}, timeout=timeout))
            else:
                got.append(client.infer(InferenceRequest("echo", {"x": X * 2}, id=7002), timeout=timeout))
        except BaseException as exc:  # reported by the test
            got.append(exc)

    waiting = threading.Thread(target=call)
    waiting.start()
    assert until(lambda: client._pool._waiters > 0), "the next call never waited for the late answer"
    return got, waiting


def test_a_call_waiting_for_an_abandoned_calls_late_answer_is_sent_to_the_restarted_server(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """The server is killed while the next call waits, and a new one started before the call
    looks: its own request, never written, goes to the new server, which answers it and runs it
    alone (the abandoned request is not sent again, nor its late answer read as this one's)."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        got, waiting = _abandoned_then_waiting(client, 30)
        notice = unnoticed(server.pid)
        _crash_and_restart(server, echo_process)
        notice()
        waiting.join(30)
        resp = got[0]
        assert not isinstance(resp, BaseException), resp
        assert (resp.id, resp.model) == (7002, "echo")  # type: ignore[attr-defined]
        np.testing.assert_array_equal(resp.outputs["x"], X * 2)  # type: ignore[attr-defined]
    assert _requests(name) == 1


def test_a_loan_waiting_for_an_abandoned_calls_late_answer_is_lent_by_the_restarted_server(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """A loan taken while the one channel was still with a server then killed has written nothing
    (spec 7.5): it is lent a channel of the server restarted under the name, which answers its
    call. It failed gone."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        got, waiting = _abandoned_then_waiting(client, 30, loan=True)
        notice = unnoticed(server.pid)
        _crash_and_restart(server, echo_process)
        notice()
        waiting.join(30)
        loan = got[0]
        assert isinstance(loan, Loan), loan
        with loan:
            loan["x"][:] = X
            np.testing.assert_array_equal(loan.infer(timeout=5).outputs["x"], X)
    assert _requests(name) == 1


def test_a_call_waiting_for_an_abandoned_calls_late_answer_with_no_server_since_fails_not_sent(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """It failed '(pid N) is gone', as if its request might have been sent; it says it was not,
    and why, within a slice and a connect, not at its deadline."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        got, waiting = _abandoned_then_waiting(client, 30)
        notice = unnoticed(server.pid)
        server.kill()
        t = time.monotonic()
        notice()
        waiting.join(30)
        assert time.monotonic() - t < 15  # not the call's 30 s deadline (5 s: a loaded machine's)
        exc = got[0]
        assert type(exc) is ServerUnavailable, exc
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        assert exc.message == f"{gone}; not sent: no server has started under that name since"


def test_a_call_waiting_for_an_abandoned_calls_late_answer_that_looks_right_after_the_kill_fails_not_sent(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """The call notices the death while the killed server's pid is a zombie and its other threads
    still exit with the lock file held (``dying``): its reconnect said the server held its lock
    but lived in another PID namespace ('...; not sent: shm server 'm' holds its lock, ...'); it
    is gone, and no server of the name has started since (none can while the lock is held)."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        got, waiting = _abandoned_then_waiting(client, 30)
        notice = unnoticed(server.pid)  # the call looks once the lock is held for the threads
        with dying(server):
            notice()
            waiting.join(30)
        exc = got[0]
        assert type(exc) is ServerUnavailable, exc
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        assert exc.message == f"{gone}; not sent: no server has started under that name since"


def _queued(name: str, pid: int) -> bool:
    """Whether a channel of ``name``'s server owned by process ``pid`` has a request published but
    not dispatched (``client_seq`` ahead of ``server_seq``, ``server_busy`` 0)."""
    ctl = Segment.open(L.control_name(name))
    try:
        for i in range(ctl.u32[L.RegionField.CHANNEL_COUNT // 4]):
            base = L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE
            if ctl.u32[(base + L.ChannelField.OWNER_PID) // 4] != pid:
                continue
            pending = (
                ctl.u64[(base + L.ChannelField.CLIENT_SEQ) // 8]
                != ctl.u64[(base + L.ChannelField.SERVER_SEQ) // 8]
            )
            if pending and not ctl.u32[(base + L.ChannelField.SERVER_BUSY) // 4]:
                return True
        return False
    finally:
        ctl.close()


def test_a_call_waiting_for_an_abandoned_calls_late_answer_reconnects_once(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """That reconnect is the call's one extra attempt (spec 7.5, 10.3): its request, sent to the
    restarted server, is queued there behind another client's (the serving loop busy with it)
    when that server is killed too; the call fails gone, not sent to a third server (which runs
    nothing)."""
    first = echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=1) as client:
        assert isinstance(client, ShmClient)
        got, waiting = _abandoned_then_waiting(client, 30)
        notice_first = unnoticed(first.pid)
        second = _crash_and_restart(first, echo_process)
        with ShmTransport().connect(name, channels=1) as other:  # holds the second's serving loop

            def hold() -> None:
                with contextlib.suppress(ServerUnavailable):  # (the second server is killed with it)
                    other.infer(InferenceRequest("sleep", {"x": X}, parameters={"ms": 30000}))

            holding = threading.Thread(target=hold)
            holding.start()
            assert until(lambda: _busy(name)), "the sleep never reached the second server's handler"
            notice_second = unnoticed(second.pid)
            notice_first()  # the waiting call reconnects to the second server and sends its request
            assert until(lambda: _queued(name, os.getpid())), "the call's request is not queued there"
            _crash_and_restart(second, echo_process)
            notice_second()
            waiting.join(30)
            holding.join(30)
        exc = got[0]
        assert type(exc) is ServerUnavailable, exc
        assert exc.message == f"shm server '{name}' (pid {second.pid}) is gone"
    assert _requests(name) == 0


def test_a_call_waiting_for_an_abandoned_calls_late_answer_keeps_its_deadline_on_the_reconnect(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """The server restarted under the name is hung (stopped) when the call reconnects: the call
    waits for its beat up to its own deadline, not connect_timeout (30 s), and fails saying its
    request was not sent. Nothing ran on the new server."""
    server = echo_process("--channels", "1")
    with ShmTransport().connect(name, channels=1, connect_timeout=30) as client:
        assert isinstance(client, ShmClient)
        got, waiting = _abandoned_then_waiting(client, 6)
        t = time.monotonic()  # the waiting call's 6 s began before (not the abandoned calls' tries)
        notice = unnoticed(server.pid)
        dead = server.pid
        server = _crash_and_restart(server, echo_process)
        with stopped(server):
            time.sleep(1.2)  # no beat for over 10 intervals of 100 ms: hung (spec 10.3)
            notice()
            waiting.join(30)
        # the deadline: what a wait for connect_timeout (30 s from the reconnect, over 1.2 s after t)
        # would pass by far, with room for a loaded machine after the deadline
        assert time.monotonic() - t < 6 + 12
        exc = got[0]
        assert type(exc) is ServerUnavailable, exc
        gone = f"shm server '{name}' (pid {dead}) is gone"
        hung = f"shm server '{name}' (pid {server.pid}) is hung"
        assert isinstance(exc, InferenceError) and exc.message.startswith(f"{gone}; not sent: {hung}"), exc
        assert "no beat came before the call's deadline" in exc.message
    assert _requests(name) == 0
