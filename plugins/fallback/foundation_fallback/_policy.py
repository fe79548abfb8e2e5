"""The fallback policy: a frozen, validated attrs class (also the ``[fallback]`` config section)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from foundation_core._policy import exception_set

__all__ = ["FallbackPolicy"]


def _to_on(value: Any) -> tuple[Any, ...]:
    return exception_set("fallback", "on", value)


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
        return isinstance(error, self.on) and not isinstance(error, self.not_on)

    def substitute(self, error: BaseException) -> Any:
        """The value that stands in for the failed call (may be awaitable for an async handler)."""
        return self.handler(error) if self.handler is not None else self.value
