"""Retry for Foundation: ``RetryPolicy`` (pure delay maths) and ``retry_factory`` (the wrapper).

Importing this package does not import tenacity; that happens on the first failed call.
"""

from ._policy import BACKOFFS, RetryPolicy
from ._retry import retry_factory

__all__ = ["BACKOFFS", "RetryPolicy", "retry_factory"]
