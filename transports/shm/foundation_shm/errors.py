"""The errors the shm transport raises of its own (those of a call are ``foundation_ml.errors``')."""

from __future__ import annotations

from foundation_core.errors import FoundationError

__all__ = ["ServerNameTaken"]


class ServerNameTaken(FoundationError, FileExistsError):
    """A server cannot start under ``name``: another server holds it (spec 10.2: its lock file is
    held, or its region names a live process). ``pid`` is that server's, read from the region
    header (0 when the header names none yet: it is starting); ``lock_file`` the lock's path.
    A ``FileExistsError``, as ``Transport.check_serve`` promises (``foundation serve`` exits 1)."""

    def __init__(self, name: str, message: str, *, pid: int = 0, lock_file: str = "") -> None:
        self.name = name
        self.pid = pid
        self.lock_file = lock_file
        super().__init__(message)
