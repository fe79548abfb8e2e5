"""Timeouts for Foundation: ``TimeoutPolicy`` and the wrapper (see the module docs for semantics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._policy import SYNC_MODES, TimeoutPolicy
    from ._wrap import timeout_factory

__all__ = [
    "SYNC_MODES",
    "TimeoutPolicy",
    "timeout_factory",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SYNC_MODES": "._policy",
        "TimeoutPolicy": "._policy",
        "timeout_factory": "._wrap",
    },
)
