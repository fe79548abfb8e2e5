"""Named circuit breakers: one breaker per name, shared by every function protected under it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from foundation_core._clock import SYSTEM_CLOCK, Clock
from foundation_core.errors import PolicyError

from ._breaker import CircuitBreaker
from ._policy import CircuitBreakerPolicy

__all__ = ["BreakerRegistry", "breakers"]


class BreakerRegistry:
    """Breakers by name. Asking again for a name returns the same breaker (shared state); asking
    with a different policy for a taken name is a :class:`PolicyError`."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get_or_create(self, policy: CircuitBreakerPolicy, clock: Clock | None = None) -> CircuitBreaker:
        with self._lock:
            held = self._breakers.get(policy.name)
            if held is None:
                held = self._breakers[policy.name] = CircuitBreaker(policy, clock or SYSTEM_CLOCK)
            elif held.policy != policy:
                raise PolicyError(
                    "circuit_breaker",
                    "name",
                    policy.name,
                    f"a name not already used by a breaker with another policy (held: {held.policy!r})",
                )
            return held

    def get(self, name: str) -> CircuitBreaker | None:
        return self._breakers.get(name)

    def remove(self, name: str) -> None:
        with self._lock:
            self._breakers.pop(name, None)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter([self._breakers[n] for n in sorted(self._breakers)])

    def __len__(self) -> int:
        return len(self._breakers)


#: The process-wide registry ``circuit_breaker_factory`` uses unless given another.
breakers = BreakerRegistry()
