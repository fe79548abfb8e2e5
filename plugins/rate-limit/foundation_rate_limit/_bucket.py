"""The token bucket: one short lock per call decides "go now", "wait this long" or "refuse"."""

from __future__ import annotations

import threading

from foundation_core._clock import Clock, deadline_var
from foundation_core._events import emit
from foundation_core.errors import RateLimited

from ._policy import RateLimitPolicy

__all__ = ["TokenBucket"]


class TokenBucket:
    """``reserve()`` returns the seconds to wait before proceeding (0.0 for "now") or raises.

    A granted wait reserves its token at once (the balance may go below zero), so waiters are
    served in arrival order and never more than ``rate`` per second on average. A wait that is
    abandoned hands its token back (``give_back``) only if no later wait was granted meanwhile:
    the balance only knows how many tokens are owed, not to whom, so a token handed back from
    the middle of the queue would give a newcomer the last waiter's start time (two calls at
    once past ``burst``); such a slot stays unused instead. The lock is never held across a
    wait, so sync threads and asyncio tasks can share one bucket.
    """

    __slots__ = ("_lock", "_stamp", "_tokens", "_waits", "clock", "name", "policy")

    def __init__(self, policy: RateLimitPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.name = policy.name
        self._tokens = float(policy.burst)
        self._stamp = clock.now()
        self._waits = 0  # waits granted so far (less those handed back): the last one's slot
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token now or reserve the next one; the seconds to wait first."""
        return self.reserve_slot()[0]

    def reserve_slot(self) -> tuple[float, int]:
        """``(wait, slot)``: take a token now (``(0.0, 0)``) or reserve the next one; ``slot``
        identifies a granted wait to ``give_back``. A wait longer than ``max_wait``, or one that
        would end after an enclosing timeout's deadline, is refused at once: the timeout would
        cut it short anyway, after the dependency had been called late or not at all."""
        limit = self.policy.max_wait  # None: no limit on the wait
        deadline = deadline_var.get()
        slot = 0
        with self._lock:
            now = self.clock.now()
            tokens = self.policy.refill(self._tokens, now - self._stamp)
            self._stamp = now
            wait = self.policy.wait_for(tokens)
            refused = wait > 0.0 and (
                (limit is not None and wait > limit) or (deadline is not None and now + wait > deadline)
            )
            self._tokens = tokens if refused else tokens - 1.0
            if wait > 0.0 and not refused:
                self._waits += 1
                slot = self._waits
        if refused:
            emit("rate_limited", name=self.name, retry_after=wait)
            raise RateLimited(self.name, wait)
        return wait, slot

    def give_back(self, slot: int) -> bool:
        """Return the token of the granted wait ``slot`` that was abandoned (cancelled,
        interrupted): its caller never reached the dependency, so the token is the next
        caller's, not lost. Only the last granted wait can: whether it did is returned."""
        with self._lock:
            if slot != self._waits:  # a later wait holds the last slot: leave this one's empty
                return False
            self._waits -= 1
            now = self.clock.now()
            tokens = self.policy.refill(self._tokens, now - self._stamp)
            self._stamp = now
            self._tokens = min(float(self.policy.burst), tokens + 1.0)
            return True

    @property
    def tokens(self) -> float:
        """Tokens available now (may be negative while waiters hold reservations)."""
        with self._lock:
            return self.policy.refill(self._tokens, self.clock.now() - self._stamp)
