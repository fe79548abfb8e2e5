"""The fallback wrapper: thin sync and async adapters around ``FallbackPolicy.substitute``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from foundation_core import is_coroutine_callable, refuse_generator
from foundation_core._clock import check_clock

from ._policy import FallbackPolicy

__all__ = ["fallback_factory"]

F = TypeVar("F", bound=Callable[..., Any])


def fallback_factory(policy: FallbackPolicy, *, clock: object = None) -> Callable[[F], F]:
    """``fallback_factory(policy)(fn)``: an error boundary around ``fn`` (sync or ``async def``).

    ``clock`` is accepted for the common factory signature (and checked as the other patterns
    check it, so a pipeline's bad clock is refused whatever its layers); a fallback never waits.
    """
    if not isinstance(policy, FallbackPolicy):
        raise TypeError(f"fallback_factory needs a FallbackPolicy, got {type(policy).__name__}")
    check_clock(clock, "fallback_factory")
    catches, substitute = policy.catches, policy.substitute

    def wrap(fn: F) -> F:
        refuse_generator(fn, "fallback")
        if is_coroutine_callable(fn):

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    if not catches(exc):
                        raise
                    value = substitute(exc)
                    return await value if inspect.isawaitable(value) else value

            return acall  # type: ignore[return-value]
        if is_coroutine_callable(policy.handler):
            raise TypeError(f"fallback {policy.name!r}: an async handler cannot guard sync {fn!r}")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not catches(exc):
                    raise
                return substitute(exc)

        return call  # type: ignore[return-value]

    return wrap
