"""Tie a child process's life to its parent's: Linux's parent-death signal (``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

__all__ = ["die_with_parent"]

try:  # resolved here, not in a forked child
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal
    _prctl = None
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Called first in a child process (or in ``subprocess``'s ``preexec_fn``, before the exec,
    which keeps it): the kernel sends it ``sig`` when its parent ``parent`` dies, even by SIGKILL,
    so that a child spinning on a shared word, waiting for a start signal or serving never
    outlives a benchmark or test that was killed. SIGKILL (the default) ends it on the spot;
    SIGTERM lets a ``foundation serve`` drain and release its shared memory. The signal comes
    when the *thread* that started the child ends: start it from a thread that lives as long as
    the child should. Nothing is requested where there is no ``prctl`` (not Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
