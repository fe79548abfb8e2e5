"""The open-file limit a server needs: Python's ``mmap`` keeps a descriptor for each mapping, so a
server holds one per client data segment it has mapped, on top of what the process has open.
Every live server of the process holds a claim on its channels' descriptors: the limit is raised
to what all of them need together."""

from __future__ import annotations

import itertools
import os
import resource
import threading

__all__ = ["HEADROOM", "OpenFiles", "claim_open_files", "open_file_limit"]

HEADROOM = 32  # descriptors beyond the channels: the control segment, logs, sockets a handler opens

_lock = threading.Lock()
_claims: dict[int, int] = {}  # each live server's claim: its channels
_ids = itertools.count(1)


def open_file_limit() -> int:
    """The process's soft ``RLIMIT_NOFILE`` (``ulimit -n``); a very large number for unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 62 if soft == resource.RLIM_INFINITY else soft


class OpenFiles:
    """A live server's claim (``claim_open_files``): ``limit`` and ``needed`` at its start, and
    ``others``, the channels of the process's other live servers counted in ``needed``; its
    ``release()`` at stop."""

    __slots__ = ("_id", "limit", "needed", "others")

    def __init__(self, claim: int, limit: int, needed: int, others: int) -> None:
        self._id, self.limit, self.needed, self.others = claim, limit, needed, others

    def release(self) -> None:
        """The server stopped: its channels need no descriptors any more (a second call is
        nothing)."""
        with _lock:
            _claims.pop(self._id, None)


def claim_open_files(channels: int) -> OpenFiles:
    """Claim descriptors for serving ``channels`` clients at once, and raise the soft open-file
    limit, if it is lower, to what every live server needs: the descriptors open now, one per
    channel of each server, and ``HEADROOM``; never past the hard limit (an unprivileged process
    may raise its soft limit that far) and never lowering it. A ``limit`` below ``needed`` is the
    caller's to report."""
    with _lock:
        others = sum(_claims.values())
        claim = next(_ids)
        _claims[claim] = channels
        needed = len(os.listdir("/proc/self/fd")) + others + channels + HEADROOM
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):  # a sandbox may refuse it: the caller reports the limit
                pass
        return OpenFiles(claim, open_file_limit(), needed, others)


def _forget_claims() -> None:
    """In a forked child no server of the parent serves: their claims are not the child's (nor
    the lock, which a thread of the parent may have held at the fork)."""
    global _lock
    _lock = threading.Lock()
    _claims.clear()


os.register_at_fork(after_in_child=_forget_claims)
