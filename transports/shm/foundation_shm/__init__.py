"""foundation_shm: the shared-memory transport (docs/protocol/shm.md), registered as ``shm``."""

from __future__ import annotations

from typing import Any

__all__ = ["ShmTransport"]


def __getattr__(name: str) -> Any:  # lazy: importing the package pulls in neither numpy nor posix_ipc
    if name == "ShmTransport":
        from ._transport import ShmTransport

        return ShmTransport
    raise AttributeError(name)
