"""Sliding windows of call outcomes: the last N calls, or the calls of the last N seconds."""

from __future__ import annotations

import itertools
import threading

__all__ = ["CountWindow", "TimeWindow"]


class CountWindow:
    """The outcomes of the last ``size`` calls, recorded without a lock.

    A call takes a slot index from ``itertools.count`` (its ``next`` is atomic under the GIL) and
    stores 0 or 1 there (a list item store is atomic too), so concurrent calls never corrupt the
    ring; slots never written hold -1. Counts are taken only when a failure asks whether to trip.
    """

    __slots__ = ("_counter", "_ring", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = [-1] * size
        self._counter = itertools.count()

    def record(self, now: float, failed: int) -> None:
        self._ring[next(self._counter) % self.size] = failed

    def totals(self, now: float) -> tuple[int, int]:
        """``(calls, failures)`` in the window."""
        ring = self._ring
        return self.size - ring.count(-1), ring.count(1)


class TimeWindow:
    """Calls and failures per one-second bucket over the last ``size`` seconds.

    A bucket is reused when its second has passed out of the window; that rollover and the
    increments share one short lock (no lock-free way to reset and count together).
    """

    __slots__ = ("_calls", "_fails", "_lock", "_stamps", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._stamps = [-(10**9)] * size
        self._calls = [0] * size
        self._fails = [0] * size
        self._lock = threading.Lock()

    def record(self, now: float, failed: int) -> None:
        sec = int(now // 1)
        i = sec % self.size
        with self._lock:
            if self._stamps[i] != sec:
                self._stamps[i] = sec
                self._calls[i] = 0
                self._fails[i] = 0
            self._calls[i] += 1
            self._fails[i] += failed

    def totals(self, now: float) -> tuple[int, int]:
        sec = int(now // 1)
        calls = failures = 0
        with self._lock:
            for stamp, c, f in zip(self._stamps, self._calls, self._fails, strict=True):
                if 0 <= sec - stamp < self.size:
                    calls += c
                    failures += f
        return calls, failures
