"""Circuit breaker for Foundation: policy, state machine, named-breaker registry and wrapper."""

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
