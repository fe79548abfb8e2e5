"""The open-file limit a server needs: Python's ``mmap`` keeps a descriptor for each mapping, so a
server holds one per client data segment it has mapped, on top of what the process has open.
Every live server of the process holds a claim on its channels' descriptors: the limit is raised
to what all of them need together, and put back as each stops, down to what the servers still
running and the descriptors open then need (the process's own, opened meanwhile, count too) and
never below what the process had before (a child process started meanwhile inherits the raised
limit, and ``select()`` takes no descriptor past 1024). A limit someone else
set since the raise (the soft limit no longer the one raised to) is theirs: it is left as it is,
and the raise forgotten."""

from __future__ import annotations

import itertools
import os
import resource
import threading
from typing import ClassVar

__all__ = ["HEADROOM", "OpenFiles", "claim_open_files", "open_file_limit"]

HEADROOM = 32  # descriptors beyond the channels: the control segment, logs, sockets a handler opens

_lock = threading.Lock()
_claims: dict[int, int] = {}  # each live server's claim: its channels
_ids = itertools.count(1)
_before: int | None = None  # the soft limit before the raise in force; None while none is
_raised_to = 0  # the soft limit that raise set


def open_file_limit() -> int:
    """The process's soft ``RLIMIT_NOFILE`` (``ulimit -n``); a very large number for unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 62 if soft == resource.RLIM_INFINITY else soft


class OpenFiles:
    """A live server's claim (``claim_open_files``): ``limit`` and ``needed`` at its start, and
    ``others``, the channels of the process's other live servers counted in ``needed``; its
    ``release()`` at stop."""

    __slots__ = ("_id", "limit", "needed", "others")
    NONE: ClassVar[OpenFiles]  # no claim (a server whose start failed before claiming)

    def __init__(self, claim: int, limit: int, needed: int, others: int) -> None:
        self._id, self.limit, self.needed, self.others = claim, limit, needed, others

    def release(self) -> None:
        """The server stopped: its channels need no descriptors any more (a second call is
        nothing)."""
        with _lock:
            if _claims.pop(self._id, None) is not None:
                _lower()


OpenFiles.NONE = OpenFiles(0, 0, 0, 0)  # claim ids start at 1: its release() is nothing


def claim_open_files(channels: int) -> OpenFiles:
    """Claim descriptors for serving ``channels`` clients at once, and raise the soft open-file
    limit, if it is lower, to what every live server needs: the descriptors open now, one per
    channel of each server, and ``HEADROOM``; never past the hard limit (an unprivileged process
    may raise its soft limit that far) and never lowering it. A ``limit`` below ``needed`` is the
    caller's to report; ``release()`` the claim when the server stops."""
    global _before, _raised_to
    with _lock:
        others = sum(_claims.values())
        claim = next(_ids)
        _claims[claim] = channels
        needed = _needed()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
            try:
                if target > soft:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    if _before is None or soft != _raised_to:  # (a limit set since is theirs)
                        _before = soft
                    _raised_to = target
            except (ValueError, OSError):  # a sandbox may refuse it: the caller reports the limit
                pass
        return OpenFiles(claim, open_file_limit(), needed, others)


def _needed() -> int:
    """The descriptors open now, one per channel of each live server, and ``HEADROOM`` (a mapped
    data segment counts twice, open and as its channel: more than needed, never less)."""
    return len(os.listdir("/proc/self/fd")) + sum(_claims.values()) + HEADROOM


def _lower() -> None:
    """A server stopped: put the raise in force back down to what the live servers and the
    descriptors open now need, never below what the process had before it (a limit below the
    descriptors open would fail the process's next ``open()``); a soft limit someone else set
    since the raise is left as it is."""
    global _before, _raised_to
    if _before is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != _raised_to:
        _before = None
        return
    target = max(_before, _needed())
    if target >= soft:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # refused: the raised limit stays, as it did before
        return
    _raised_to = target
    if target == _before:
        _before = None


def _forget_claims() -> None:
    """In a forked child no server of the parent serves: their claims are not the child's (nor
    the lock, which a thread of the parent may have held at the fork). The raise stays recorded:
    a server of the child's own puts it back when it stops."""
    global _lock
    _lock = threading.Lock()
    _claims.clear()


os.register_at_fork(after_in_child=_forget_claims)
