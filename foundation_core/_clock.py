"""Injected time for the resilience patterns: the system clock, a virtual clock, and deadlines.

Patterns never call ``time`` or ``asyncio.sleep`` directly; they take a :class:`Clock`, so tests
and the conformance runner drive them on a :class:`VirtualClock` that never really sleeps. The
deadline context variable lets an outer timeout tell inner patterns (retry) how much time is left.
"""

from __future__ import annotations

import math
import threading
import time
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

__all__ = [
    "SYSTEM_CLOCK",
    "check_clock",
    "Clock",
    "SystemClock",
    "VirtualClock",
    "current_deadline",
    "deadline_var",
]

#: The absolute time (on the pattern's clock) by which the current call must finish, if any.
deadline_var: ContextVar[float | None] = ContextVar("foundation_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline an enclosing timeout set for this call (clock time), or ``None``."""
    return deadline_var.get()


@runtime_checkable
class Clock(Protocol):
    """What a pattern needs of time: read it, and wait (blocking or awaiting)."""

    virtual: bool

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic wall time; ``sleep`` blocks the thread, ``asleep`` yields to the event loop."""

    __slots__ = ()
    virtual = False
    #: ``time.monotonic`` itself, not a method wrapping it: no extra frame on the hot path.
    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # not at module level: the core stays cheap to import

        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def check_clock(clock: object, factory: str) -> Clock:
    """The clock a pattern's ``factory`` was given, :data:`SYSTEM_CLOCK` for None. Anything else
    without a Clock's ``virtual``, ``now``, ``sleep`` and ``asleep`` (``clock=time.monotonic``) is
    a ``TypeError`` naming the factory when the decorator is built: taken, it failed each call
    with an AttributeError, a breaker's only at the failure that opened it (then open)."""
    if clock is None:
        return SYSTEM_CLOCK
    if not isinstance(clock, Clock):
        raise TypeError(
            f"{factory}: clock must be a foundation_core.Clock (virtual, now(), sleep(), asleep()), such as"
            f" VirtualClock() or SYSTEM_CLOCK, not {type(clock).__name__} {clock!r}"
        )
    return clock


class VirtualClock:
    """A clock that only moves when told to: ``sleep`` advances it at once and records the wait.

    ``sleeps`` lists every wait a pattern asked for, in order; ``advance`` moves time without
    recording (the protected function "taking" time, or a test letting time pass).
    """

    __slots__ = ("_lock", "_now", "sleeps")
    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a virtual clock cannot go back (advance({seconds!r}))")
        if not math.isfinite(seconds):  # NaN passed the check above; either would stick to _now
            raise ValueError(f"a virtual clock advances by a finite number of seconds, not {seconds!r}")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio

        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep would be

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r})"
