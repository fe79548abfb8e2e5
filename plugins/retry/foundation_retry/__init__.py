"""Retry for Foundation: ``RetryPolicy`` (pure delay maths) and ``retry_factory`` (the wrapper).

Importing this package does not import tenacity; that happens on the first failed call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._policy import BACKOFFS, RetryPolicy
    from ._retry import retry_factory

__all__ = [
    "BACKOFFS",
    "RetryPolicy",
    "retry_factory",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BACKOFFS": "._policy",
        "RetryPolicy": "._policy",
        "retry_factory": "._retry",
    },
)
