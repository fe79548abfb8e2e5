"""CircuitBreakerPolicy: validation names parameter, value and range; the trip rule is pure."""

from __future__ import annotations

import pytest
from foundation_circuit_breaker import CircuitBreakerPolicy

from foundation_core.errors import PolicyError


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("mode", "sliding"),
        ("failure_threshold", 0),
        ("window_size", 10_001),
        ("failure_rate_threshold", 0),
        ("failure_rate_threshold", 1.01),
        ("minimum_calls", 0),
        ("reset_timeout", 0),
        ("half_open_max_calls", 0),
        ("slow_call_duration", -1),
        ("record_on", ["NotAnError"]),
        ("name", None),
        ("name", ""),
    ],
)
def test_invalid_values_name_the_parameter(parameter: str, value: object) -> None:
    with pytest.raises(PolicyError) as info:
        CircuitBreakerPolicy(**{parameter: value})  # type: ignore[arg-type]
    assert info.value.parameter == parameter
    assert f"circuit_breaker.{parameter}=" in str(info.value)


def test_trip_rule_consecutive_and_rate() -> None:
    consecutive = CircuitBreakerPolicy(failure_threshold=3)
    assert not consecutive.should_open(2, 2) and consecutive.should_open(3, 3)
    rate = CircuitBreakerPolicy(mode="count", minimum_calls=10, failure_rate_threshold=0.3)
    assert not rate.should_open(9, 9)  # below minimum_calls
    assert rate.should_open(10, 3)  # 0.3 exactly, despite 0.3 * 10 == 3.0000000000000004
    assert not rate.should_open(10, 2)


def test_ignored_and_unrecorded_errors_are_not_failures() -> None:
    policy = CircuitBreakerPolicy(record_on=["OSError"], ignore_on=["FileNotFoundError"])
    assert policy.counts_as_failure(ConnectionError())
    assert not policy.counts_as_failure(FileNotFoundError())
    assert not policy.counts_as_failure(ValueError())


def test_a_count_window_smaller_than_minimum_calls_is_refused() -> None:
    """It could never hold minimum_calls calls, so the breaker would never open."""
    with pytest.raises(
        PolicyError, match=r"minimum_calls=20 is invalid: expected at most window_size \(10\)"
    ) as info:
        CircuitBreakerPolicy(mode="count", window_size=10, minimum_calls=20)
    assert info.value.parameter == "minimum_calls"
    CircuitBreakerPolicy(mode="time", window_size=10, minimum_calls=20)  # seconds: may hold more calls
    CircuitBreakerPolicy(mode="count", window_size=20, minimum_calls=20)
