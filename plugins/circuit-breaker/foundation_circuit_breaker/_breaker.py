"""The circuit breaker state machine, shared by the sync and the async adapter.

Thread safety: the closed-state success path takes no lock. In consecutive mode it clears the
failure streak with one attribute store (atomic in CPython); racing with a failure it can at worst
forget one failure of a streak, never corrupt state. Count windows record lock-free (see
``CountWindow``). Every state transition, every failure, half-open permits and time-window
buckets go through one short ``threading.Lock`` that is never held across a call or an ``await``,
so the same object is safe from threads and from asyncio tasks.
"""

from __future__ import annotations

import threading
from typing import Any

from foundation_core._clock import Clock
from foundation_core._events import emit
from foundation_core.errors import CircuitOpenError, RateLimited

from ._policy import CircuitBreakerPolicy
from ._windows import CountWindow, TimeWindow

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """One named circuit: ``before_call()`` -> call -> ``on_success(probe)`` / ``on_error(e, probe)``.

    ``state`` is read without a lock on every call; only a non-closed state calls ``before_call``,
    which either refuses (``CircuitOpenError``) or returns the probe's ticket: for a half-open
    probe the number of the half-open period that admitted it (1, 2, ...), else 0. The ticket
    goes back with the outcome, which counts only in that period: a probe admitted before the
    circuit re-opened that ends during a later half-open period neither closes the circuit nor
    hands its permit to the new period, which would let more than ``half_open_max_calls`` in.
    """

    __slots__ = (
        "_lock",
        "_opened_at",
        "_period",
        "_permits",
        "_probe_ok",
        "_streak",
        "_window",
        "clock",
        "name",
        "opened",
        "policy",
        "rejected",
        "state",
    )

    def __init__(self, policy: CircuitBreakerPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.name = policy.name
        self.state = CLOSED
        self._lock = threading.Lock()
        self._streak = 0
        self._window = self._new_window()
        self._opened_at = 0.0
        self._permits = 0
        self._period = 0  # half-open periods so far; tags each probe's permit
        self._probe_ok = 0
        self.rejected = 0
        self.opened = 0

    def _new_window(self) -> CountWindow | TimeWindow | None:
        mode = self.policy.mode
        if mode == "count":
            return CountWindow(self.policy.window_size)
        if mode == "time":
            return TimeWindow(self.policy.window_size)
        return None

    # --- the call protocol --------------------------------------------------------------------

    def before_call(self) -> int:
        """Admit a call in a non-closed state: a half-open probe gets its period's number, a call
        that finds the circuit closed again meanwhile 0; otherwise raise ``CircuitOpenError``."""
        event = None
        with self._lock:
            if self.state == OPEN:
                wait = self._opened_at + self.policy.reset_timeout - self.clock.now()
                if wait > 0:
                    self.rejected += 1
                    raise CircuitOpenError(self.name, wait)
                event = self._to(HALF_OPEN)
            if self.state == HALF_OPEN:
                if self._permits <= 0:
                    self.rejected += 1
                    raise CircuitOpenError(self.name, 0.0)
                self._permits -= 1
                probe = self._period
            else:  # closed again meanwhile
                probe = 0
        self._emit(event)
        return probe

    def on_success(self, probe: int = 0) -> None:
        if probe:
            self._probe_done(probe, True)
        elif self._window is not None:
            self._window.record(self.clock.now(), 0)
        elif self._streak:
            self._streak = 0

    def on_error(self, error: BaseException, probe: int = 0) -> None:
        if isinstance(error, RateLimited):
            pass  # refused by a rate limiter inside the breaker: the dependency was never called
        elif self.policy.counts_as_failure(error):
            self.on_failure(probe)
            return
        elif isinstance(error, Exception):
            self.on_success(probe)
            return
        if probe:  # cancelled, interrupted or throttled: says nothing about health; permit back
            with self._lock:
                if self.state == HALF_OPEN and probe == self._period:
                    self._permits += 1

    def on_failure(self, probe: int = 0) -> None:
        if probe:
            self._probe_done(probe, False)
            return
        event = None
        with self._lock:
            # read under the lock: a window taken before it could be the one a probe's closing
            # just replaced, and its old failures would re-open the circuit at once
            window = self._window
            if window is not None:
                now = self.clock.now()
                window.record(now, 1)
                calls, failures = window.totals(now)
            else:
                self._streak += 1
                calls = failures = self._streak
            if self.state == CLOSED and self.policy.should_open(calls, failures):
                event = self._to(OPEN, calls, failures)
        self._emit(event)

    def _probe_done(self, probe: int, ok: bool) -> None:
        with self._lock:
            if self.state != HALF_OPEN or probe != self._period:  # a stale probe: not this period's
                return
            if not ok:
                event = self._to(OPEN)
            else:
                self._probe_ok += 1
                if self._probe_ok < self.policy.half_open_max_calls:
                    return
                event = self._to(CLOSED, self._probe_ok, 0)
        self._emit(event)

    # --- transitions (called with the lock held) ----------------------------------------------

    def _to(self, new: str, calls: int = 0, failures: int = 0) -> dict[str, Any]:
        old, self.state = self.state, new
        if new == OPEN:
            self._opened_at = self.clock.now()
            self.opened += 1
        elif new == HALF_OPEN:
            self._period += 1
            self._permits = self.policy.half_open_max_calls
            self._probe_ok = 0
        else:
            self._streak = 0
            self._window = self._new_window()
        rate = failures / calls if calls else 0.0
        return {"name": self.name, "old_state": old, "new_state": new, "failure_rate": rate, "calls": calls}

    @staticmethod
    def _emit(event: dict[str, Any] | None) -> None:
        if event is not None:
            emit("circuit_change", **event)

    # --- introspection ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """State and counts, for ``foundation breakers`` and dashboards."""
        now = self.clock.now()
        if self._window is not None:
            calls, failures = self._window.totals(now)
        else:
            calls = failures = self._streak
        retry_after = (
            max(0.0, self._opened_at + self.policy.reset_timeout - now) if self.state == OPEN else 0.0
        )
        return {
            "name": self.name,
            "state": self.state,
            "mode": self.policy.mode,
            "calls": calls,
            "failures": failures,
            "failure_rate": failures / calls if calls else 0.0,
            "rejected": self.rejected,
            "opened": self.opened,
            "retry_after": retry_after,
        }

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state}>"
