"""Timeouts for Foundation: ``TimeoutPolicy`` and the wrapper (see the module docs for semantics)."""

from ._policy import SYNC_MODES, TimeoutPolicy
from ._wrap import timeout_factory

__all__ = ["SYNC_MODES", "TimeoutPolicy", "timeout_factory"]
