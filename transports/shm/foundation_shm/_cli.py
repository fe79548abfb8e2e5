"""``foundation shm ls`` and ``foundation shm clean``: the protocol's objects in /dev/shm, by server."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from . import _layout as L
from ._liveness import is_alive, lock_is_held
from ._objects import SHM_DIR, group_objects, remove_objects
from ._segments import Segment

__all__ = ["describe", "shm_main"]

_R = L.RegionField


def _region(name: str) -> dict[str, Any]:
    """What the region header says (empty if there is no readable control segment)."""
    try:
        ctl = Segment.open(L.control_name(name))
    except Exception:
        return {}
    try:
        if ctl.size < L.REGION_HEADER_SIZE or ctl.u32[_R.MAGIC // 4] != L.REGION_MAGIC:
            return {}
        u32, u64 = ctl.u32, ctl.u64
        count = u32[_R.CHANNEL_COUNT // 4]
        owners = [
            u32[(L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + L.ChannelField.OWNER_PID) // 4]
            for i in range(min(count, (ctl.size - L.CHANNELS_OFFSET) // L.CHANNEL_SIZE))
        ]
        age = (time.monotonic_ns() - u64[_R.HEARTBEAT_NS // 8]) / 1e9
        return {
            "pid": u32[_R.SERVER_PID // 4],
            "started": u64[_R.SERVER_START // 8],
            "state": L.RegionState(u32[_R.STATE // 4]).name.lower(),
            "heartbeat_age_s": round(age, 3),
            "channels": count,
            "clients": sorted({pid for pid in owners if pid}),
        }
    finally:
        ctl.close()


def describe(name: str, entries: list[str]) -> dict[str, Any]:
    region = _region(name)
    alive = lock_is_held(L.lock_file(name)) or (
        bool(region) and is_alive(region["pid"], region["started"]) and region["state"] != "stopped"
    )
    size = 0
    for entry in entries:
        try:
            size += os.stat(os.path.join(SHM_DIR, entry)).st_size
        except OSError:
            pass
    return {"name": name, "alive": alive, **region, "objects": entries, "bytes": size}


def shm_main(args: argparse.Namespace, hub: object) -> int:
    groups = group_objects()
    if args.action == "ls":
        servers = [describe(name, entries) for name, entries in sorted(groups.items())]
        if args.json:
            print(json.dumps({"servers": servers}, indent=2))
            return 0
        if not servers:
            print("no shm objects in /dev/shm")
        for s in servers:
            health = "alive" if s["alive"] else "DEAD (stale: `foundation shm clean` removes it)"
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
        info = describe(name, groups[name])
        if info["alive"]:
            print(f"{name}: alive (pid {info.get('pid', '?')}); left alone")
            status = 1 if args.names else status
            continue
        if args.dry_run:
            print(f"{name}: would remove {' '.join(groups[name])}")
        else:
            removed = remove_objects(name)
            print(f"{name}: removed {len(removed)} objects")
    return status
