"""A channel pool's thread-local state (the channel a thread keeps) and its fork hook."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from ._channel import _Channel

if TYPE_CHECKING:
    from ._pool import ChannelPool

__all__ = ["_POOLS", "_Held", "_Local"]

_POOLS: weakref.WeakSet[ChannelPool] = weakref.WeakSet()  # every live pool, for fork


def _forget_after_fork() -> None:
    """In a forked child: the channels are the parent's (its pid owns them, its calls use them);
    the child must not touch them. Each pool forgets them without closing or unlinking anything
    and claims channels of its own on its next call. ``_pid`` is set last: a finalizer that the
    garbage collector runs before this (other fork hooks allocate) finds it is not the owner."""
    for pool in list(_POOLS):
        pool._conn, pool._all, pool._free = None, [], []
        pool._busy, pool._retiring, pool._claiming = set(), {}, {}
        pool._local = _Local()
        pool._holders = []
        pool._cond = threading.Condition()
        pool._waiters = 0
        pool._closing = None  # a close under way in the parent: its thread is not in the child
        pool._pid = os.getpid()


os.register_at_fork(after_in_child=_forget_after_fork)


class _Held:
    """The channel a thread keeps after a call that returned views on it (one per thread and client).

    ``box[0]`` is the channel, or None while the thread is in a call or holds nothing. When the
    thread ends, its thread-local storage drops this object and the finalizer gives the channel back.
    """

    __slots__ = ("__weakref__", "box")

    def __init__(self) -> None:
        self.box: list[_Channel | None] = [None]


class _Local(threading.local):
    """A thread's own state in one pool: ``held``, the channel it keeps for its views (set on its
    first call that returns views). A class default, so that a thread that keeps none (its calls
    return copies) finds None: ``getattr(local, "held", None)`` raised and caught an
    AttributeError on every one of its calls."""

    held: _Held | None = None
