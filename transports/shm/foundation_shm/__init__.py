"""foundation_shm: the shared-memory transport (docs/protocol/shm.md), registered as ``shm``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from foundation_ml._types import ClientCounters

    from ._transport import ShmTransport
    from .errors import ServerNameTaken

__all__ = [
    "ClientCounters",
    "ServerNameTaken",
    "ShmTransport",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ClientCounters": "foundation_ml._types",  # the transport-agnostic type, re-exported
        "ServerNameTaken": ".errors",
        "ShmTransport": "._transport",
    },
)
