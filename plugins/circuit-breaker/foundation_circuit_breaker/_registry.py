"""Named circuit breakers: one breaker per name (and clock), shared by every function protected under it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from foundation_core._clock import SYSTEM_CLOCK, Clock
from foundation_core.errors import PolicyError

from ._breaker import CircuitBreaker
from ._policy import CircuitBreakerPolicy

__all__ = ["BreakerRegistry", "breakers"]


class BreakerRegistry:
    """Breakers by name and clock. Asking again for a name on the same clock returns the same
    breaker (shared state); asking with a different policy for a taken name is a
    :class:`PolicyError`.

    A breaker lives on one clock, so the same name on another clock is another breaker: a test or
    the conformance suite driving ``"payments"`` on a ``VirtualClock`` never hands its frozen-time
    breaker to production code asking for ``"payments"`` on the system clock, nor the reverse.
    """

    def __init__(self) -> None:
        # keyed by the clock's identity: a Clock need not be hashable; the breaker keeps it alive
        self._breakers: dict[tuple[str, int], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get_or_create(self, policy: CircuitBreakerPolicy, clock: Clock | None = None) -> CircuitBreaker:
        clk = clock or SYSTEM_CLOCK
        with self._lock:
            held = self._breakers.get((policy.name, id(clk)))
            if held is None:
                held = self._breakers[policy.name, id(clk)] = CircuitBreaker(policy, clk)
            elif held.policy != policy:
                raise PolicyError(
                    "circuit_breaker",
                    "name",
                    policy.name,
                    f"a name not already used by a breaker with another policy (held: {held.policy!r})",
                )
            return held

    def get(self, name: str, clock: Clock | None = None) -> CircuitBreaker | None:
        """The breaker named ``name`` on ``clock`` (default: the system clock), if any."""
        return self._breakers.get((name, id(clock or SYSTEM_CLOCK)))

    def remove(self, name: str, clock: Clock | None = None) -> None:
        """Forget the breaker named ``name`` on ``clock``; with no clock, on every clock."""
        with self._lock:
            for key, held in list(self._breakers.items()):
                if held.name == name and (clock is None or held.clock is clock):
                    del self._breakers[key]

    def remove_clock(self, clock: Clock) -> None:
        """Forget every breaker on ``clock``: a finished test's or conformance case's virtual
        clock, whose breakers nothing else can use."""
        with self._lock:
            for key, held in list(self._breakers.items()):
                if held.clock is clock:
                    del self._breakers[key]

    def __iter__(self) -> Iterator[CircuitBreaker]:
        """By name; of one name on several clocks, the system clock's first."""
        held = list(self._breakers.values())
        return iter(sorted(held, key=lambda b: (b.name, b.clock is not SYSTEM_CLOCK)))

    def __len__(self) -> int:
        return len(self._breakers)


#: The process-wide registry ``circuit_breaker_factory`` uses unless given another.
breakers = BreakerRegistry()
