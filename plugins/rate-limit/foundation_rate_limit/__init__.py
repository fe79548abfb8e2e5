"""Token-bucket rate limiting for Foundation: ``RateLimitPolicy``, ``TokenBucket``, the wrapper."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._bucket import TokenBucket
    from ._policy import RateLimitPolicy
    from ._wrap import rate_limit_factory

__all__ = [
    "RateLimitPolicy",
    "TokenBucket",
    "rate_limit_factory",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TokenBucket": "._bucket",
        "RateLimitPolicy": "._policy",
        "rate_limit_factory": "._wrap",
    },
)
