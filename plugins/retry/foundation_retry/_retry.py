"""The retry wrapper: the first attempt is a plain call; only a failure enters tenacity.

The success path costs one clock read, a ``try`` and (with ``retry_if_result``) one predicate
call. Sync and async callables share the policy's decisions and the driver's tenacity setup; the
adapters below only differ in ``await``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from foundation_core import is_coroutine_callable, refuse_generator
from foundation_core._clock import Clock, check_clock

from ._policy import RetryPolicy

__all__ = ["retry_factory"]

F = TypeVar("F", bound=Callable[..., Any])


def retry_factory(policy: RetryPolicy, *, clock: Clock | None = None) -> Callable[[F], F]:
    """``retry_factory(policy)(fn)`` retries ``fn`` (sync or ``async def``) under ``policy``."""
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"retry_factory needs a RetryPolicy, got {type(policy).__name__}")
    clk = check_clock(clock, "retry_factory")

    def wrap(fn: F) -> F:
        refuse_generator(fn, "retry")
        if is_coroutine_callable(fn):
            return _async_adapter(fn, policy, clk)  # type: ignore[return-value]
        return _sync_adapter(fn, policy, clk)  # type: ignore[return-value]

    return wrap


def _sync_adapter(fn: Callable[..., Any], policy: RetryPolicy, clock: Clock) -> Callable[..., Any]:
    now = clock.now
    should_retry = policy.should_retry_error
    pred = policy.retry_if_result

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if not should_retry(exc):
                raise
            error: Exception | None = exc
            result = None
        else:
            if pred is None or not pred(result):
                return result
            error = None
        # outside the except block: attempts 2..n must not run "during handling" of attempt 1's
        # error (each later error would get it as __context__, and fn would see it in exc_info)
        from ._driver import retry_sync

        return retry_sync(fn, args, kwargs, error, result, start, policy, clock)

    return call


def _async_adapter(fn: Callable[..., Any], policy: RetryPolicy, clock: Clock) -> Callable[..., Any]:
    now = clock.now
    should_retry = policy.should_retry_error
    pred = policy.retry_if_result

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if not should_retry(exc):
                raise
            error: Exception | None = exc
            result = None
        else:
            if pred is None or not pred(result):
                return result
            error = None
        # outside the except block: attempts 2..n must not run "during handling" of attempt 1's
        # error (each later error would get it as __context__, and fn would see it in exc_info)
        from ._driver import retry_async

        return await retry_async(fn, args, kwargs, error, result, start, policy, clock)

    return call
