"""``foundation shm ls`` and ``foundation shm clean``: the protocol's objects in /dev/shm, by server
(``ls`` first says which hot path this installation runs: ``c``, or ``python`` and why)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from . import _accel
from . import _layout as L
from ._liveness import lock_state
from ._objects import SHM_DIR, group_objects, objects_of, remove_objects
from ._region import read_region, region_alive, region_dying
from ._start_lock import take_server_lock

__all__ = ["describe", "hot_path", "shm_main"]


def describe(name: str, entries: list[str]) -> dict[str, Any]:
    """What ``ls`` shows of server ``name``. ``alive`` is True (its lock is held, or its region
    names a live process), False (stale) or None: unknown (another user's lock file, which mode
    0600 keeps from us, or a lock file that is not a regular file: not ours to judge or remove).
    ``exiting``: its lock is held, but by the server its region names dead, a zombie of its start
    time (killed, its other threads still exiting: up to some 0.1 s a GB of its memory); then
    ``alive`` is False, and ``clean`` waits for the lock, as a server starting does."""
    region = read_region(name)
    lock = lock_state(L.lock_file(name))
    alive: bool | None
    exiting = lock == "held" and region_dying(region) is not None
    if exiting:
        alive = False
    elif lock == "held" or region_alive(region):
        alive = True
    elif lock == "unknown":
        alive = None
    else:
        alive = False
    size = 0
    for entry in entries:
        try:
            size += os.stat(os.path.join(SHM_DIR, entry), follow_symlinks=False).st_size
        except OSError:
            pass
    objects = [printable(e) for e in entries]
    return {"name": name, "alive": alive, "exiting": exiting, **region, "objects": objects, "bytes": size}


def printable(entry: str) -> str:
    """A /dev/shm entry name safe to print or put in JSON: undecodable bytes and control
    characters escaped (a name is anyone's choice)."""
    raw = entry.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


def clean(name: str, dry_run: bool) -> tuple[str, int]:
    """Remove the objects of server ``name`` if it is gone, holding its lock while doing so (a
    server starting meanwhile either waits for nothing or finds its name clean); returns the
    line to print and the status (0 removed or dry run, 1 left alone or partly removed). A
    server dead but still exiting (``describe``'s ``exiting``) holds its lock a moment more:
    clean waits for it as a server starting under the name does (``take_server_lock``, up to
    ``DYING_WAIT_S``), and leaves it alone, saying so, if it has not let go by then."""
    info = describe(name, objects_of(name))
    if info["alive"] is None:
        return f"{name}: its lock file is another user's or not a regular file; left alone", 1
    if info["alive"]:
        return f"{name}: alive (pid {info.get('pid', '?')}); left alone", 1
    if dry_run:
        line = f"{name}: would remove {' '.join(info['objects'])}"
        if info["exiting"]:
            line += f" (its server, pid {info['pid']}, is dead but still exiting: clean waits for it)"
        return line, 0
    try:
        lock = take_server_lock(name, 0o600)
    except FileExistsError as exc:
        if region_dying(read_region(name)) is not None:  # still exiting after the wait
            return f"{name}: {exc}; left alone", 1
        return f"{name}: a server took the name meanwhile; left alone", 1
    except PermissionError as exc:
        return f"{name}: {exc}; left alone", 1
    try:
        if region_alive(read_region(name)):
            return f"{name}: a server took the name meanwhile; left alone", 1
        failed: list[tuple[str, str]] = []
        removed = remove_objects(name, keep_lock_file=True, failed=failed)
    finally:
        lock.release()
    # the lock file is removed on release; it counts only if it was there before clean made it
    lock_listed = os.path.basename(L.lock_file(name)) in info["objects"]
    line = f"{name}: removed {len(removed) + lock_listed} objects"
    if failed:
        why = "; ".join(f"{printable(e)}: {reason}" for e, reason in failed)
        return f"{line}; could not remove {why}", 1
    return line, 0


def hot_path() -> dict[str, Any]:
    """What ``ls --json`` says of this installation: which hot path runs, why it is Python ("" when
    it is C), the machine, and whether the transport may start on it (x86-64 only)."""
    return {
        "implementation": _accel.implementation(),
        "why_python": _accel.why_pure(),
        "machine": platform.machine(),
        "supported": not _accel.unsupported_machine(),
    }


def shm_main(args: argparse.Namespace, hub: object) -> int:
    try:
        groups = group_objects()
    except OSError as exc:  # a confined process (a snap, a container profile) may not list it
        print(f"foundation shm {args.action}: cannot list {SHM_DIR}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.action == "ls":
        servers = [describe(name, entries) for name, entries in sorted(groups.items())]
        if args.json:
            print(json.dumps({"hot_path": hot_path(), "servers": servers}, indent=2))
            return 0
        print(f"hot path: {_accel.summary()}")
        if not servers:
            print("no shm objects in /dev/shm")
        for s in servers:
            health = {
                True: "alive",
                False: "DEAD (stale: `foundation shm clean` removes it)",
                None: "unknown (another user's, or not ours)",
            }[s["alive"]]
            if s["exiting"]:
                health = (
                    "EXITING (dead, its threads still exiting with its lock held: a server "
                    "starting under the name, and `foundation shm clean`, wait for them)"
                )
            who = (
                f"pid {s['pid']}, {s['state']}, heartbeat {s['heartbeat_age_s']}s ago, " if "pid" in s else ""
            )
            clients = f"{len(s.get('clients', []))} clients, " if "pid" in s else ""
            print(f"{s['name']}: {health}; {who}{clients}{len(s['objects'])} objects, {s['bytes']} bytes")
        return 0
    for name in args.names:  # every name checked first: nothing is removed when one is wrong
        try:
            L.validate_name(name)
        except ValueError as exc:
            print(f"foundation shm clean: {exc}", file=sys.stderr)
            return 2
    names = args.names or sorted(groups)
    status = 0
    for name in names:
        if name not in groups:
            print(f"{name}: no objects")
            continue
        line, failed = clean(name, args.dry_run)
        print(line)
        if failed and (args.names or "could not remove" in line):
            status = 1
    return status
