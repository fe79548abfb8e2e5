"""The circuit breaker wrapper: thin sync and async adapters around one ``CircuitBreaker``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from foundation_core import is_coroutine_callable, refuse_generator
from foundation_core._clock import Clock, check_clock

from ._breaker import CLOSED, CircuitBreaker
from ._policy import CircuitBreakerPolicy
from ._registry import BreakerRegistry, breakers

__all__ = ["circuit_breaker_factory"]

F = TypeVar("F", bound=Callable[..., Any])


def circuit_breaker_factory(
    policy: CircuitBreakerPolicy, *, clock: Clock | None = None, registry: BreakerRegistry | None = None
) -> Callable[[F], F]:
    """``circuit_breaker_factory(policy)(fn)``: protect ``fn`` with the breaker named
    ``policy.name`` (created on first use). The protected function has a ``breaker`` attribute."""
    if not isinstance(policy, CircuitBreakerPolicy):
        raise TypeError(f"circuit_breaker_factory needs a CircuitBreakerPolicy, got {type(policy).__name__}")
    breaker = (breakers if registry is None else registry).get_or_create(
        policy, check_clock(clock, "circuit_breaker_factory")
    )

    def wrap(fn: F) -> F:
        refuse_generator(fn, "circuit_breaker")
        if policy.slow_call_duration is not None:
            adapter = _timed_async if is_coroutine_callable(fn) else _timed_sync
        else:
            adapter = _async if is_coroutine_callable(fn) else _sync
        protected = adapter(fn, breaker)
        protected.breaker = breaker  # type: ignore[attr-defined]
        return protected  # type: ignore[return-value]

    return wrap


def _sync(fn: Callable[..., Any], b: CircuitBreaker) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        probe = b.before_call() if b.state is not CLOSED else 0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            b.on_error(exc, probe)
            raise
        b.on_success(probe)
        return result

    return call


def _async(fn: Callable[..., Any], b: CircuitBreaker) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        probe = b.before_call() if b.state is not CLOSED else 0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            b.on_error(exc, probe)
            raise
        b.on_success(probe)
        return result

    return call


def _timed_error(b: CircuitBreaker, error: BaseException, probe: int, slow: bool) -> None:
    """Record a timed call that raised. A cancelled or interrupted call (not an ``Exception``)
    says nothing about the dependency's health, unless it had run for ``slow_call_duration``:
    then it was a slow call. That is how a hung dependency trips the breaker when a timeout
    outside it (the pipeline's order) cancels the call: the breaker never sees the timeout."""
    if slow and not isinstance(error, Exception):
        b.on_failure(probe)
    else:
        b.on_error(error, probe)


def _timed_sync(fn: Callable[..., Any], b: CircuitBreaker) -> Callable[..., Any]:
    now, slow = b.clock.now, b.policy.slow_call_duration
    assert slow is not None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        probe = b.before_call() if b.state is not CLOSED else 0
        start = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _timed_error(b, exc, probe, now() - start >= slow)
            raise
        if now() - start >= slow:
            b.on_failure(probe)
        else:
            b.on_success(probe)
        return result

    return call


def _timed_async(fn: Callable[..., Any], b: CircuitBreaker) -> Callable[..., Any]:
    now, slow = b.clock.now, b.policy.slow_call_duration
    assert slow is not None

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        probe = b.before_call() if b.state is not CLOSED else 0
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _timed_error(b, exc, probe, now() - start >= slow)
            raise
        if now() - start >= slow:
            b.on_failure(probe)
        else:
            b.on_success(probe)
        return result

    return call
