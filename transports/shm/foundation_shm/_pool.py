"""The shm client's channels: claimed from the server under its region mutex, pooled across
threads, held by a thread while its outputs (views on the response area) are in use, and given
back when the client closes or is dropped.

``ChannelPool`` owns the connection and the channels of one ``ShmClient`` and holds no reference
to it, so a client dropped without ``close()`` can be finalized (``weakref.finalize``) and its
pool give everything back; the client itself (``_client.py``) writes requests and reads responses
on the channel it takes. The words of the server's channel table (claiming a channel, giving
them back) are written in ``_ownership.py``; a take that finds no channel free at once reconnects,
claims or waits in ``_take.py``; a thread's kept channel and the fork hook are in ``_pool_local.py``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
import weakref

from foundation_ml.errors import ServerUnavailable

from ._channel import _Channel, _Connection
from ._gone import _GoneAtConnect
from ._ownership import await_owed, claim, drop_wait, give_back_unopened, release_channels, retire
from ._pool_local import _POOLS, _Held, _Local
from ._take import SlowTake

__all__ = ["ChannelPool"]


class ChannelPool:
    """The connection to one server and the channels claimed on it (up to ``max_channels`` in use
    at once; a channel kept for a thread's unread outputs does not count).

    Kept channels are bounded only by the server's channel count: one cannot be taken back while
    its thread may still read its views, and a call must not wait for a thread that is not
    calling (it may never call again). A call that finds the server's channels all taken while
    this client keeps some fails ``Overloaded`` saying so (``_ownership._kept``)."""

    def __init__(
        self, name: str, max_channels: int, connect_timeout: float, capacity: int | None, max_response: int
    ) -> None:
        self.name = name
        self.max_channels = max_channels
        self.connect_timeout = connect_timeout
        self._capacity = capacity
        self._max_response = max_response  # ConnectOptions.max_response_bytes (capacity is no larger)
        self._pid = os.getpid()  # the process whose channels these are (see _forget_after_fork)
        self._cond = threading.Condition()
        self._closed = False
        self._closing: int | None = None  # the thread closing (close() under way), else None
        self._conn: _Connection | None = None
        self._all: list[_Channel] = []
        self._free: list[_Channel] = []
        self._waiters = 0
        self._local = _Local()
        # each holding thread's box, not its _Held: the thread-local must stay the only strong
        # reference to that, or the finalizer that gives the channel back when the thread ends
        # never runs (every thread that ever got views kept its channel until close)
        self._holders: list[list[_Channel | None]] = []
        self._busy: set[_Channel] = set()  # taken by a call: never unmapped under it
        self._retiring: dict[_Connection, set[_Channel]] = {}  # dropped while calls were on them
        # claims in progress without the lock, per connection: a drop leaves such a connection
        # open (retiring) until they are done, as it does for a call's channel
        self._claiming: dict[_Connection, int] = {}
        # what the client counts (spec 10.5; ShmClient.counters reads them without the lock):
        # connections claimed on after the first (_claim_unlocked), calls moved to a new one and
        # published there (resent); each changed under the lock, only on those rare paths
        self.reconnects = 0
        self.resends = 0
        _POOLS.add(self)
        with self._cond:  # no other thread knows this pool yet: the claim may hold the lock
            try:
                conn = self.connection()
                conn.wait_beating(self.connect_timeout, self._limit(self.connect_timeout))
                ch = self._claim(conn)
                conn.claimed = True  # the client's first connection: no reconnect
                self._all.append(ch)
                self._free.append(ch)
            except _GoneAtConnect as exc:  # a connect that is no call's: '... is gone' (10.3)
                self._drop_connection()
                raise exc.plain() from None
            except BaseException:  # no channel (all in use, no server): close what was opened
                self._drop_connection()
                raise

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or the client was dropped)."""
        return self._closed

    def connection(self) -> _Connection:
        """The connection, made anew if there is none or its server died; never for a closed
        client (its close would not close it again)."""
        if self._closed:
            raise self._refused()
        if self._conn is None or not self._conn.alive:
            if self._conn is not None:
                self._drop_connection()
            self._conn = _Connection(self.name)
        return self._conn

    def _refused(self) -> ServerUnavailable:
        return ServerUnavailable(f"the client of {self.name!r} is closed")

    def _drop_connection(self) -> None:
        """Forget a connection (a dead server, or the client closing): unlink our data segments,
        close everything of it, except what a call in another thread is using now: that call is
        woken (its wait re-checks the connection and fails), and what it uses is closed when it
        gives its channel back (closing a semaphore or unmapping a segment under a waiting thread
        crashes the process)."""
        # Called with the lock held, but give() runs without it: the connection is forgotten
        # first, so a give() from now on takes its retiring path (under the lock, after this);
        # one that looked before re-checks after putting the channel back (see give). The busy
        # set is copied in one C call (a comprehension would see give() change it under it).
        # A claim in progress on it (made without the lock, see _claim_unlocked) keeps it open
        # too, and gives its channel back when it finds the connection dropped.
        conn, self._conn = self._conn, None
        busy = {ch for ch in tuple(self._busy) if ch.conn is conn}
        for ch in self._all:
            if ch in busy:
                continue
            retire(ch)
        self._all, self._free = [], []
        if conn is None:
            return
        if not busy and not self._claiming.get(conn):
            conn.close()
            return
        conn.closing = True  # check() fails from now on: the waiting calls end at their next slice
        self._retiring[conn] = busy
        for ch in busy:
            if ch.sem is not None:
                ch.sem.release()  # wake a blocked wait at once

    def _settle(self, conn: _Connection) -> None:
        """Close a dropped connection once nothing of it is in use (the lock held): no call's
        channel, no claim in progress."""
        retiring = self._retiring.get(conn)
        if retiring is not None and not retiring and not self._claiming.get(conn):
            del self._retiring[conn]
            conn.close()

    def _wait(self, deadline_ns: int) -> float:
        """How long a claim may wait (for a hung server's beat, for the region mutex):
        ``connect_timeout``, and no later than a call's deadline (0: none)."""
        if not deadline_ns:
            return self.connect_timeout
        return min(self.connect_timeout, max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9))

    def _limit(self, wait: float) -> str:
        """What bounds a claim's wait of ``wait`` s (see ``_wait``), for its error."""
        if wait < self.connect_timeout:
            return "before the call's deadline"
        return f"within connect_timeout ({self.connect_timeout:g} s)"

    def _claim(self, conn: _Connection, deadline_ns: int = 0, held: int = 0) -> _Channel:
        """Claim a channel of ``conn``'s server (``held``: how many this client keeps for views),
        waiting for its region mutex up to ``_wait``. Not added to the pool: the caller does that,
        under the lock. Its server was found beating (10.3) before."""
        # the server's default_capacity is a suggestion: one over max_response_bytes would make
        # every claim reserve what the client's limit refuses to grow to (the areas grow on demand)
        capacity = self._capacity or min(conn.capacity, self._max_response)
        return claim(conn, self._wait(deadline_ns), self.connect_timeout, capacity, held)

    def _claim_unlocked(self, conn: _Connection, deadline_ns: int, held: int) -> _Channel | None:
        """Claim a channel of ``conn`` for a call (the lock held on entry and on return, but not
        during the claim): added to the pool and marked busy under the lock, so that a drop
        leaves it to the call; None if the client closed or the connection was dropped
        meanwhile (the channel, claimed on a connection no longer ours, is given back: the caller
        looks again). The claim waits for the region mutex, normally held for microseconds, but
        for up to ``connect_timeout`` when a client was stopped or killed inside it (the server
        frees it then in up to twice that, 10.4): under the lock, every other thread of the
        client that wanted a channel, and ``close()``, waited as long, whatever their own
        deadlines. It counts in ``_claiming`` meanwhile: toward ``max_channels``, and keeping a
        drop from closing ``conn`` under it."""
        self._claiming[conn] = self._claiming.get(conn, 0) + 1
        ch: _Channel | None = None
        self._cond.release()
        try:
            ch = self._claim(conn, deadline_ns, held)
        finally:
            self._cond.acquire()
            left = self._claiming[conn] - 1
            if left:
                self._claiming[conn] = left
            else:
                del self._claiming[conn]
            if ch is not None and (self._closed or conn is not self._conn):
                give_back_unopened(ch)  # the server reclaims it within a heartbeat (10.4)
                ch = None
            self._settle(conn)
        if ch is None:
            return None
        if not conn.claimed:  # the first channel of a connection made after the first (spec 10.5)
            conn.claimed = True
            self.reconnects += 1
        self._all.append(ch)
        return self._busy_now(ch)

    def resent(self) -> None:
        """Count a call moved to a new connection and published there (``_gone._Moved``)."""
        with self._cond:
            self.resends += 1

    def take(self, deadline_ns: int, pending_wait: float | None = None) -> _Channel:
        """A channel for one call (or a loan), waiting up to ``deadline_ns`` (0: none) for one to
        come free; ``pending_wait``: at most so many seconds for a channel whose request is still
        with the server (a loan's wait, bounded as the native clients bound theirs)."""
        held = self._local.held
        if held is not None and held.box[0] is not None:
            ch: _Channel = held.box[0]  # this thread's own channel: its previous outputs end here
            held.box[0] = None
            if self._usable(ch):
                self._busy.add(ch)
                if ch.conn is self._conn:  # see below
                    return ch
                self._busy.discard(ch)
            self.give(ch)
        try:
            ch = self._free.pop()  # the common case, lock-free: list.pop is atomic under the GIL
        except IndexError:
            return self._take_slow(deadline_ns, pending_wait)
        if self._usable(ch):
            self._busy.add(ch)
            # a drop in another thread forgets the connection, then copies _busy: still ours
            # now, the drop (if one comes) sees the channel busy and leaves it to this call
            if ch.conn is self._conn:
                return ch
            self._busy.discard(ch)
        elif ch.conn is self._conn:
            self._free.append(ch)
        return self._take_slow(deadline_ns, pending_wait)

    def _usable(self, ch: _Channel) -> bool:
        """Whether a free channel can take a call now: of the current connection, its server
        alive, no answer pending, the client open."""
        try:
            return ch.conn is self._conn and ch.conn.alive and ch.idle() and not self._closed
        except ValueError:  # a drop in another thread closed its connection under this look
            return False

    def _busy_now(self, ch: _Channel) -> _Channel:
        """Mark ``ch`` taken by a call, the lock held: a drop (under the lock) then leaves it to
        the call. Marked after the lock went, a drop in between retired it under the call."""
        self._busy.add(ch)
        return ch

    def _take_slow(self, deadline_ns: int, pending_wait: float | None) -> _Channel:
        """``take`` when no channel is free at once: reconnect, claim one more, or wait for one
        to come free (``SlowTake``)."""
        return SlowTake(self, deadline_ns, pending_wait).channel()

    def give(self, ch: _Channel, *, hold: bool = False) -> None:
        """Return a channel after a call. ``hold``: the call returned views on its response area,
        so the calling thread keeps the channel until its next call (or its end): another
        thread's request must not overwrite outputs that are still being read."""
        self._busy.discard(ch)
        if ch.conn is not self._conn:  # its connection was dropped (during the call, or before)
            self._give_dropped(ch)
            return
        if hold:
            held = self._local.held
            if held is None:
                held = self._local.held = _Held()
                weakref.finalize(held, self._unhold, weakref.ref(self), held.box)
                with self._cond:
                    self._holders.append(held.box)
            previous, held.box[0] = held.box[0], ch
            if previous is not None and previous is not ch:  # two loans at once on one thread
                self.give(previous)
            return
        self._free.append(ch)
        if ch.conn is not self._conn:  # dropped since the look above: the drop retired it (not
            self._give_dropped(ch)  # busy any more) or waits for it (busy then)
            return
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def _give_dropped(self, ch: _Channel) -> None:
        """A channel of a dropped connection is back: retire it if the drop left it to its call,
        and close the connection with its last one. Under the lock, so after the drop is done."""
        with self._cond:
            with contextlib.suppress(ValueError):
                self._free.remove(ch)
            retiring = self._retiring.get(ch.conn)
            if retiring is not None and ch in retiring:
                retire(ch)
                retiring.discard(ch)
                self._settle(ch.conn)

    @staticmethod
    def _unhold(pool_ref: weakref.ref[ChannelPool], box: list[_Channel | None]) -> None:
        """A thread that held a channel ended: the channel goes back to the pool."""
        pool, ch = pool_ref(), box[0]
        box[0] = None
        if pool is None or pool._pid != os.getpid():  # a forked child's copy: the parent's channel
            return
        with pool._cond:
            pool._holders = [b for b in pool._holders if b is not box]
        if ch is not None:
            pool.give(ch)

    # --- close, or the client dropped ----------------------------------------------------------

    def close(self) -> None:
        """Give every channel back to the server (waiting up to ``connect_timeout`` for the region
        mutex) and close everything; calls from now on fail ``ServerUnavailable``."""
        self._shut(self.connect_timeout)

    def dropped(self) -> None:
        """The client was dropped without ``close()`` (``weakref.finalize`` calls this when it
        becomes unreachable; never at interpreter exit, where the process's end frees it all).

        The garbage collector runs this on whatever thread allocated, at any point of that
        thread's code, which may hold the region mutex itself (claiming a channel for another
        client of the same server, or a server in this process reclaiming one): it waits for the
        mutex only as ``drop_wait`` allows, marking the channels for the server to reclaim if it
        stays busy (``release_channels``; both in ``_ownership``), and takes no lock but this
        pool's own (reentrant, and held by no call: no call runs on a client nobody can reach).
        In a forked child, before ``_forget_after_fork`` ran, the channels are the parent's: it
        leaves them alone."""
        if self._pid != os.getpid():
            return
        if self._shut(None):
            warnings.warn(
                f"shm client of {self.name!r} was not closed; its channels were given back when it "
                "was dropped (call close(), or use it as a context manager)",
                ResourceWarning,
                stacklevel=3,  # past finalize.__call__: the code that dropped it (or collected)
            )

    def _shut(self, wait: float | None) -> bool:
        """Close once (``wait``: for the region mutex; None: as a finalizer may); False if closed.
        A ``close()`` while another thread's is under way returns once that one is done (it
        returned at once, the channels still taken: a client connecting right after failed
        ``Overloaded``); not one on the closing thread itself (a signal handler's)."""
        with self._cond:
            if self._closed:
                me = threading.get_ident()
                while wait is not None and self._closing not in (None, me):
                    self._cond.wait()
                return False
            self._closed = True
            self._closing = threading.get_ident()
            try:
                self._shut_now(wait)
            finally:
                self._closing = None
                self._cond.notify_all()
        return True

    def _shut_now(self, wait: float | None) -> None:
        """``_shut``'s work, the lock held (let go during the waits)."""
        conn = self._conn
        if conn is not None:  # first: a call about to publish sees it (_exchange), and does not
            conn.closing = conn.client_closed = True
        self._cond.notify_all()  # calls waiting for a channel refuse now
        if conn is not None and conn.alive:
            # The wait for the region mutex (up to connect_timeout while a stopped client
            # holds it) holds no lock: other threads' calls meanwhile fail "closed" at once,
            # not when it ends. Closed, nothing changes the connection or its channels but
            # this: a take refuses, a claim in progress gives its channel back.
            owed = wait is not None  # (a finalizer waits for no answer: it may run anywhere)
            wait = drop_wait(conn, self.connect_timeout) if wait is None else wait
            self._cond.release()
            try:
                try:
                    if owed:
                        await_owed(conn, self._all, self._busy)
                finally:  # an interrupt in the wait: the channels go back all the same (owned
                    # by a live client, none is reclaimed)
                    release_channels(conn, self._all, self._busy, wait)
            finally:
                self._cond.acquire()
        self._drop_connection()
