"""The protocol's objects in /dev/shm: find them by server name, tell if their owner lives, remove them."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections import defaultdict

__all__ = ["SHM_DIR", "group_objects", "no_server_hint", "objects_of", "remove_objects", "server_of"]

SHM_DIR = "/dev/shm"
_OBJECT_RE = re.compile(r"(?:sem\.)?fdn-([A-Za-z0-9_]{1,48})(?:[-.].*)?")


def server_of(filename: str) -> str | None:
    """The server name an entry of /dev/shm belongs to, or None if it is not one of ours."""
    m = _OBJECT_RE.fullmatch(filename)
    return m.group(1) if m else None


def group_objects(directory: str = SHM_DIR) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(directory)):
            name = server_of(entry)
            if name is not None:
                groups[name].append(entry)
    return dict(groups)


def objects_of(name: str, directory: str = SHM_DIR) -> list[str]:
    return group_objects(directory).get(name, [])


def no_server_hint(name: str, directory: str = SHM_DIR, shown: int = 8) -> str:
    """What to say after "no shm server named NAME": the name meant, if one here is close, and the
    servers that have a region here (their control segment ``fdn-N``, live or stale: ``foundation
    shm ls`` tells which), or how to start one when there is none; where ``directory`` cannot be
    listed (a confined process), that it could not look."""
    try:
        groups = group_objects(directory)
    except OSError as exc:  # said inside ServerUnavailable's handler: never another error instead
        return f"the servers here are not known: {directory} cannot be listed: {exc.strerror or exc}"
    here = sorted(n for n, entries in groups.items() if f"fdn-{n}" in entries)
    if not here:
        return f"no shm server runs on this host: start one with `foundation serve --name {name}`"
    close = difflib.get_close_matches(name, here, n=1)
    listed = ", ".join(repr(n) for n in here[:shown]) + (
        f" and {len(here) - shown} more" if len(here) > shown else ""
    )
    meant = f"did you mean {close[0]!r}? " if close else ""
    return f"{meant}servers here: {listed}; `foundation shm ls` tells live from stale"


def remove_objects(
    name: str,
    *,
    keep_lock_file: bool = False,
    directory: str = SHM_DIR,
    failed: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Unlink every object of server ``name`` (a symlink itself, never its target); returns what
    was removed. An entry that cannot be removed (another user's, a directory) raises, or with
    ``failed`` given is listed there with the reason and the others are still removed."""
    removed = []
    for entry in objects_of(name, directory):
        if keep_lock_file and entry == f"fdn-{name}.lock":
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except FileNotFoundError:
            continue
        except OSError as exc:
            if failed is None:
                raise
            failed.append((entry, exc.strerror or str(exc)))
            continue
        removed.append(entry)
    return removed
