"""RetryPolicy: validation names parameter, value and range; the delay maths holds for all inputs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from foundation_retry import BACKOFFS, RetryPolicy
from hypothesis import given
from hypothesis import strategies as st

from foundation_core.errors import CircuitOpenError, PolicyError, RateLimited


@pytest.mark.parametrize(
    ("parameter", "value", "allowed"),
    [
        ("max_attempts", 0, "an integer in [1, 100] attempts"),
        ("max_attempts", 101, "an integer in [1, 100] attempts"),
        ("max_attempts", True, "an integer in [1, 100] attempts"),
        ("base_delay", -0.1, "a number in [0, 300] s"),
        ("base_delay", 301, "a number in [0, 300] s"),
        ("base_delay", float("nan"), "a number in [0, 300] s"),
        ("multiplier", 0.5, "a number in [1, 10]"),
        ("max_delay", 3601, "a number in [0, 3600] s"),
        ("backoff", "quadratic", "one of 'fixed', 'linear', 'exponential', 'decorrelated'"),
        ("jitter", "yes", "true or false"),
        ("deadline", 0, "None (off) or a number in (0, 86400] s"),
        ("name", None, "a non-empty string"),
        ("name", 42, "a non-empty string"),
        ("retry_if_result", 42, "None (off) or a callable"),
        ("random", 42, "a callable"),
    ],
)
def test_invalid_values_raise_policy_error_naming_parameter_value_and_range(
    parameter: str, value: object, allowed: str
) -> None:
    with pytest.raises(PolicyError) as info:
        RetryPolicy(**{parameter: value})  # type: ignore[arg-type]
    assert (info.value.policy, info.value.parameter, info.value.allowed) == ("retry", parameter, allowed)
    assert info.value.value is value or info.value.value != info.value.value  # nan != nan


def test_exception_sets_accept_names() -> None:
    policy = RetryPolicy(retry_on=["ConnectionError", "foundation_core.errors:RateLimited"], no_retry_on=())
    assert policy.should_retry_error(ConnectionResetError())
    assert not policy.should_retry_error(ValueError())


def test_foundation_errors_are_named_as_the_specs_name_them() -> None:
    """retry's default ``no_retry_on`` is ``[CircuitOpenError]`` in its spec; a config file
    keeping it and adding one (``no_retry_on = ["PermissionError", "CircuitOpenError"]``) was
    refused: "'CircuitOpenError' does not name an exception class"."""
    policy = RetryPolicy(no_retry_on=["PermissionError", "CircuitOpenError"], retry_on=["RateLimited"])
    assert policy.no_retry_on == (PermissionError, CircuitOpenError)
    assert policy.retry_on == (RateLimited,)


def test_unknown_exception_name_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="retry_on") as info:
        RetryPolicy(retry_on=["NoSuchError"])
    assert "'NoSuchError' does not name an exception class (a builtin exception" in str(info.value)


def test_an_exception_in_a_module_that_does_not_import_says_why() -> None:
    with pytest.raises(PolicyError, match=r"module 'no_such_pkg.errors' cannot be imported"):
        RetryPolicy(retry_on=["no_such_pkg.errors:Unavailable"])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise RuntimeError('no config here')\n", "RuntimeError: no config here"),
        ("class Stop(BaseException):\n    pass\nraise Stop('odd')\n", "Stop: odd"),
    ],
    ids=["sys.exit", "Exception", "BaseException"],
)
def test_an_exception_in_a_module_that_fails_on_import_is_a_policy_error_naming_it(
    new_module: Callable[[str, str], str], body: str, why: str
) -> None:
    """A module calling sys.exit() (or raising anything but Ctrl-C) as it imports does not end
    the process that builds the policy (a config file naming it: `foundation config check`)."""
    new_module("fixture_policy_fails", body)
    with pytest.raises(PolicyError, match=r"retry\.retry_on=") as info:
        RetryPolicy(retry_on=["fixture_policy_fails:Unavailable"])
    assert f"module 'fixture_policy_fails' cannot be imported ({why})" in str(info.value)


def test_a_keyboard_interrupt_while_an_exception_module_imports_passes_through(
    new_module: Callable[[str, str], str],
) -> None:
    new_module("fixture_policy_interrupted", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        RetryPolicy(retry_on=["fixture_policy_interrupted:Unavailable"])


def test_open_circuit_is_not_retryable_by_default() -> None:
    assert not RetryPolicy().should_retry_error(CircuitOpenError("db", 1.0))


def test_policy_is_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RetryPolicy().max_attempts = 5  # type: ignore[misc]


policies = st.builds(
    RetryPolicy,
    backoff=st.sampled_from(BACKOFFS),
    base_delay=st.floats(0, 300),
    multiplier=st.floats(1, 10),
    max_delay=st.floats(0, 3600),
    jitter=st.booleans(),
)
attempts = st.integers(1, 100)
rands = st.floats(0, 1, exclude_max=True)


@given(policies, attempts, rands, st.none() | st.floats(0, 3600))
def test_every_delay_is_within_zero_and_max_delay(
    policy: RetryPolicy, attempt: int, rand: float, previous: float | None
) -> None:
    assert 0 <= policy.delay_for(attempt, previous, rand) <= policy.max_delay


@given(policies.filter(lambda p: p.backoff in ("linear", "exponential") and not p.jitter), attempts)
def test_growing_backoffs_never_shrink(policy: RetryPolicy, attempt: int) -> None:
    assert policy.delay_for(attempt + 1) >= policy.delay_for(attempt)


@given(policies.filter(lambda p: p.backoff != "decorrelated"), attempts, rands)
def test_full_jitter_stays_below_the_nominal_delay(policy: RetryPolicy, attempt: int, rand: float) -> None:
    import attrs

    nominal = attrs.evolve(policy, jitter=False).delay_for(attempt)
    jittered = attrs.evolve(policy, jitter=True).delay_for(attempt, rand=rand)
    assert 0 <= jittered <= nominal
    # uniform over [0, the capped delay]: jitter after the cap, so waits past it do not bunch at it
    assert jittered == nominal * rand


@given(policies.filter(lambda p: p.backoff == "decorrelated"), st.floats(0, 3600), rands)
def test_decorrelated_jitter_is_between_base_and_three_times_previous(
    policy: RetryPolicy, previous: float, rand: float
) -> None:
    delay = policy.delay_for(2, previous, rand)
    assert delay <= policy.max_delay
    if policy.base_delay <= policy.max_delay:
        assert policy.base_delay <= delay + 1e-9
        assert delay <= max(policy.base_delay, 3 * previous) + 1e-9


def test_exponential_delays_match_the_formula() -> None:
    policy = RetryPolicy(base_delay=0.1, multiplier=2)
    assert [round(policy.delay_for(n), 10) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]


def test_a_cancellation_or_interrupt_is_never_retryable() -> None:
    """Not even under ``retry_on=BaseException``: the first attempt lets them through, and so
    must every later one (retry.yaml lists them as non-retryable)."""
    policy = RetryPolicy(retry_on=["BaseException"])
    assert not policy.should_retry_error(KeyboardInterrupt())
    assert not policy.should_retry_error(asyncio.CancelledError())
    assert not policy.should_retry_error(SystemExit(1))
    assert policy.should_retry_error(ConnectionError())


@pytest.mark.parametrize(
    "value", ["KeyboardInterrupt", ["asyncio.CancelledError", "ConnectionError"], SystemExit]
)
def test_retry_on_refuses_classes_that_are_not_exceptions(value: object) -> None:
    with pytest.raises(PolicyError, match="is not an Exception") as info:
        RetryPolicy(retry_on=value)  # type: ignore[arg-type]
    assert (info.value.parameter, info.value.value) == ("retry_on", value)


def test_an_async_retry_if_result_is_refused() -> None:
    """The predicate is called, not awaited: an ``async def`` one returns a coroutine, which is
    true, so every result would be rejected and every coroutine left unawaited."""

    async def empty(result: object) -> bool:
        return result is None

    with pytest.raises(PolicyError, match="an async one is never awaited") as info:
        RetryPolicy(retry_if_result=empty)
    assert info.value.parameter == "retry_if_result"
    assert RetryPolicy(retry_if_result=lambda result: result is None).retry_if_result is not None
