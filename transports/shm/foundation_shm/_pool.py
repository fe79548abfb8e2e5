"""The shm client's channels: claimed from the server under its region mutex, pooled across
threads, and held by a thread while its outputs (views on the response area) are in use.

``ChannelPool`` is the part of ``ShmClient`` that owns the connection and the channels; the client
itself (``_client.py``) writes requests and reads responses on the channel it takes.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

import posix_ipc

from foundation_ml.errors import DeadlineExceeded, Overloaded, ServerUnavailable

from . import _layout as L
from ._channel import _Channel, _Connection, _pages
from ._liveness import start_time
from ._segments import drain, open_semaphore

__all__ = ["ChannelPool"]

_POOLS: weakref.WeakSet[ChannelPool] = weakref.WeakSet()  # every live pool, for fork


def _retire(ch: _Channel) -> None:
    ch.detach()
    if ch.sem is not None:
        ch.sem.close()
        ch.sem = None


def _forget_after_fork() -> None:
    """In a forked child: the channels are the parent's (its pid owns them, its calls use them);
    the child must not touch them. Each pool forgets them without closing or unlinking anything
    and claims channels of its own on its next call."""
    for pool in list(_POOLS):
        pool._conn, pool._all, pool._free = None, [], []
        pool._busy, pool._retiring = set(), {}
        pool._local = threading.local()
        pool._holders = []
        pool._cond = threading.Condition()
        pool._waiters = 0


os.register_at_fork(after_in_child=_forget_after_fork)

_R = L.RegionField
_C = L.ChannelField


class _Held:
    """The channel a thread keeps after a call that returned views on it (one per thread and client).

    ``box[0]`` is the channel, or None while the thread is in a call or holds nothing. When the
    thread ends, its thread-local storage drops this object and the finalizer gives the channel back.
    """

    __slots__ = ("__weakref__", "box")

    def __init__(self) -> None:
        self.box: list[_Channel | None] = [None]


class ChannelPool:
    """The connection to one server and the channels claimed on it (up to ``max_channels`` in use
    at once; a channel kept for a thread's unread outputs does not count)."""

    name: str
    max_channels: int
    connect_timeout: float

    def _init_pool(self, capacity: int | None) -> None:
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closed = False
        self._conn: _Connection | None = None
        self._all: list[_Channel] = []
        self._free: list[_Channel] = []
        self._waiters = 0
        self._local = threading.local()
        self._holders: list[_Held] = []
        self._busy: set[_Channel] = set()  # taken by a call: never unmapped under it
        self._retiring: dict[_Connection, set[_Channel]] = {}  # dropped while calls were on them
        _POOLS.add(self)
        with self._cond:
            self._free.append(self._claim_locked())

    def _connection(self) -> _Connection:
        if self._conn is None or not self._conn.alive:
            if self._conn is not None:
                self._drop_connection()
            self._conn = _Connection(self.name)
        return self._conn

    def _drop_connection(self) -> None:
        """Forget a connection (a dead server, or the client closing): unlink our data segments,
        close everything of it, except what a call in another thread is using now: that call is
        woken (its wait re-checks the connection and fails), and what it uses is closed when it
        gives its channel back (closing a semaphore or unmapping a segment under a waiting thread
        crashes the process)."""
        conn, busy = self._conn, {ch for ch in self._busy if ch.conn is self._conn}
        for ch in self._all:
            if ch in busy:
                continue
            _retire(ch)
        self._all, self._free = [], []
        self._conn = None
        if conn is None:
            return
        if not busy:
            conn.close()
            return
        conn.closing = True  # check() fails from now on: the waiting calls end at their next slice
        self._retiring[conn] = busy
        for ch in busy:
            if ch.sem is not None:
                ch.sem.release()  # wake a blocked wait at once

    def _claim_locked(self, deadline_ns: int = 0) -> _Channel:
        conn = self._connection()
        ctl = conn.ctl
        u32, u64 = ctl.u32, ctl.u64
        wait = self.connect_timeout
        if deadline_ns:  # a call's deadline bounds this wait too
            wait = min(wait, max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9))
        try:
            conn.mutex.acquire(wait)
        except posix_ipc.BusyError:
            if wait < self.connect_timeout:
                raise DeadlineExceeded(
                    f"shm server {self.name!r}: region mutex still busy at the deadline"
                ) from None
            raise Overloaded(
                f"shm server {self.name!r}: region mutex busy for {self.connect_timeout}s"
            ) from None
        u32[_R.MUTEX_HOLDER // 4] = os.getpid()
        try:
            for index in range(conn.channel_count):
                if not u32[(L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE + _C.OWNER_PID) // 4]:
                    break
            else:
                raise Overloaded(f"shm server {self.name!r}: all {conn.channel_count} channels are in use")
            ch = _Channel(conn, index)
            capacity = _pages(self._capacity or conn.capacity)
            ch.attach(capacity, capacity)
            u32[ch.sleeping_word] = 0
            u64[(ch.base + _C.OWNER_START) // 8] = start_time(os.getpid())
            ch.seq = u64[ch.sseq]
            u64[ch.cseq] = ch.seq
            u32[(ch.base + _C.OWNER_PID) // 4] = os.getpid()
            u64[_R.CONNECT_EPOCH // 8] += 1
        except BaseException:
            if "ch" in locals():
                ch.detach()
            raise
        finally:
            u32[_R.MUTEX_HOLDER // 4] = 0
            conn.mutex.release()
        ch.sem = open_semaphore(L.channel_sem_name(self.name, index))
        drain(ch.sem)
        self._all.append(ch)
        return ch

    def _take(self, deadline_ns: int) -> _Channel:
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.box[0] is not None:
            ch: _Channel = held.box[0]  # this thread's own channel: its previous outputs end here
            held.box[0] = None
            if ch.conn is self._conn and ch.conn.alive and ch.idle() and not self._closed:
                self._busy.add(ch)
                return ch
            self._give(ch)
        try:
            ch = self._free.pop()  # the common case, lock-free: list.pop is atomic under the GIL
        except IndexError:
            return self._take_slow(deadline_ns)
        if ch.conn.alive and ch.idle() and not self._closed:
            self._busy.add(ch)
            return ch
        self._free.append(ch)
        return self._take_slow(deadline_ns)

    def _take_slow(self, deadline_ns: int) -> _Channel:
        ch = self._take_slow_locked(deadline_ns)
        self._busy.add(ch)
        return ch

    def _take_slow_locked(self, deadline_ns: int) -> _Channel:
        with self._cond:
            while True:
                if self._closed:
                    raise ServerUnavailable(f"the client of {self.name!r} is closed")
                if self._conn is None or not self._conn.alive:
                    self._drop_connection()
                    return self._claim_locked(deadline_ns)
                for ch in list(self._free):  # a copy: the lock-free path pops meanwhile
                    if ch.idle():
                        try:
                            self._free.remove(ch)
                        except ValueError:
                            continue  # another thread's lock-free pop took it first
                        return ch
                # Channels kept for other threads' unread outputs do not count: a pool of more
                # threads than `channels` must not wait for threads that are not calling.
                held = sum(1 for h in self._holders if h.box[0] is not None)
                if len(self._all) - held < self.max_channels:
                    return self._claim_locked(deadline_ns)
                left = (deadline_ns - time.monotonic_ns()) / 1e9 if deadline_ns else 0.05
                if left <= 0:
                    raise DeadlineExceeded(f"no free channel to {self.name!r} before the deadline")
                self._waiters += 1
                try:
                    self._cond.wait(min(left, 0.005 if self._free else 0.05))
                finally:
                    self._waiters -= 1

    def _give(self, ch: _Channel, *, hold: bool = False) -> None:
        """Return a channel after a call. ``hold``: the call returned views on its response area,
        so the calling thread keeps the channel until its next call (or its end): another
        thread's request must not overwrite outputs that are still being read."""
        self._busy.discard(ch)
        if ch.conn is not self._conn:  # its connection was dropped (during the call, or before)
            retiring = self._retiring.get(ch.conn)
            if retiring is not None and ch in retiring:
                _retire(ch)
                retiring.discard(ch)
                if not retiring:
                    del self._retiring[ch.conn]
                    ch.conn.close()
            return
        if hold:
            held = getattr(self._local, "held", None)
            if held is None:
                held = self._local.held = _Held()
                weakref.finalize(held, self._unhold, weakref.ref(self), held.box)
                with self._cond:
                    self._holders.append(held)
            previous, held.box[0] = held.box[0], ch
            if previous is not None and previous is not ch:  # two loans at once on one thread
                self._give(previous)
            return
        self._free.append(ch)
        if self._waiters:
            with self._cond:
                self._cond.notify()

    @staticmethod
    def _unhold(client_ref: weakref.ref[ChannelPool], box: list[_Channel | None]) -> None:
        """A thread that held a channel ended: the channel goes back to the pool."""
        client, ch = client_ref(), box[0]
        box[0] = None
        if client is None:
            return
        with client._cond:
            client._holders = [h for h in client._holders if h.box is not box]
        if ch is not None:
            client._give(ch)

    def _release_channels(self, conn: _Connection) -> None:
        u32, u64 = conn.ctl.u32, conn.ctl.u64
        try:
            conn.mutex.acquire(self.connect_timeout)
        except posix_ipc.BusyError:
            return  # the server reclaims them once it sees us gone
        u32[_R.MUTEX_HOLDER // 4] = os.getpid()
        try:
            for ch in self._all:
                if ch.idle():
                    u32[(ch.base + _C.OWNER_PID) // 4] = 0
                else:  # a request still with the server: let it reclaim the channel when done
                    u64[(ch.base + _C.OWNER_START) // 8] = 0
            u64[_R.CONNECT_EPOCH // 8] += 1
        finally:
            u32[_R.MUTEX_HOLDER // 4] = 0
            conn.mutex.release()
