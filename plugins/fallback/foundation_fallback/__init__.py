"""Fallback / error boundary for Foundation: on listed errors, return a value or call a handler."""

from ._fallback import fallback_factory
from ._policy import FallbackPolicy

__all__ = ["FallbackPolicy", "fallback_factory"]
