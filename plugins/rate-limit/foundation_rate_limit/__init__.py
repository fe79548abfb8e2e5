"""Token-bucket rate limiting for Foundation: ``RateLimitPolicy``, ``TokenBucket``, the wrapper."""

from ._bucket import TokenBucket
from ._policy import RateLimitPolicy
from ._wrap import rate_limit_factory

__all__ = ["RateLimitPolicy", "TokenBucket", "rate_limit_factory"]
