"""Circuit breaker for Foundation: policy, state machine, named-breaker registry and wrapper."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
    from ._policy import MODES, CircuitBreakerPolicy
    from ._registry import BreakerRegistry, breakers
    from ._wrap import circuit_breaker_factory

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "MODES",
    "OPEN",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "breakers",
    "circuit_breaker_factory",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CLOSED": "._breaker",
        "HALF_OPEN": "._breaker",
        "OPEN": "._breaker",
        "CircuitBreaker": "._breaker",
        "MODES": "._policy",
        "CircuitBreakerPolicy": "._policy",
        "BreakerRegistry": "._registry",
        "breakers": "._registry",
        "circuit_breaker_factory": "._wrap",
    },
)
