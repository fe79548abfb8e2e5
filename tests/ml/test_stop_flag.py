"""``StopFlag``: set from a signal handler without a lock, waited on by a serving loop."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from foundation_ml import _stop_flag
from foundation_ml._stop_flag import StopFlag


def test_wait_ends_at_its_timeout_unset_and_at_once_once_set() -> None:
    flag = StopFlag()
    assert flag.wait(0.01) is False and not flag.is_set()
    threading.Timer(0.05, flag.set).start()
    assert flag.wait(60) is True and flag.is_set()
    assert flag.wait(0) is True


def test_a_handler_that_runs_inside_wait_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal's handler runs in the waiting thread itself, at any point of its wait: with
    threading.Event it could run while that thread held the event's lock, and its set() then
    waited for that lock for ever. Here the handler runs in the middle of wait()'s sleep."""
    flag = StopFlag()
    sleep = time.sleep
    calls: list[float] = []

    def interrupted(seconds: float) -> None:
        calls.append(seconds)
        flag.set()  # what the handler does, in this thread, mid-wait
        sleep(0)

    monkeypatch.setattr(_stop_flag.time, "sleep", interrupted)
    assert flag.wait(None) is True
    assert len(calls) == 1


def test_a_real_signal_stops_a_wait_without_a_timeout() -> None:
    flag = StopFlag()
    previous = signal.signal(signal.SIGALRM, lambda *_: flag.set())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        assert flag.wait(None) is True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_set_takes_no_lock_so_a_thread_holding_the_waiters_locks_can_set_it() -> None:
    """threading.Event().set() with the event's own lock held by the same thread (as a handler
    run inside Event.wait() is) never returns; StopFlag.set() holds nothing to wait for."""
    flag = StopFlag()
    lock = threading.Lock()
    with lock:
        flag.set()
    assert flag.is_set()
    event = threading.Event()
    with event._cond:  # type: ignore[attr-defined]  # where a handler inside Event.wait() may run
        assert not event._cond._lock.acquire(timeout=0.05)  # type: ignore[attr-defined]  # set() would wait here
