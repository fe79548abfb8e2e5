"""Spin-then-block waiting on a shared sequence word, and the full fence the sleep protocol needs.

The waiter spins on the word for a window, then publishes "sleeping", fences, re-checks, and
blocks on its semaphore in short slices; the waker stores the word, fences, and posts the semaphore
only if the peer published "sleeping" (docs/protocol/shm.md, section 7).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import posix_ipc

from ._accel import hot

if TYPE_CHECKING:
    from ._segments import Segment

__all__ = ["SLICE_S", "AdaptiveSpin", "fence", "poll_channels", "wait_seq"]

SLICE_S = 0.05  # a blocked waiter wakes at least this often to check deadline and peer liveness
# After this long spinning, a spinner yields its CPU between polls: on a machine with more runnable
# threads than CPUs (2 vCPUs: a server and two clients) the peer it waits for may need that CPU.
YIELD_AFTER_NS = int(os.environ.get("FDN_YIELD_AFTER_NS", "20000"))
_yield = os.sched_yield
_fence_lock = threading.Lock()


def _py_fence() -> None:
    """A full memory barrier: an atomic read-modify-write (an uncontended lock) orders a store
    before a later load, which x86-64's TSO alone does not."""
    _fence_lock.acquire()
    _fence_lock.release()


fence: Callable[[], None] = hot.fence if hot is not None else _py_fence


def _py_poll(
    u64: memoryview,
    u32: memoryview,
    cseq: list[int],
    sseq: list[int],
    busy: list[int],
    spin_ns: int,
    yield_ns: int,
    epoch_word: int,
    epoch: int,
    start: int,
) -> int:
    """``_hot.poll`` in Python (the same answers; see _hot.c): the position of the first channel
    from ``start`` on, round the ring, with a pending request (cseq != sseq, busy word 0); -2 if
    the epoch word changed; -1 once ``spin_ns`` passed."""
    n = len(cseq)
    first = start % n if n else 0
    ring: list[int] = [*range(first, n), *range(first)]
    clock = time.monotonic_ns
    t0 = clock()
    end, polite = t0 + spin_ns, t0 + yield_ns
    while True:
        for i in ring:
            if u64[cseq[i]] != u64[sseq[i]] and not u32[busy[i]]:
                return i
        if u64[epoch_word] != epoch:
            return -2
        now = clock()
        if now > end:
            return -1
        if now > polite:
            _yield()


def poll_channels(ctl: Segment) -> Callable[..., int]:
    """The server's scan over the control segment ``ctl``: ``poll(cseq, sseq, busy, spin_ns,
    yield_ns, epoch_word, epoch, start)``, in C with the GIL released when it is built."""
    if hot is not None:
        return functools.partial(hot.poll, ctl.buf)
    return functools.partial(_py_poll, ctl.u64, ctl.u32)


def wait_seq(
    words: memoryview,
    index: int,
    want: int,
    spin_ns: int,
    sleeping: memoryview,
    sleeping_index: int,
    sem: posix_ipc.Semaphore,
    deadline_ns: int,
    check: Callable[[], None],
) -> bool:
    """Wait until ``words[index] == want``; False if ``deadline_ns`` (0: none) passes first.

    ``check()`` runs between slices and raises if the peer is gone.
    """
    if words[index] == want:
        return True
    clock = time.monotonic_ns
    if spin_ns and hot is not None:  # the C spin: no interpreter in the loop, GIL released
        if hot.spin(words, index, want, spin_ns, YIELD_AFTER_NS):
            return True
    elif spin_ns:
        start = clock()
        end = start + spin_ns
        polite = start + YIELD_AFTER_NS
        while True:
            if words[index] == want:
                return True
            now = clock()
            if now > end:
                break
            if now > polite:
                _yield()
    sleeping[sleeping_index] = 1
    fence()
    try:
        while words[index] != want:
            if deadline_ns:
                left = deadline_ns - clock()
                if left <= 0:
                    return False
                timeout = min(SLICE_S, left / 1e9)
            else:
                timeout = SLICE_S
            try:
                sem.acquire(timeout)
            except (posix_ipc.BusyError, posix_ipc.SignalError):  # SignalError: a signal's Python
                pass  # handler ran on this thread (one that raises, KeyboardInterrupt, propagates)
            if words[index] == want:
                break
            check()
        return True
    finally:
        sleeping[sleeping_index] = 0


class AdaptiveSpin:
    """Chooses, per wait, between spinning up to ``max_ns`` and blocking at once, by how often a
    spin has lately ended with the response (an average over the last ~8 spins): while at least
    half do, it spins; once most run out their window (the peer is slower than the window, or the
    machine is oversubscribed and the spinner takes the CPU its peer needs), it blocks at once and
    every ``explore`` waits spins for ``probe`` waits in a row to see whether that changed. In a
    row: while this side blocks, its peer soon blocks too (nothing arrives within its own spin),
    so the first probe meets a sleeping peer and fails; the next ones show what spinning gives.

    A spin that ends with the response is never slower than blocking (an idle vCPU takes ~100 µs
    to wake here), so its success is the signal, not its latency: the medians of both arms' wait
    times, used before, are noisy on a busy machine, and a few bad samples of the spin arm (which
    is only explored) locked a single client into blocking at two to four times the latency."""

    __slots__ = ("_count", "_hits", "explore", "max_ns", "probe")

    def __init__(self, max_ns: int, explore: int = 64, probe: int = 4) -> None:
        self.max_ns = max_ns
        self.explore = explore
        self.probe = probe
        self._hits = 1.0  # moving average of spins that got the response within their window
        self._count = 0

    def window(self) -> int:
        if not self.max_ns:
            return 0
        self._count += 1
        if self._hits >= 0.5 or self._count % self.explore < self.probe:
            return self.max_ns
        return 0

    def record(self, window: int, waited_ns: int) -> None:
        if window:
            self._hits += ((waited_ns <= window) - self._hits) * 0.125
