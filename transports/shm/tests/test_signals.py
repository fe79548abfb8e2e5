"""A signal that has a Python handler (SIGTERM, SIGINT in a server; whatever an application
handles) goes to any thread of the process that does not block it. A thread asleep on a POSIX
semaphore then gets ``posix_ipc.SignalError`` once the handler has run (in the main thread: the
thread that waited only sees the interrupted wait). The server's serving loop, its heartbeat, and a
client's waits take that for what it is: a wake-up, not a failure."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._echo import EchoHandler
from foundation_shm._ownership import region_mutex

from foundation_ml import InferenceRequest, InferenceResponse

from .conftest import EchoProcess, HeldHandler, until

pytestmark = pytest.mark.slow

X = np.arange(4, dtype=np.float32)
SYS_FUTEX, SYS_TGKILL = 202, 234  # x86-64, the only machine the transport runs on
FUTEX_PRIVATE_FLAG = 0x80


def _waits_on_a_named_semaphore(thread: threading.Thread | int, pid: int | str = "self") -> bool:
    """Whether ``thread`` (of process ``pid``) is blocked in a futex wait on shared memory: a
    named POSIX semaphore (``sem_timedwait``); Python's own locks and events wait on private
    futexes."""
    tid = thread.native_id if isinstance(thread, threading.Thread) else thread
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:  # the thread has ended
        return False
    return len(fields) > 2 and fields[0] == str(SYS_FUTEX) and not int(fields[2], 16) & FUTEX_PRIVATE_FLAG


@pytest.fixture
def handled() -> Iterator[list[int]]:
    """SIGUSR1 with a Python handler (which does nothing but count, in the main thread)."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
    yield caught
    signal.signal(signal.SIGUSR1, previous)


def _interrupt(thread: threading.Thread, caught: list[int], still: Callable[[], bool] = lambda: True) -> None:
    """Send SIGUSR1 to ``thread`` while it sleeps on a named semaphore (``still()`` holding), and
    wait for the handler to have run."""
    assert until(lambda: _waits_on_a_named_semaphore(thread) and still()), "the thread never slept"
    seen = len(caught)
    assert thread.ident is not None
    signal.pthread_kill(thread.ident, signal.SIGUSR1)
    assert until(lambda: len(caught) > seen), "the signal's handler never ran"


def test_a_signal_that_lands_on_the_serving_loop_asleep_on_its_bell_does_not_end_it(
    name: str, handled: list[int]
) -> None:
    """The serving loop, idle, sleeps on its doorbell (sem_timedwait). A SIGTERM sent to the
    server went, now and then, to that thread rather than the main one: the wait failed with
    posix_ipc.SignalError, which ended the loop ('the serving loop died', the region STOPPED, the
    heartbeat gone); the echo server's main thread, never woken, then ignored the SIGTERM for
    good (seen once in a loaded CI run of the Rust tests). The loop sleeps on."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        sleeping = L.RegionField.SERVER_SLEEPING // 4
        with ShmTransport().connect(name, timeout=30) as client:
            for _ in range(5):
                _interrupt(server._loop_thread, handled, lambda: bool(server._ctl.u32[sleeping]))
                assert server.failed is None, server.failed
                np.testing.assert_array_equal(
                    client.infer(InferenceRequest("echo", {"x": X})).outputs["x"], X
                )
        assert server._loop_thread.is_alive()
    finally:
        server.stop()


def test_a_signal_that_lands_on_the_heartbeat_waiting_to_reclaim_a_channel_is_no_failure(
    name: str, handled: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat waits up to a second for the region mutex to reclaim a channel given back. A
    signal landing on it then was logged as 'reaping dead clients failed', with a traceback of
    posix_ipc.SignalError. It waits on, and reclaims the channel once the mutex is free."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        with ShmTransport().connect(name, timeout=30) as client:
            client.infer(InferenceRequest("echo", {"x": X}))
            conn = client._connection()
            (ch,) = client._all
            owner = (ch.base + L.ChannelField.OWNER_PID) // 4
            with region_mutex(conn, 5):
                # given back without the mutex (spec 10.1): the server reclaims it (10.4)
                conn.ctl.u64[(ch.base + L.ChannelField.OWNER_START) // 8] = 0
                conn.alive = False  # (close() gives nothing back a second time)
                _interrupt(server._beat_thread, handled)
            assert until(lambda: not server._ctl.u32[owner]), "the channel was never reclaimed"
        assert "reaping dead clients failed" not in caplog.text
        assert server.failed is None
    finally:
        server.stop()


def test_a_sigterm_that_lands_on_the_echo_servers_serving_loop_stops_it_cleanly(
    echo_process: Callable[..., EchoProcess],
) -> None:
    """What a loaded CI run saw once: the Rust tests' SIGTERM to an echo server went to its
    serving loop's thread, asleep on the doorbell; the loop died of posix_ipc.SignalError, and the
    main thread never woke to stop. The SIGTERM is sent to that thread here (tgkill); the server
    stops as it should, status 0, and its stderr does not say the loop died."""
    server = echo_process("--channels", "2")
    with ShmTransport().connect(server.name, timeout=30) as client:
        client.infer(InferenceRequest("echo", {"x": X}))
    sleepers = lambda: [  # noqa: E731
        int(t)
        for t in os.listdir(f"/proc/{server.pid}/task")
        if _waits_on_a_named_semaphore(int(t), server.pid)
    ]
    assert until(lambda: len(sleepers()) == 1), "no thread of the echo server sleeps on its doorbell"
    (loop,) = sleepers()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(SYS_TGKILL, server.pid, loop, signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
    _, err = server.proc.communicate(timeout=60)
    assert "serving loop died" not in err, err
    assert server.proc.returncode == 0, err


def test_a_signal_that_lands_on_a_client_waiting_for_its_answer_does_not_fail_the_call(
    name: str, handled: list[int]
) -> None:
    """A client call asleep on its channel's semaphore, waiting for an answer, raised
    posix_ipc.SignalError (no error of ours, its request left with the server) when a signal with
    a Python handler landed on its thread. It waits on, and gets its answer."""
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=2)
    try:
        with ShmTransport().connect(name, timeout=30, spin_us=0) as client:
            got: list[object] = []

            def call() -> None:
                try:
                    got.append(client.infer(InferenceRequest("held", {"x": X}), timeout=60))
                except BaseException as exc:
                    got.append(exc)

            caller = threading.Thread(target=call)
            caller.start()
            try:
                _interrupt(caller, handled, lambda: bool(handler.held))
            finally:
                assert until(lambda: bool(handler.held))
                request, respond = handler.held[0]
                respond(InferenceResponse(request.id, "held", {"x": X}))
                caller.join(60)
            assert len(got) == 1 and isinstance(got[0], InferenceResponse), got
            np.testing.assert_array_equal(got[0].outputs["x"], X)
    finally:
        server.stop()


def test_a_signal_that_lands_on_a_client_waiting_for_the_region_mutex_does_not_fail_it(
    name: str, handled: list[int]
) -> None:
    """A wait for the region mutex (a connect's claim, a close) raised posix_ipc.SignalError when
    a signal with a Python handler landed on its thread. It waits on, for the time it has left."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        with ShmTransport().connect(name, timeout=30) as holder:
            conn = holder._connection()
            got: list[object] = []
            with region_mutex(conn, 5):

                def connect() -> None:
                    try:
                        with ShmTransport().connect(name, timeout=60, connect_timeout=60) as client:
                            got.append(client.infer(InferenceRequest("echo", {"x": X})))
                    except BaseException as exc:
                        got.append(exc)

                claimer = threading.Thread(target=connect)
                claimer.start()
                _interrupt(claimer, handled)
            claimer.join(60)
            assert len(got) == 1 and isinstance(got[0], InferenceResponse), got
    finally:
        server.stop()
