"""Fallback / error boundary for Foundation: on listed errors, return a value or call a handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._fallback import fallback_factory
    from ._policy import FallbackPolicy

__all__ = [
    "FallbackPolicy",
    "fallback_factory",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "fallback_factory": "._fallback",
        "FallbackPolicy": "._policy",
    },
)
