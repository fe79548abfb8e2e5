"""The retry policy: a frozen, validated attrs class whose delay maths is a pure function."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from foundation_core import is_coroutine_callable
from foundation_core._policy import exception_set, in_range, is_bool, one_of, optional_in_range
from foundation_core.errors import CircuitOpenError, PolicyError

__all__ = ["BACKOFFS", "RetryPolicy"]

BACKOFFS = ("fixed", "linear", "exponential", "decorrelated")
_P = "retry"


def _to_retry_on(value: Any) -> tuple[Any, ...]:
    return _only_exceptions("retry_on", value, exception_set("retry", "retry_on", value))


def _only_exceptions(parameter: str, value: Any, types: tuple[Any, ...]) -> tuple[Any, ...]:
    """Refuse a class that matches only BaseExceptions that are not Exceptions (KeyboardInterrupt,
    CancelledError, SystemExit): those are never retried, so listing one could only mislead.
    ``BaseException`` (and ``BaseExceptionGroup``) stay allowed: they match Exceptions too."""
    for cls in types:
        if not issubclass(cls, Exception) and cls not in (BaseException, BaseExceptionGroup):
            raise PolicyError(
                _P,
                parameter,
                value,
                f"Exception classes or their names ({cls.__name__} is not an Exception: "
                f"a cancellation or an interrupt is never retried)",
            )
    return types


def _to_no_retry_on(value: Any) -> tuple[Any, ...]:
    return exception_set("retry", "no_retry_on", value)


def _is_name(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: names label errors and events (and key shared state): a non-empty string."""
    if not isinstance(value, str) or not value:
        raise PolicyError(_P, attribute.name, value, "a non-empty string")


def _is_callable(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: the value is called on every use, so a non-callable fails here, not there."""
    if not callable(value):
        raise PolicyError(_P, attribute.name, value, "a callable")


def _optional_predicate(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: ``retry_if_result`` is called, never awaited, on every result, so an async
    one would reject every result (its coroutine is true) and leave the coroutine unawaited."""
    if value is not None and not callable(value):
        raise PolicyError(_P, attribute.name, value, "None (off) or a callable")
    if value is not None and is_coroutine_callable(value):
        raise PolicyError(
            _P, attribute.name, value, "None (off) or a plain callable (an async one is never awaited)"
        )


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry. It is also the ``[retry]`` config section.

    ``delay_for(attempt)`` is the wait after failed attempt ``attempt`` (1-based) before the next:
    fixed ``base``; linear ``base * attempt``; exponential ``base * multiplier ** (attempt - 1)``;
    decorrelated jitter ``uniform(base, 3 * previous)``; all capped at ``max_delay``. With
    ``jitter`` the fixed/linear/exponential delay ``d`` becomes ``uniform(0, d)`` ("full jitter").
    ``deadline`` bounds the whole call: no retry starts whose wait would cross it.
    """

    name: str = attrs.field(default="retry", validator=_is_name)
    max_attempts: int = attrs.field(default=3, validator=in_range(_P, 1, 100, integer=True, unit="attempts"))
    backoff: str = attrs.field(default="exponential", validator=one_of(_P, BACKOFFS))
    base_delay: float = attrs.field(default=0.1, validator=in_range(_P, 0, 300, unit="s"))
    multiplier: float = attrs.field(default=2.0, validator=in_range(_P, 1, 10))
    max_delay: float = attrs.field(default=30.0, validator=in_range(_P, 0, 3600, unit="s"))
    jitter: bool = attrs.field(default=False, validator=is_bool(_P))
    retry_on: tuple[Any, ...] = attrs.field(default=(Exception,), converter=_to_retry_on)
    no_retry_on: tuple[Any, ...] = attrs.field(default=(CircuitOpenError,), converter=_to_no_retry_on)
    retry_if_result: Callable[[Any], bool] | None = attrs.field(
        default=None, eq=False, validator=_optional_predicate
    )
    deadline: float | None = attrs.field(
        default=None, validator=optional_in_range(_P, 0, 86400, unit="s", lo_open=True)
    )
    #: Source of uniform numbers in [0, 1) for jitter; injected so tests are deterministic.
    random: Callable[[], float] = attrs.field(
        default=random.random, eq=False, repr=False, validator=_is_callable
    )

    def should_retry_error(self, error: BaseException) -> bool:
        """Whether ``error`` is retryable: an ``Exception`` (a cancellation or an interrupt never
        is, even under ``retry_on=BaseException``), an instance of ``retry_on`` and not of
        ``no_retry_on``."""
        return (
            isinstance(error, Exception)
            and isinstance(error, self.retry_on)
            and not isinstance(error, self.no_retry_on)
        )

    def delay_for(self, attempt: int, previous: float | None = None, rand: float = 1.0) -> float:
        """Seconds to wait after failed attempt ``attempt``; ``rand`` in [0, 1) drives jitter.

        ``previous`` is the previous delay (decorrelated jitter only; ``None`` on the first).
        """
        base = self.base_delay
        if self.backoff == "decorrelated":
            prev = base if previous is None else previous
            high = max(base, 3.0 * prev)
            return min(self.max_delay, base + (high - base) * rand)
        if self.backoff == "fixed":
            delay = base
        elif self.backoff == "linear":
            delay = base * attempt
        else:
            delay = base * self.multiplier ** (attempt - 1)
        delay = min(self.max_delay, delay)
        # full jitter after the cap: uniform(0, min(max_delay, d)). Jitter before the cap would make
        # most waits exactly max_delay once d passes it, bunching retries again.
        return delay * rand if self.jitter else delay
