"""The shm client's channels: claimed from the server under its region mutex, pooled across
threads, held by a thread while its outputs (views on the response area) are in use, and given
back when the client closes or is dropped.

``ChannelPool`` owns the connection and the channels of one ``ShmClient`` and holds no reference
to it, so a client dropped without ``close()`` can be finalized (``weakref.finalize``) and its
pool give everything back; the client itself (``_client.py``) writes requests and reads responses
on the channel it takes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import CancelledError

import posix_ipc

from foundation_ml import call_abandoned
from foundation_ml.errors import DeadlineExceeded, Overloaded, ServerUnavailable

from . import _layout as L
from ._channel import _Channel, _Connection, _pages
from ._gone import _GoneWhileWaiting
from ._liveness import is_alive, own_start_time
from ._segments import drain, open_semaphore, sem_wait

__all__ = ["ChannelPool"]

_R = L.RegionField
_C = L.ChannelField
_POOLS: weakref.WeakSet[ChannelPool] = weakref.WeakSet()  # every live pool, for fork
_SAME_PROCESS_WAIT = 0.05  # s: a finalizer's wait for a region mutex another thread of ours holds
_OWED_GRACE = 0.1  # s: close()'s wait for the late answer of an abandoned call (as C, Go, Rust)


class _Holding(threading.local):
    """How many region mutexes this thread holds (or is about to) in the code below: a finalizer
    the garbage collector runs on it meanwhile must not wait for one of them."""

    depth = 0


_holding = _Holding()


@contextlib.contextmanager
def _region_mutex(conn: _Connection, wait: float) -> Iterator[None]:
    """Hold the server's region mutex (``posix_ipc.BusyError`` if it stays busy ``wait`` s),
    saying so in ``mutex_holder_pid`` (spec 10.1) and, for finalizers, in ``_holding``."""
    _holding.depth += 1
    u32, pid, mutex = conn.ctl.u32, os.getpid(), conn.mutex
    try:
        # the windows where the mutex is held with holder 0 (an interrupt right after acquire, or
        # between clearing and release) are kept to one store each; the server frees a mutex that
        # stays held by no one (spec 10.4)
        if not sem_wait(mutex, wait):  # (a signal handled meanwhile does not end the wait)
            raise posix_ipc.BusyError(f"the region mutex of {conn.name!r} stayed busy for {wait:g} s")
        try:
            u32[_R.MUTEX_HOLDER // 4] = pid
            yield
        finally:
            try:
                u32[_R.MUTEX_HOLDER // 4] = 0
            finally:
                mutex.release()
    finally:
        _holding.depth -= 1


def _serving(conn: _Connection) -> bool:
    """Whether ``conn``'s server still answers requests it has (READY, or STOPPING: it drains)."""
    return conn.ctl.u32[_R.STATE // 4] in (L.RegionState.READY, L.RegionState.STOPPING)


def _retire(ch: _Channel) -> None:
    ch.detach()
    if ch.sem is not None:
        ch.sem.close()
        ch.sem = None


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


def _kept(held: int) -> str:
    """Why a client that keeps channels for output views found the server's channels all taken."""
    return (
        f"this client keeps {held} of them for threads holding output views (a thread that got "
        "views keeps its channel until its next call on the client, or its end); copy the "
        "outputs instead: connect(copy_outputs=True), infer(..., copy_outputs=True) or "
        "InferenceClient(copy=True)"
    )


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


class ChannelPool:
    """The connection to one server and the channels claimed on it (up to ``max_channels`` in use
    at once; a channel kept for a thread's unread outputs does not count).

    Kept channels are bounded only by the server's channel count: one cannot be taken back while
    its thread may still read its views, and a call must not wait for a thread that is not
    calling (it may never call again). A call that finds the server's channels all taken while
    this client keeps some fails ``Overloaded`` saying so (``_kept``)."""

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
        _POOLS.add(self)
        with self._cond:  # no other thread knows this pool yet: the claim may hold the lock
            try:
                conn = self.connection()
                conn.wait_beating(self.connect_timeout, self._limit(self.connect_timeout))
                ch = self._claim(conn)
                self._all.append(ch)
                self._free.append(ch)
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
            _retire(ch)
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
        wait = self._wait(deadline_ns)
        try:
            with _region_mutex(conn, wait):
                ch = self._claim_free(conn, held)
        except posix_ipc.BusyError:
            if wait < self.connect_timeout:
                raise DeadlineExceeded(
                    f"shm server {self.name!r}: region mutex still busy at the deadline"
                ) from None
            raise Overloaded(
                f"shm server {self.name!r}: region mutex busy for {self.connect_timeout}s"
            ) from None
        try:
            ch.sem = open_semaphore(L.channel_sem_name(self.name, ch.index))
            drain(ch.sem)
        except BaseException as exc:
            self._give_back_unopened(ch)
            if isinstance(exc, posix_ipc.ExistentialError):  # the server stopped and removed its objects
                conn.alive = False
                raise ServerUnavailable(f"shm server {self.name!r} went away while connecting") from None
            if isinstance(exc, (OSError, posix_ipc.Error)):  # EMFILE, ENFILE; EACCES: PermissionsError
                raise ServerUnavailable(
                    f"shm server {self.name!r}: cannot open the semaphore of channel {ch.index} "
                    f"({L.channel_sem_name(self.name, ch.index)}): {exc}"
                ) from None
            raise
        return ch

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
                self._give_back_unopened(ch)  # the server reclaims it within a heartbeat (10.4)
                ch = None
            self._settle(conn)
        if ch is None:
            return None
        self._all.append(ch)
        return self._busy_now(ch)

    @staticmethod
    def _give_back_unopened(ch: _Channel) -> None:
        """A channel claimed but not usable (its semaphore could not be opened, or its client
        closed or dropped the connection while it was being claimed): give it back as
        a disconnect without the region mutex does (spec 10.1), ``owner_start_time = 0`` (only the
        owner writes that word), and the server reclaims it within a heartbeat (10.4). Left owned
        by this live process it was never reclaimed: a process whose connects kept failing lost
        one channel per try, until every client of the server got Overloaded."""
        ch.conn.ctl.u64[(ch.base + _C.OWNER_START) // 8] = 0
        _retire(ch)

    def _claim_free(self, conn: _Connection, held: int) -> _Channel:
        """Claim the first free channel (spec 10.1), the region mutex held."""
        u32, u64 = conn.ctl.u32, conn.ctl.u64
        try:  # owner_start_time 0 would say "given back" (10.1): the server would reclaim it live
            started = own_start_time()
        except OSError as exc:  # EMFILE at this process's file limit, ENFILE, ENOMEM
            raise ServerUnavailable(
                f"shm server {self.name!r}: cannot read this process's start time "
                f"(/proc/{os.getpid()}/stat): {exc.strerror or exc}; no channel claimed"
            ) from None
        for index in range(conn.channel_count):
            if not u32[(L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE + _C.OWNER_PID) // 4]:
                break
        else:
            full = f"shm server {self.name!r}: all {conn.channel_count} channels are in use"
            raise Overloaded(f"{full}: {_kept(held)}" if held else full)
        ch = _Channel(conn, index)
        try:
            # the server's default_capacity is a suggestion: one over max_response_bytes would make
            # every claim reserve what the client's limit refuses to grow to (the areas grow on demand)
            capacity = _pages(self._capacity or min(conn.capacity, self._max_response))
            ch.attach(capacity, capacity)
            u32[ch.sleeping_word] = 0
            u64[(ch.base + _C.OWNER_START) // 8] = started
            ch.seq = u64[ch.sseq]
            u64[ch.cseq] = ch.seq
            u32[(ch.base + _C.OWNER_PID) // 4] = os.getpid()
            u64[_R.CONNECT_EPOCH // 8] += 1
        except BaseException:
            ch.detach()
            raise
        return ch

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

    def _pending_free(self) -> _Channel | None:
        """A free channel of the connection whose request is still with the server (a call that
        passed its deadline), the lock held: the wait for it is this pool's to watch."""
        for ch in list(self._free):
            if ch.conn is self._conn and not ch.idle():
                return ch
        return None

    def _idle_free(self) -> bool:
        """Whether a free channel of the connection can take a call now (the lock held)."""
        return any(ch.conn is self._conn and ch.idle() for ch in list(self._free))

    def _may_come_free(self, pending: _Channel | None) -> bool:
        """Whether a channel of this client's connection may come free without a thread that is
        not calling (the lock held): ``pending`` (``_pending_free``), one still with the server,
        or one in another thread's call. One kept for a thread's views does not count."""
        if pending is not None:
            return True
        conn = self._conn
        busy = tuple(self._busy)  # (one C call: a lock-free give() changes it)
        return any(ch.conn is conn for ch in busy)

    @staticmethod
    def _server_has_free(conn: _Connection) -> bool:
        """Whether ``conn``'s server has a channel no client owns (read without the region
        mutex: a claim under it says for sure). A call that found them all taken waited for its
        own to come free even once another client gave one back."""
        u32 = conn.ctl.u32
        return any(
            not u32[(L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE + _C.OWNER_PID) // 4]
            for index in range(conn.channel_count)
        )

    def _beating(self, conn: _Connection, deadline_ns: int, until: list[tuple[int, str]]) -> bool:
        """Whether ``conn``'s server beats, so that a channel may be claimed on it now (the lock
        held). If it is hung (10.3), wait for its beat *without* the lock, up to ``_wait`` from
        the first such wait of this take (kept in ``until``: its end and what bounds it), and
        return False: the caller looks again from the start, the pool may have changed. Waited
        under the lock, every other thread of the client that wanted a channel, and ``close()``,
        waited as long (up to ``connect_timeout``), whatever their own deadlines."""
        if conn.hung() is None:
            return True
        if not until:
            wait = self._wait(deadline_ns)
            until.append((time.monotonic_ns() + int(wait * 1e9), self._limit(wait)))
        end, limit = until[0]
        self._cond.release()
        try:
            conn.wait_beating(max(0.0, (end - time.monotonic_ns()) / 1e9), limit)
        except ValueError:  # dropped and closed meanwhile (close(), a dead server): look again
            pass
        except ServerUnavailable:
            if not conn.closing:  # hung past the wait, or gone: said so
                raise
            # dropped by another thread meanwhile (its call found the server dead, or close()):
            # not "closed during the call"; looking again says what is true now
        finally:
            self._cond.acquire()
        return False

    def _take_slow(self, deadline_ns: int, pending_wait: float | None) -> _Channel:
        stall = 0  # when the wait for a channel still with the server gives up (pending_wait)
        hung_end = 0  # when the wait for it gives up on a server that stays hung (connect_timeout)
        # the connection on which a claim found the server's channels all taken: wait for ours to
        # come free, unless the server shows a free channel again (another client gave one back)
        # or the connection changed (a reconnect): then claim again
        full: _Connection | None = None
        until: list[tuple[int, str]] = []  # how long this take waits for a hung server's beat
        with self._cond:
            while True:
                if self._closed:
                    raise self._refused()
                if call_abandoned():  # an ainfer cancelled meanwhile: send nothing nobody awaits
                    self._cond.notify()  # a wake-up this thread took is another waiter's
                    raise CancelledError(f"the call to {self.name!r} was abandoned before it was sent")
                if self._conn is None or not self._conn.alive:
                    self._drop_connection()
                    conn = self.connection()
                    if not self._beating(conn, deadline_ns, until):
                        continue
                    ch = self._claim_unlocked(conn, deadline_ns, 0)
                    if ch is None:
                        continue
                    return ch
                for ch in list(self._free):  # a copy: the lock-free path pops meanwhile
                    if ch.conn is self._conn and ch.idle():  # (a give() may be re-checking one)
                        try:
                            self._free.remove(ch)
                        except ValueError:
                            continue  # another thread's lock-free pop took it first
                        return self._busy_now(ch)
                # Channels kept for other threads' unread outputs do not count: a pool of more
                # threads than `channels` must not wait for threads that are not calling.
                # Claims in progress (other threads', without the lock) count.
                held = sum(1 for box in self._holders if box[0] is not None)
                pending = self._pending_free()
                # one more channel, unless a claim on this connection found the server's all
                # taken and none is free again: then what comes free of ours is waited for
                # (below), while something of ours can: a call that waited for another thread's
                # channel, which that thread then kept for its views, waited for ever (claiming
                # again fails Overloaded, saying so). Nor while the server is hung with a request
                # of ours (it takes no new channel): the wait for that one says it is still there
                if (
                    (
                        full is None
                        or full is not self._conn
                        or not self._may_come_free(pending)
                        or self._server_has_free(full)
                    )
                    and (pending is None or pending.conn.hung() is None)
                    and len(self._all) + sum(self._claiming.values()) - held < self.max_channels
                ):
                    conn = self._conn
                    if not self._beating(conn, deadline_ns, until):
                        continue
                    try:
                        ch = self._claim_unlocked(conn, deadline_ns, held)
                    except Overloaded:
                        # the server's channels are all taken (or its region mutex stayed busy):
                        # one of ours still with the server (an abandoned call's, given back or
                        # about to be) comes free when its late answer is in, and one in another
                        # thread's call when that call ends: wait for it, as when this pool is
                        # at max_channels, up to the deadline. With none, nothing comes free,
                        # unless one came free during the claim (the late answer came in just
                        # then: the pool showed none still with the server, and the call failed
                        # Overloaded with that channel free): the loop's top takes it
                        if not self._may_come_free(self._pending_free()) and not self._idle_free():
                            raise
                        full = self._conn
                        continue
                    if ch is None:
                        continue
                    return ch
                limit = deadline_ns
                if pending is not None:
                    # no call waits on its answer, so none notices a dead server: check here,
                    # as a call's wait does (else a server that died never frees it: a hang)
                    try:
                        pending.conn.check()
                    except ServerUnavailable as exc:
                        if self._closed:
                            continue  # the loop's top refuses
                        # this call's request is not written yet: the call sends it once to a
                        # new server of the name (ShmClient._again, spec 7.5), or fails gone
                        # saying why not. (A connection another thread's call dropped, finding
                        # the server dead, says "closed during the call": it is gone too.)
                        gone = pending.conn.gone() if pending.conn.closing else exc.message
                        raise _GoneWhileWaiting(gone) from None
                    if pending_wait is not None:
                        stall = stall or time.monotonic_ns() + int(pending_wait * 1e9)
                        limit = min(limit, stall) if limit else stall
                # a hung server (10.3) answers nothing: the wait for a channel still with it (ours
                # pending, or, its channels all taken, in another thread's call) is one for its
                # beat, as a claim's (_beating), up to connect_timeout and the deadline; without
                # it a call with no deadline waited for ever, its request not sent
                watched = pending.conn if pending is not None else full if full is self._conn else None
                why = None if watched is None else watched.hung()
                if why is None:
                    hung_end = 0
                else:
                    hung_end = hung_end or time.monotonic_ns() + int(self.connect_timeout * 1e9)
                    if time.monotonic_ns() >= (min(hung_end, deadline_ns) if deadline_ns else hung_end):
                        limit_said = (
                            "before the call's deadline"
                            if deadline_ns and deadline_ns < hung_end
                            else f"within connect_timeout ({self.connect_timeout:g} s)"
                        )
                        still = (
                            f"the previous request on channel {pending.index} (a call that passed its "
                            "deadline) is still with it"
                            if pending is not None
                            else "its channels are all taken, this client's by calls of other threads "
                            "whose requests are still with it"
                        )
                        raise ServerUnavailable(
                            f"{why} (its process is stopped or stalled, and no beat came "
                            f"{limit_said}): {still}"
                        )
                left = (limit - time.monotonic_ns()) / 1e9 if limit else 0.05
                if left <= 0:
                    if pending is not None:
                        raise DeadlineExceeded(
                            f"no free channel to {self.name!r}: the previous request on channel "
                            f"{pending.index} (a call that passed its deadline) is still with the server"
                        )
                    raise DeadlineExceeded(f"no free channel to {self.name!r} before the deadline")
                self._waiters += 1
                try:
                    self._cond.wait(min(left, 0.005 if self._free else 0.05))
                finally:
                    self._waiters -= 1

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
                _retire(ch)
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
        mutex only as ``_drop_wait`` allows, marking the channels for the server to reclaim if it
        stays busy (``_release_channels``), and takes no lock but this pool's own (reentrant, and
        held by no call: no call runs on a client nobody can reach). In a forked child, before
        ``_forget_after_fork`` ran, the channels are the parent's: it leaves them alone."""
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
            conn.closing = True
        self._cond.notify_all()  # calls waiting for a channel refuse now
        if conn is not None and conn.alive:
            # The wait for the region mutex (up to connect_timeout while a stopped client
            # holds it) holds no lock: other threads' calls meanwhile fail "closed" at once,
            # not when it ends. Closed, nothing changes the connection or its channels but
            # this: a take refuses, a claim in progress gives its channel back.
            owed = wait is not None  # (a finalizer waits for no answer: it may run anywhere)
            wait = self._drop_wait(conn) if wait is None else wait
            self._cond.release()
            try:
                try:
                    if owed:
                        self._await_owed(conn)
                finally:  # an interrupt in the wait: the channels go back all the same (owned
                    self._release_channels(conn, wait)  # by a live client, none is reclaimed)
            finally:
                self._cond.acquire()
        self._drop_connection()

    def _drop_wait(self, conn: _Connection) -> float:
        """How long a finalizer may wait for the region mutex: not at all while this thread holds
        one (the collector ran inside a claim or a release here); briefly while another thread of
        this process does (a claim takes microseconds; a server in this process reclaiming a
        channel could be this very thread); otherwise as long as ``close()`` does."""
        if _holding.depth:
            return 0.0
        if conn.ctl.u32[_R.MUTEX_HOLDER // 4] == os.getpid():
            return min(self.connect_timeout, _SAME_PROCESS_WAIT)
        return self.connect_timeout

    def _await_owed(self, conn: _Connection) -> None:
        """Wait up to ``_OWED_GRACE`` for the late answers still owed on channels no call is in
        (their calls passed their deadlines), so that they are freed, not given back: a channel
        given back stays taken until the server's next beat reclaims it (10.4), and a client
        connecting meanwhile to a server whose channels were all taken failed ``Overloaded``
        though the answer came a moment after the close. A server that stopped (its region
        STOPPED: it answers nothing more, though its process may live on), died or is hung
        answers nothing: no wait (one that stops during it ends it; one that dies costs the
        moment, no more)."""
        owed = [ch for ch in self._all if ch.conn is conn and ch not in self._busy and not ch.idle()]
        if not owed or not _serving(conn) or conn.hung() is not None or not is_alive(conn.pid, conn.started):
            return
        end = time.monotonic() + _OWED_GRACE
        while not all(ch.idle() for ch in owed) and _serving(conn) and time.monotonic() < end:
            time.sleep(0.001)

    def _release_channels(self, conn: _Connection, wait: float) -> None:
        """Spec 10.1, disconnect: under the region mutex, free each idle channel, and mark one
        whose request is still pending (``owner_start_time = 0``) for the server to reclaim when
        done. If the mutex stays busy for ``wait`` seconds, every channel is marked so, without
        it: that word is the owning client's to write, and the server reclaims a channel whose
        owner's start time does not match within a heartbeat (spec 10.4)."""
        u32, u64 = conn.ctl.u32, conn.ctl.u64
        try:
            with _region_mutex(conn, wait):
                for ch in self._all:
                    if ch.idle() and ch not in self._busy:
                        u32[(ch.base + _C.OWNER_PID) // 4] = 0
                    # a request still with the server, or a call that took the channel and may
                    # be about to publish one (freed, another client could claim it first): the
                    # server reclaims it (and the call, seeing `closing`, publishes nothing)
                    else:
                        u64[(ch.base + _C.OWNER_START) // 8] = 0
                u64[_R.CONNECT_EPOCH // 8] += 1
        except posix_ipc.BusyError:
            for ch in self._all:
                u64[(ch.base + _C.OWNER_START) // 8] = 0
