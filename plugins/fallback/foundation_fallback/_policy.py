"""The fallback policy: a frozen, validated attrs class (also the ``[fallback]`` config section)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from foundation_core._policy import exception_set
from foundation_core.errors import PolicyError

__all__ = ["FallbackPolicy"]


def _to_on(value: Any) -> tuple[Any, ...]:
    types = exception_set("fallback", "on", value)
    for cls in types:
        # a class matching only non-Exceptions (KeyboardInterrupt, CancelledError) is never caught;
        # BaseException (and BaseExceptionGroup) stay allowed: they match Exceptions too
        if not issubclass(cls, Exception) and cls not in (BaseException, BaseExceptionGroup):
            raise PolicyError(
                "fallback",
                "on",
                value,
                f"Exception classes or their names ({cls.__name__} is not an Exception: "
                f"a cancellation or an interrupt is never replaced by a fallback)",
            )
    return types


def _to_not_on(value: Any) -> tuple[Any, ...]:
    return exception_set("fallback", "not_on", value)


@attrs.frozen
class FallbackPolicy:
    """On an error in ``on`` (and not in ``not_on``), return ``handler(error)`` if a handler is
    set, else ``value``. Other errors propagate unchanged. An ``async def`` handler is awaited
    (only around ``async def`` callables)."""

    name: str = "fallback"
    on: tuple[Any, ...] = attrs.field(default=(Exception,), converter=_to_on)
    not_on: tuple[Any, ...] = attrs.field(default=(), converter=_to_not_on)
    value: Any = None
    handler: Callable[[BaseException], Any] | None = attrs.field(default=None, eq=False)

    def catches(self, error: BaseException) -> bool:
        """Whether ``error`` is replaced: an ``Exception`` (never a cancellation or an interrupt)
        in ``on`` and not in ``not_on``."""
        return (
            isinstance(error, Exception) and isinstance(error, self.on) and not isinstance(error, self.not_on)
        )

    def substitute(self, error: BaseException) -> Any:
        """The value that stands in for the failed call (may be awaitable for an async handler)."""
        return self.handler(error) if self.handler is not None else self.value
