"""The circuit breaker policy: a frozen, validated attrs class (also the config section)."""

from __future__ import annotations

from typing import Any

import attrs

from foundation_core._policy import exception_set, in_range, one_of, optional_in_range
from foundation_core.errors import PolicyError

__all__ = ["MODES", "CircuitBreakerPolicy"]

MODES = ("consecutive", "count", "time")
_P = "circuit_breaker"


def _to_record_on(value: Any) -> tuple[Any, ...]:
    return exception_set("circuit_breaker", "record_on", value)


def _to_ignore_on(value: Any) -> tuple[Any, ...]:
    return exception_set("circuit_breaker", "ignore_on", value)


def _is_name(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: names label errors and events (and key shared state): a non-empty string."""
    if not isinstance(value, str) or not value:
        raise PolicyError(_P, attribute.name, value, "a non-empty string")


@attrs.frozen
class CircuitBreakerPolicy:
    """When to open, how long to stay open, and how to probe.

    ``mode="consecutive"`` opens after ``failure_threshold`` failures in a row. ``"count"`` keeps
    the last ``window_size`` calls, ``"time"`` the calls of the last ``window_size`` seconds; both
    open when at least ``minimum_calls`` were recorded and the failure rate reaches
    ``failure_rate_threshold`` (time windows count in one-second buckets). After
    ``reset_timeout`` seconds open, up to ``half_open_max_calls`` probe calls are let through:
    all succeed -> closed, one fails -> open.
    A call slower than ``slow_call_duration`` counts as a failure. Errors outside ``record_on``,
    or inside ``ignore_on``, count as successes (they say nothing about the dependency's health).
    """

    name: str = attrs.field(default="default", validator=_is_name)
    mode: str = attrs.field(default="consecutive", validator=one_of(_P, MODES))
    failure_threshold: int = attrs.field(
        default=5, validator=in_range(_P, 1, 10_000, integer=True, unit="calls")
    )
    window_size: int = attrs.field(
        default=100, validator=in_range(_P, 1, 10_000, integer=True, unit="calls (count) or s (time)")
    )
    failure_rate_threshold: float = attrs.field(default=0.5, validator=in_range(_P, 0, 1, lo_open=True))
    minimum_calls: int = attrs.field(
        default=10, validator=in_range(_P, 1, 10_000, integer=True, unit="calls")
    )
    reset_timeout: float = attrs.field(
        default=30.0, validator=in_range(_P, 0, 86_400, unit="s", lo_open=True)
    )
    half_open_max_calls: int = attrs.field(
        default=1, validator=in_range(_P, 1, 1_000, integer=True, unit="calls")
    )
    slow_call_duration: float | None = attrs.field(
        default=None, validator=optional_in_range(_P, 0, 3_600, unit="s", lo_open=True)
    )
    record_on: tuple[Any, ...] = attrs.field(default=(Exception,), converter=_to_record_on)
    ignore_on: tuple[Any, ...] = attrs.field(default=(), converter=_to_ignore_on)

    def __attrs_post_init__(self) -> None:
        if self.mode == "count" and self.minimum_calls > self.window_size:  # could never open
            raise PolicyError(
                _P,
                "minimum_calls",
                self.minimum_calls,
                f"at most window_size ({self.window_size}) in count mode: a window of "
                f"{self.window_size} calls never holds {self.minimum_calls}, so the breaker would never open",
            )

    def counts_as_failure(self, error: BaseException) -> bool:
        """Whether ``error`` is recorded as a failure of the protected dependency: an ``Exception``
        (a cancellation or an interrupt never is, even under ``record_on=BaseException``) in
        ``record_on`` and not in ``ignore_on``."""
        return (
            isinstance(error, Exception)
            and isinstance(error, self.record_on)
            and not isinstance(error, self.ignore_on)
        )

    def should_open(self, calls: int, failures: int) -> bool:
        """The pure trip rule for the current counts (consecutive mode: ``failures`` in a row)."""
        if self.mode == "consecutive":
            return failures >= self.failure_threshold
        return calls >= self.minimum_calls and failures >= self.failure_rate_threshold * calls - 1e-9
