"""The open-file limit a server needs: Python's ``mmap`` keeps a descriptor for each mapping, so a
server holds one per client data segment it has mapped, on top of what the process has open."""

from __future__ import annotations

import os
import resource

__all__ = ["HEADROOM", "ensure_open_files", "open_file_limit"]

HEADROOM = 32  # descriptors beyond the channels: the control segment, logs, sockets a handler opens


def open_file_limit() -> int:
    """The process's soft ``RLIMIT_NOFILE`` (``ulimit -n``); a very large number for unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 62 if soft == resource.RLIM_INFINITY else soft


def ensure_open_files(channels: int) -> tuple[int, int]:
    """Raise the soft open-file limit, if it is lower, to what serving ``channels`` clients at
    once needs (the descriptors open now, one per channel, and ``HEADROOM``), never past the hard
    limit (an unprivileged process may raise its soft limit that far) and never lowering it.
    Returns ``(limit, needed)``: a limit below ``needed`` is the caller's to report."""
    needed = len(os.listdir("/proc/self/fd")) + channels + HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a sandbox may refuse it: the caller reports the limit
            pass
    return open_file_limit(), needed
