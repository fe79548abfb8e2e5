"""foundation_shm: the shared-memory transport (docs/protocol/shm.md), registered as ``shm``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._counters import ClientCounters
    from ._transport import ShmTransport

__all__ = [
    "ClientCounters",
    "ShmTransport",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ClientCounters": "._counters",
        "ShmTransport": "._transport",
    },
)
