"""The rate limit wrapper: thin sync and async adapters around one ``TokenBucket``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from foundation_core import is_coroutine_callable, refuse_generator
from foundation_core._clock import Clock, check_clock

from ._bucket import TokenBucket
from ._policy import RateLimitPolicy

__all__ = ["rate_limit_factory"]

F = TypeVar("F", bound=Callable[..., Any])


def rate_limit_factory(policy: RateLimitPolicy, *, clock: Clock | None = None) -> Callable[[F], F]:
    """``rate_limit_factory(policy)(fn)``: every call of ``fn`` takes a token from one bucket
    (shared by every function this wrapper protects); the protected function has ``bucket``."""
    if not isinstance(policy, RateLimitPolicy):
        raise TypeError(f"rate_limit_factory needs a RateLimitPolicy, got {type(policy).__name__}")
    clk = check_clock(clock, "rate_limit_factory")
    bucket = TokenBucket(policy, clk)

    def wrap(fn: F) -> F:
        refuse_generator(fn, "rate_limit")
        reserve, give_back = bucket.reserve_slot, bucket.give_back
        if is_coroutine_callable(fn):
            asleep = clk.asleep

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                wait, slot = reserve()
                if wait:
                    try:
                        await asleep(wait)
                    except BaseException:  # cancelled while waiting: the token was never used
                        give_back(slot)
                        raise
                return await fn(*args, **kwargs)

            protected: Any = acall
        else:
            sleep = clk.sleep

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                wait, slot = reserve()
                if wait:
                    try:
                        sleep(wait)
                    except BaseException:  # interrupted while waiting: the token was never used
                        give_back(slot)
                        raise
                return fn(*args, **kwargs)

            protected = call
        protected.bucket = bucket
        return protected  # type: ignore[no-any-return]

    return wrap
