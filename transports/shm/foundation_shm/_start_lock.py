"""A starting server's lock on its name: taken at once, or once a killed predecessor lets it go."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import _layout as L
from ._liveness import ServerLock, is_alive
from ._region import read_region, region_dying
from .errors import ServerNameTaken

__all__ = ["DYING_WAIT_S", "name_taken", "take_server_lock"]

# How long a start waits for the lock of a killed server whose threads still exit (its pid a
# zombie): the last one unmaps the process's memory before it closes the lock file, ~75 ms a GB
# (2-7 ms for 10 MB, 130-170 ms for 2 GB), so 5 s covers a process of some 60 GB (a model held in
# host memory). A dead server does not come back: the wait ends as soon as the lock is free, and
# costs only a refusal that much later where its exit is stuck (a thread in uninterruptible sleep).
DYING_WAIT_S = 5.0
_POLL_S = 0.005


def take_server_lock(
    name: str,
    mode: int,
    wait_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ServerLock:
    """The lock of server ``name`` (spec 10.2). Held, and the region names a server that is a
    zombie of its start time (killed, its threads still exiting): waited for up to ``wait_s``
    (``DYING_WAIT_S``), then ``ServerNameTaken`` saying so; held by anything else (a live server,
    or one that took the name meanwhile): ``ServerNameTaken`` at once, naming its pid."""
    wait_s = DYING_WAIT_S if wait_s is None else wait_s
    path = L.lock_file(name)
    end = clock() + wait_s
    while True:
        try:
            return ServerLock(path, mode)
        except FileExistsError:
            pid = region_dying(read_region(name))
            if pid is None:
                try:  # once more: a dying server reaped since the try had let the lock go first
                    return ServerLock(path, mode)
                except FileExistsError:
                    raise name_taken(name, read_region(name), path) from None
            if clock() >= end:
                raise ServerNameTaken(
                    name,
                    f"the previous shm server of {name!r} (pid {pid}) is dead but still exiting, "
                    f"and holds {path} after {wait_s:g} s: try again once it has exited",
                    pid=pid,
                    lock_file=path,
                ) from None
            sleep(_POLL_S)


def name_taken(name: str, region: dict[str, Any], lock_file: str, why: str = "") -> ServerNameTaken:
    """The refusal of a start under ``name`` that another server holds: its pid from the region
    header ``region`` (``read_region``) when that names a live process; none when it names no
    process or a dead one (a server that has just taken the name, its header not yet written).
    ``why``: what was found (by default, that it holds ``lock_file``)."""
    pid = int(region["pid"]) if region and is_alive(region["pid"], region["started"]) else 0
    who = (
        f"a live shm server (pid {pid})"
        if pid
        else "another shm server (starting: its region names no pid yet)"
    )
    return ServerNameTaken(
        name,
        f"{who} already serves {name!r} ({why or f'it holds {lock_file}'}): stop it first, or serve "
        "under another name",
        pid=pid,
        lock_file=lock_file,
    )
