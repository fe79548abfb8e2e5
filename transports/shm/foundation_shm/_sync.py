"""Spin-then-block waiting on a shared sequence word, and the full fence the sleep protocol needs.

The waiter spins on the word for a window, then publishes "sleeping", fences, re-checks, and
blocks on its semaphore in short slices; the waker stores the word, fences, and posts the semaphore
only if the peer published "sleeping" (docs/protocol/shm.md, section 7).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import posix_ipc

from ._accel import hot

__all__ = ["SLICE_S", "AdaptiveSpin", "fence", "wait_seq"]

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
            except posix_ipc.BusyError:
                pass
            if words[index] == want:
                break
            check()
        return True
    finally:
        sleeping[sleeping_index] = 0


class AdaptiveSpin:
    """Chooses, per wait, between spinning up to ``max_ns`` and blocking at once, by which has
    been faster lately (the median of each one's last few waits), trying the other every
    ``explore`` waits. On an idle machine spinning wins by ~100 µs (an idle vCPU wakes slowly);
    on an oversubscribed one blocking wins (spinners lose their CPU to the scheduler's fairness
    while the peer they wait for needs it), so the choice follows the machine. Medians, not
    means: the arm that is only explored gets few samples, and one unlucky one must not decide."""

    __slots__ = ("_count", "_last", "_median", "_recent", "explore", "max_ns")

    def __init__(self, max_ns: int, explore: int = 256, keep: int = 5) -> None:
        self.max_ns = max_ns
        self.explore = explore
        self._recent: tuple[deque[int], deque[int]] = (deque(maxlen=keep), deque(maxlen=keep))
        self._median = [math.inf, math.inf]  # [spinning, blocking] wait times, ns (inf: untried)
        self._count = 0
        self._last = -1

    def window(self) -> int:
        if not self.max_ns:
            return 0
        self._count += 1
        spin = self._median[0] <= self._median[1]
        if self._count % self.explore == 0:
            spin = not spin
        return self.max_ns if spin else 0

    def record(self, window: int, waited_ns: int) -> None:
        arm = 0 if window else 1
        recent = self._recent[arm]
        recent.append(waited_ns)
        if arm != self._last or self._count % 8 == 0:  # the arm in use: a fresh median now and then
            self._median[arm] = sorted(recent)[len(recent) // 2]
        self._last = arm
