"""What a client counts (spec 10.5): ``reconnects``, connections made after its first, and
``resends``, calls moved to a new connection because no handler saw their request, counted once
published there. Real server processes, killed (SIGKILL) or stopped (SIGTERM) and started again
under the same name."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable

import attrs
import numpy as np
import pytest
from foundation_shm import ClientCounters, ShmTransport
from foundation_shm._channel import _Channel
from foundation_shm._client import ShmClient
from foundation_shm._loan import Loan

from foundation_ml import InferenceRequest
from foundation_ml.errors import ServerUnavailable

from .conftest import EchoProcess, until
from .test_resend import _abandoned_then_waiting, _busy, _crash_and_restart, _requests, unnoticed

pytestmark = pytest.mark.slow

__all__ = ["unnoticed"]  # the fixture, shared with test_resend

X = np.arange(4.0)
ECHO = InferenceRequest("echo", {"x": X})


def _connect(name: str, **options: object) -> ShmClient:
    client = ShmTransport().connect(name, timeout=30, **options)
    assert isinstance(client, ShmClient)
    return client


def _echoed(client: ShmClient) -> None:
    np.testing.assert_array_equal(client.infer(ECHO).outputs["x"], X)


def test_a_new_client_counts_nothing_and_a_call_after_a_crash_and_restart_counts_one_of_each(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """Ordinary calls count nothing; the call on an idle channel after a SIGKILL and a restart is
    published to the dead server, never dispatched, and sent once more on a new connection."""
    server = echo_process()
    with _connect(name) as client:
        assert client.counters() == ClientCounters(reconnects=0, resends=0)
        for _ in range(3):  # (the C client's repeat lane from the second on)
            _echoed(client)
        client.stats()
        assert client.counters() == ClientCounters(reconnects=0, resends=0)
        _crash_and_restart(server, echo_process)
        _echoed(client)  # answered by the new server
        assert client.counters() == ClientCounters(reconnects=1, resends=1)
        _echoed(client)
        assert client.counters() == ClientCounters(reconnects=1, resends=1)
    assert _requests(name) == 2  # the call moved, run once, and the next


def test_the_counters_are_a_frozen_value() -> None:
    counters = ClientCounters(reconnects=2, resends=1)
    assert (counters.reconnects, counters.resends) == (2, 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        counters.resends = 3  # type: ignore[misc]
    assert not hasattr(counters, "__dict__")  # slots


class _MovedBetweenReads:
    """A pool whose two counts change between ``counters()``'s two reads: a call's reconnect
    and its resend land right after the first read (another thread's moved call)."""

    def __init__(self) -> None:
        self.counts = {"reconnects": 0, "resends": 0}
        self.reads = 0

    def _read(self, key: str) -> int:
        value = self.counts[key]
        self.reads += 1
        if self.reads == 1:
            self.counts = {"reconnects": 1, "resends": 1}
        return value

    @property
    def reconnects(self) -> int:
        return self._read("reconnects")

    @property
    def resends(self) -> int:
        return self._read("resends")


def test_a_move_between_the_two_reads_never_shows_a_resend_without_its_reconnect() -> None:
    """``counters()`` reads two ints without a lock; reading ``reconnects`` first, a call moved
    meanwhile showed as ``(0, 1)``: a resend on a connection never made. Read ``resends`` first,
    it shows as ``(1, 0)``, a state that was."""
    client = object.__new__(ShmClient)
    client._pool = _MovedBetweenReads()  # type: ignore[assignment]
    counts = client.counters()
    assert counts == ClientCounters(reconnects=1, resends=0), counts


def test_metadata_and_stats_moved_to_a_restarted_server_count_as_resends(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    server = echo_process()
    with _connect(name) as client:
        _echoed(client)
        server = _crash_and_restart(server, echo_process)
        assert client.metadata("echo")["name"] == "echo"
        assert client.counters() == ClientCounters(reconnects=1, resends=1)
        server = _crash_and_restart(server, echo_process)
        assert client.stats()["requests"] == 0
        assert client.counters() == ClientCounters(reconnects=2, resends=2)


def test_a_request_the_dead_server_had_dispatched_is_no_resend_and_the_next_call_reconnects(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """server_busy was 1 when the server died: the call fails gone, nothing is sent again or
    counted; the call after a restart connects afresh (a reconnect), an ordinary call there."""
    server = echo_process()
    with _connect(name) as client:
        got: list[object] = []

        def call() -> None:
            try:  # a minute of sleep: the server is killed long before, however slow the machine
                got.append(client.infer(InferenceRequest("sleep", {"x": X}, parameters={"ms": 60000})))
            except BaseException as exc:  # reported below
                got.append(exc)

        waiter = threading.Thread(target=call)
        waiter.start()
        assert until(lambda: _busy(name)), "the request never reached the handler"
        server.kill()
        waiter.join(60)
        assert not waiter.is_alive()
        assert type(got[0]) is ServerUnavailable, got
        assert str(got[0]).endswith(f"shm server '{name}' (pid {server.pid}) is gone")
        assert client.counters() == ClientCounters(reconnects=0, resends=0)
        echo_process()
        _echoed(client)
        assert client.counters() == ClientCounters(reconnects=1, resends=0)


def test_a_graceful_stop_and_restart_found_before_publishing_counts_one_of_each(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """The region is STOPPED when the next call looks, before it publishes: the request goes to
    the server started since, on a new connection."""
    server = echo_process()
    with _connect(name) as client:
        _echoed(client)
        server.stop()  # SIGTERM: the server stops gracefully, its region STOPPED
        echo_process()
        _echoed(client)
        assert client.counters() == ClientCounters(reconnects=1, resends=1)
    assert _requests(name) == 1


def test_a_call_whose_reconnect_fails_is_not_counted(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """No server of the name since the crash: the call fails '... not sent again', counting
    neither; once one is up, the next call's connection is the client's one reconnect, and its
    request no resend (it was never moved)."""
    server = echo_process()
    with _connect(name) as client:
        _echoed(client)
        server.kill()
        with pytest.raises(ServerUnavailable, match="not sent again: no server has started"):
            client.infer(ECHO)
        with pytest.raises(ServerUnavailable):  # (no server still: a connect that fails)
            client.infer(ECHO)
        assert client.counters() == ClientCounters(reconnects=0, resends=0)
        echo_process()
        _echoed(client)
        assert client.counters() == ClientCounters(reconnects=1, resends=0)


def test_a_call_whose_new_server_is_gone_before_it_publishes_is_not_counted(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped gracefully and started again, the server is stopped once more right after the
    moved call's channel is claimed on the new connection, before it publishes: the call fails,
    a reconnect made, no resend (nothing was sent there)."""
    first = echo_process()
    with _connect(name) as client:
        _echoed(client)
        conn = client._pool._conn
        first.stop()
        second = echo_process()
        take = client._pool.take

        def take_then_stop(deadline_ns: int, pending_wait: float | None = None) -> _Channel:
            ch = take(deadline_ns, pending_wait)
            if ch.conn is not conn:
                second.stop()  # the region STOPPED (SIGTERM, waited for) before the publish
            return ch

        monkeypatch.setattr(client._pool, "take", take_then_stop)
        with pytest.raises(ServerUnavailable, match="is gone"):
            client.infer(ECHO)
        assert client.counters() == ClientCounters(reconnects=1, resends=0)


def test_a_closed_client_keeps_its_counts(echo_process: Callable[..., EchoProcess], name: str) -> None:
    server = echo_process()
    client = _connect(name)
    try:
        _echoed(client)
        _crash_and_restart(server, echo_process)
        _echoed(client)
    finally:
        client.close()
    assert client.counters() == ClientCounters(reconnects=1, resends=1)
    with pytest.raises(ServerUnavailable, match="is closed"):
        client.infer(ECHO)
    assert client.counters() == ClientCounters(reconnects=1, resends=1)


def test_four_threads_after_a_restart_make_one_reconnect(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """Four idle channels, four calls at once after a SIGKILL and a restart: one new connection
    (claimed on by four threads, counted once); each call moved there is a resend, one that
    found the new connection already made is an ordinary call on it (how many depends on the
    threads' timing: at least the first)."""
    server = echo_process()
    threads = 4
    with _connect(name, channels=threads) as client:
        barrier = threading.Barrier(threads)
        failed: list[BaseException] = []

        def call() -> None:
            barrier.wait()
            try:
                sleep = InferenceRequest("sleep", {"x": X}, parameters={"ms": 100})
                np.testing.assert_array_equal(client.infer_copy(sleep).outputs["x"], X)
            except BaseException as exc:  # reported below
                failed.append(exc)

        def all_at_once() -> None:
            workers = [threading.Thread(target=call) for _ in range(threads)]
            for t in workers:
                t.start()
            for t in workers:
                t.join(60)

        # four idle channels: claimed together (four calls at once claimed three when one
        # thread, run late, came after another's call had ended and took its channel)
        taken = [client._take(0) for _ in range(threads)]
        for ch in taken:
            client._give(ch)
        assert len(client._all) == threads
        _crash_and_restart(server, echo_process)
        all_at_once()
        assert not failed, failed
        counters = client.counters()
        assert counters.reconnects == 1 and 1 <= counters.resends <= threads, counters


def test_counters_read_from_another_thread_while_calls_run_only_grow(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """A thread reads the counters in a loop while this one calls through two crashes and
    restarts: every read succeeds, and the values never go down. A read takes no lock: it
    returns while another thread holds the client's pool lock."""
    server = echo_process()
    with _connect(name) as client:
        seen: list[ClientCounters] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def read() -> None:
            try:
                while not done.wait(0.001):  # (a pause: the calls get the GIL too)
                    seen.append(client.counters())
            except BaseException as exc:  # reported below
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(2):
                for _ in range(20):
                    _echoed(client)
                server = _crash_and_restart(server, echo_process)
                _echoed(client)
            assert until(lambda: len(seen) > 0)
        finally:
            done.set()
            reader.join(60)
        assert not errors, errors
        assert all(
            a.reconnects <= b.reconnects and a.resends <= b.resends for a, b in itertools.pairwise(seen)
        )
        assert client.counters() == ClientCounters(reconnects=2, resends=2)

        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with client._pool._cond:
                held.set()
                release.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(60)
            read_while_held: list[ClientCounters] = []
            reading = threading.Thread(target=lambda: read_while_held.append(client.counters()))
            reading.start()
            reading.join(60)
            assert read_while_held == [ClientCounters(reconnects=2, resends=2)]
        finally:
            release.set()
            holder.join(60)


def test_a_call_waiting_for_a_late_answer_when_its_server_died_counts_one_of_each(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """Spec 7.5: its request not yet written while it waited for an abandoned call's channel, the
    server killed and a new one started: the call goes to the new connection, a resend."""
    server = echo_process("--channels", "1")
    with _connect(name, channels=1) as client:
        got, waiting = _abandoned_then_waiting(client, 30)
        notice = unnoticed(server.pid)
        _crash_and_restart(server, echo_process)
        notice()
        waiting.join(60)
        assert not isinstance(got[0], BaseException), got
        assert client.counters() == ClientCounters(reconnects=1, resends=1)


def test_a_loan_that_reconnects_as_it_begins_counts_a_reconnect_and_its_calls_no_resend(
    echo_process: Callable[..., EchoProcess], name: str, unnoticed: Callable[[int], Callable[[], None]]
) -> None:
    """A loan waiting for an abandoned call's late answer when its server is killed and another
    started is lent a channel of the new connection: a reconnect; its calls are that channel's
    own, never resends. A loan whose server is found gone under it fails, counting nothing."""
    server = echo_process("--channels", "1")
    with _connect(name, channels=1) as client:
        got, waiting = _abandoned_then_waiting(client, 30, loan=True)
        notice = unnoticed(server.pid)
        server = _crash_and_restart(server, echo_process)
        notice()
        waiting.join(60)
        loan = got[0]
        assert isinstance(loan, Loan), loan
        with loan:
            loan["x"][:] = X
            np.testing.assert_array_equal(loan.infer(timeout=30).outputs["x"], X)
            assert client.counters() == ClientCounters(reconnects=1, resends=0)
            _crash_and_restart(server, echo_process)
            with pytest.raises(ServerUnavailable, match="is gone"):
                loan.infer(timeout=30)
        assert client.counters() == ClientCounters(reconnects=1, resends=0)


def test_a_forked_child_counts_its_connection_as_a_reconnect_in_its_copy(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """Spec 10.5: a client used in a child after fork connects anew there, a reconnect counted in
    the child's copy of the counts; the parent's stay as they were."""
    echo_process("--channels", "4")
    code = f"""
        import os, numpy as np
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport
        request = InferenceRequest("echo", {{"x": np.arange(4.0)}})
        client = ShmTransport().connect({name!r}, timeout=30)
        client.infer(request)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            client.infer(request)
            c = client.counters()
            os.write(w, f"{{c.reconnects}} {{c.resends}}".encode())
            os._exit(0)
        os.close(w)
        child = os.read(r, 100).decode()
        _, status = os.waitpid(pid, 0)
        client.infer(request)
        c = client.counters()
        print("child", child, os.waitstatus_to_exitcode(status), "parent", c.reconnects, c.resends)
        client.close()
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "1", "0", "0", "parent", "0", "0"]
