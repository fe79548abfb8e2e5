"""The protocol's objects in /dev/shm: find them by server name, tell if their owner lives, remove them."""

from __future__ import annotations

import contextlib
import os
import re
from collections import defaultdict

__all__ = ["SHM_DIR", "group_objects", "objects_of", "remove_objects", "server_of"]

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
