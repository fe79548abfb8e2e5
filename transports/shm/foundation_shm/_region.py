"""What a server's region header says about it, read defensively (the segment may be anyone's)."""

from __future__ import annotations

import time
from typing import Any

from . import _layout as L
from ._liveness import is_alive, is_zombie
from ._segments import Segment

__all__ = ["read_region", "region_alive", "region_dying"]

_R = L.RegionField


def read_region(name: str) -> dict[str, Any]:
    """The header of server ``name``'s control segment; empty if there is none, it is too small,
    or its magic is not ours. A state outside the protocol's is reported as ``"unknown(N)"``.
    A segment shrunk while it is read (a process of the server's user truncating it) reads as
    none, not a SIGBUS (the mapping is guarded on the C hot path, as clients guard theirs)."""
    try:
        ctl = Segment.open(L.control_name(name), guard=True)
    except Exception:
        return {}
    try:
        if ctl.size < L.REGION_HEADER_SIZE or ctl.u32[_R.MAGIC // 4] != L.REGION_MAGIC:
            return {}
        u32, u64 = ctl.u32, ctl.u64
        count = u32[_R.CHANNEL_COUNT // 4]
        owners = [
            u32[(L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + L.ChannelField.OWNER_PID) // 4]
            for i in range(min(count, max(0, ctl.size - L.CHANNELS_OFFSET) // L.CHANNEL_SIZE))
        ]
        raw_state = u32[_R.STATE // 4]
        try:
            state = L.RegionState(raw_state).name.lower()
        except ValueError:
            state = f"unknown({raw_state})"
        age = (time.monotonic_ns() - u64[_R.HEARTBEAT_NS // 8]) / 1e9
        if ctl.faulted():  # shrunk under us: what was read is zero pages, not its header
            return {}
        return {
            "pid": u32[_R.SERVER_PID // 4],
            "started": u64[_R.SERVER_START // 8],
            "state": state,
            "heartbeat_age_s": round(age, 3),
            "channels": count,
            "clients": sorted({pid for pid in owners if pid}),
        }
    finally:
        ctl.close()


def region_alive(region: dict[str, Any]) -> bool:
    """The header names a process that is running (same pid and start time) and not stopped."""
    return bool(region) and region["state"] != "stopped" and is_alive(region["pid"], region["started"])


def region_dying(region: dict[str, Any]) -> int | None:
    """The pid of the server the header names if that process is a zombie of its start time: the
    server itself, killed, whose other threads may still be exiting with its lock file held (the
    last one unmaps its memory before it closes the file); else None."""
    if region and is_zombie(region["pid"], region["started"]):
        return int(region["pid"])
    return None
