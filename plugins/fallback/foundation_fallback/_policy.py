"""The fallback policy: a frozen, validated attrs class (also the ``[fallback]`` config section)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from foundation_core._policy import exception_set
from foundation_core.errors import PolicyError

__all__ = ["FallbackPolicy"]

_P = "fallback"


def _to_on(value: Any) -> tuple[Any, ...]:
    types = exception_set(_P, "on", value)
    for cls in types:
        # a class matching only non-Exceptions (KeyboardInterrupt, CancelledError) is never caught;
        # BaseException (and BaseExceptionGroup) stay allowed: they match Exceptions too
        if not issubclass(cls, Exception) and cls not in (BaseException, BaseExceptionGroup):
            raise PolicyError(
                _P,
                "on",
                value,
                f"Exception classes or their names ({cls.__name__} is not an Exception: "
                f"a cancellation or an interrupt is never replaced by a fallback)",
            )
    return types


def _to_not_on(value: Any) -> tuple[Any, ...]:
    return exception_set("fallback", "not_on", value)


def _is_name(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: names label errors and events (and key shared state): a non-empty string."""
    if not isinstance(value, str) or not value:
        raise PolicyError(_P, attribute.name, value, "a non-empty string")


def _optional_callable(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: the handler is called on every caught error, so a non-callable fails here."""
    if value is not None and not callable(value):
        raise PolicyError(_P, attribute.name, value, "None (off) or a callable")


@attrs.frozen
class FallbackPolicy:
    """On an error in ``on`` (and not in ``not_on``), return ``handler(error)`` if a handler is
    set, else ``value``. Other errors propagate unchanged. An ``async def`` handler is awaited
    (only around ``async def`` callables)."""

    name: str = attrs.field(default="fallback", validator=_is_name)
    on: tuple[Any, ...] = attrs.field(default=(Exception,), converter=_to_on)
    not_on: tuple[Any, ...] = attrs.field(default=(), converter=_to_not_on)
    value: Any = None
    handler: Callable[[BaseException], Any] | None = attrs.field(
        default=None, eq=False, validator=_optional_callable
    )

    def catches(self, error: BaseException) -> bool:
        """Whether ``error`` is replaced: an ``Exception`` (never a cancellation or an interrupt)
        in ``on`` and not in ``not_on``."""
        return (
            isinstance(error, Exception) and isinstance(error, self.on) and not isinstance(error, self.not_on)
        )

    def substitute(self, error: BaseException) -> Any:
        """The value that stands in for the failed call (may be awaitable for an async handler)."""
        return self.handler(error) if self.handler is not None else self.value
