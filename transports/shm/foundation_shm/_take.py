"""A call's take of a channel when none of its client's pool is free at once (``ChannelPool.take``'s
slow path): it reconnects to a server that died, claims one more channel, or waits for one to come
free, watching meanwhile for a hung server and for one of its own channels still with the server
(an abandoned call's)."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING

from foundation_ml import call_abandoned
from foundation_ml.errors import DeadlineExceeded, Overloaded, ServerUnavailable

from ._channel import _Channel, _Connection
from ._gone import _GoneWhileWaiting
from ._ownership import server_has_free

if TYPE_CHECKING:
    from ._pool import ChannelPool

__all__ = ["SlowTake"]


class SlowTake:
    """One call's take of a channel of ``pool`` when none was free at once, waiting up to
    ``deadline_ns`` (0: none); ``pending_wait``: at most so many seconds for a channel whose
    request is still with the server (a loan's wait). Each step runs with the pool's lock held,
    let go only while it waits; after every wait the take looks again from the top (``channel``):
    the pool may have changed meanwhile.

    What it keeps from one look to the next: ``until``, the end of its wait for a hung server's
    beat and what bounds it (``_beating``); ``full``, the connection on which a claim found the
    server's channels all taken: it waits for ours to come free, unless the server shows a free
    channel again (another client gave one back) or the connection changed (a reconnect): then it
    claims again; ``stall``, when the wait for a channel still with the server gives up
    (``pending_wait``); ``hung_end``, when that wait gives up on a server that stays hung
    (``connect_timeout``); ``seen``, the connection whose live server it last found (its request
    not written yet: a server of it found gone then is reported as a waiting call's, spec 7.5)."""

    __slots__ = ("deadline_ns", "full", "hung_end", "pending_wait", "pool", "seen", "stall", "until")

    def __init__(self, pool: ChannelPool, deadline_ns: int, pending_wait: float | None) -> None:
        self.pool = pool
        self.deadline_ns = deadline_ns
        self.pending_wait = pending_wait
        self.stall = 0
        self.hung_end = 0
        self.full: _Connection | None = None
        self.seen: _Connection | None = None
        self.until: tuple[int, str] | None = None

    def channel(self) -> _Channel:
        """The channel, marked busy for the call: one come free, or claimed."""
        pool = self.pool
        with pool._cond:
            while True:
                self._refuse()
                conn = pool._conn
                if conn is None or not conn.alive:
                    self._gone_meanwhile()
                    ch = self._reconnect()
                else:
                    self.seen = conn
                    ch = self._free_one()
                    if ch is None:
                        ch = self._claim_or_wait(conn)
                if ch is not None:
                    return ch

    def _refuse(self) -> None:
        """Fail the take if the client was closed, or the call abandoned, meanwhile."""
        pool = self.pool
        if pool._closed:
            raise pool._refused()
        if call_abandoned():  # an ainfer cancelled meanwhile: send nothing nobody awaits
            pool._cond.notify()  # a wake-up this thread took is another waiter's
            raise CancelledError(f"the call to {pool.name!r} was abandoned before it was sent")

    def _gone_meanwhile(self) -> None:
        """Fail ``_GoneWhileWaiting`` if the server this take found alive (``seen``) was found
        gone since (dead, or stopped; by another thread's call, or this take's wait for its
        beat): the call's request was never written, so it goes once to a new server of the
        name, or fails '...; not sent: REASON' (``_gone.again``), as a call waiting behind an
        abandoned one does (``_pending_server_lives``). The reconnect's plain error said '... is
        gone', as if the request might have run. Not for a region lost under this client (its
        own message says more), nor a server that was gone before this take first looked."""
        seen = self.seen
        if seen is not None and self._seen_gone(seen):
            raise _GoneWhileWaiting(seen.gone())

    def _seen_gone(self, conn: _Connection) -> bool:
        """Whether ``conn`` is the connection this take found serving (``seen``) and its server
        was found gone since, its region still whole (one lost under this client says more)."""
        return conn is self.seen and not conn.alive and not conn.ctl.faulted()

    def _reconnect(self) -> _Channel | None:
        """A channel of a new connection (none yet, or its server died); None: look again."""
        pool = self.pool
        pool._drop_connection()
        conn = pool.connection()
        if not self._beating(conn):
            return None
        return pool._claim_unlocked(conn, self.deadline_ns, 0)

    def _free_one(self) -> _Channel | None:
        """A free channel of the connection that can take a call now, taken; None if none is."""
        pool = self.pool
        for ch in list(pool._free):  # a copy: the lock-free path pops meanwhile
            if ch.conn is pool._conn and ch.idle():  # (a give() may be re-checking one)
                try:
                    pool._free.remove(ch)
                except ValueError:
                    continue  # another thread's lock-free pop took it first
                return pool._busy_now(ch)
        return None

    def _claim_or_wait(self, conn: _Connection) -> _Channel | None:
        """None free on ``conn`` (the pool's connection): claim one more if the pool may, else
        wait for one to come free; None: look again."""
        pool = self.pool
        # Channels kept for other threads' unread outputs do not count: a pool of more
        # threads than `channels` must not wait for threads that are not calling.
        # Claims in progress (other threads', without the lock) count.
        held = sum(1 for box in pool._holders if box[0] is not None)
        pending = self._pending_free()
        if self._may_claim(pending, held):
            return self._claim_one_more(conn, held)
        self._wait_for_one(pending)
        return None

    def _may_claim(self, pending: _Channel | None, held: int) -> bool:
        """Whether the pool may claim one more channel: under ``max_channels`` (``held``: the
        channels kept for views, which do not count), unless a claim on this connection found
        the server's all taken and none is free again: then what comes free of ours is waited
        for (``_wait_for_one``), while something of ours can: a call that waited for another
        thread's channel, which that thread then kept for its views, waited for ever (claiming
        again fails Overloaded, saying so). Nor while the server is hung with a request of ours
        (``pending``: it takes no new channel): the wait for that one says it is still there."""
        pool, full = self.pool, self.full
        return (
            (
                full is None
                or full is not pool._conn
                or not self._may_come_free(pending)
                or server_has_free(full)
            )
            and (pending is None or pending.conn.hung() is None)
            and len(pool._all) + sum(pool._claiming.values()) - held < pool.max_channels
        )

    def _claim_one_more(self, conn: _Connection, held: int) -> _Channel | None:
        """A channel claimed on ``conn`` once its server beats; None: look again."""
        pool = self.pool
        if not self._beating(conn):
            return None
        try:
            return pool._claim_unlocked(conn, self.deadline_ns, held)
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
            self.full = pool._conn
            return None

    def _wait_for_one(self, pending: _Channel | None) -> None:
        """Wait for a channel to come free, the lock let go, up to the call's deadline (and
        ``pending_wait`` for ``pending``, one of ours still with the server); fail if that
        server is gone, or hung past ``_give_up_if_hung``'s bound. The take then looks again."""
        pool = self.pool
        limit = self.deadline_ns
        if pending is not None:
            if not self._pending_server_lives(pending):
                return  # the client was closed meanwhile: the loop's top refuses
            if self.pending_wait is not None:
                self.stall = self.stall or time.monotonic_ns() + int(self.pending_wait * 1e9)
                limit = min(limit, self.stall) if limit else self.stall
        self._give_up_if_hung(pending)
        left = (limit - time.monotonic_ns()) / 1e9 if limit else 0.05
        if left <= 0:
            if pending is not None:
                raise DeadlineExceeded(
                    f"no free channel to {pool.name!r}: the previous request on channel "
                    f"{pending.index} (a call that passed its deadline) is still with the server"
                )
            raise DeadlineExceeded(f"no free channel to {pool.name!r} before the deadline")
        pool._waiters += 1
        try:
            pool._cond.wait(min(left, 0.005 if pool._free else 0.05))
        finally:
            pool._waiters -= 1

    def _pending_server_lives(self, pending: _Channel) -> bool:
        """Whether the server of ``pending`` lives; False if the client was closed meanwhile.
        No call waits on its answer, so none notices a dead server: checked here, as a call's
        wait does (else a server that died never frees it: a hang)."""
        try:
            pending.conn.check()
        except ServerUnavailable as exc:
            if self.pool._closed:
                return False
            # this call's request is not written yet: the call sends it once to a
            # new server of the name (_gone.again, spec 7.5), or fails gone
            # saying why not
            raise _GoneWhileWaiting(exc.message) from None
        return True

    def _give_up_if_hung(self, pending: _Channel | None) -> None:
        """Fail ``ServerUnavailable`` once the server this take waits on has stayed hung (10.3)
        for ``connect_timeout``, or past the deadline. A hung server answers nothing: the wait
        for a channel still with it (ours ``pending``, or, its channels all taken, in another
        thread's call) is one for its beat, as a claim's (``_beating``); without this bound a
        call with no deadline waited for ever, its request not sent."""
        pool, full, deadline_ns = self.pool, self.full, self.deadline_ns
        watched = pending.conn if pending is not None else full if full is pool._conn else None
        why = None if watched is None else watched.hung()
        if why is None:
            self.hung_end = 0
            return
        hung_end = self.hung_end = self.hung_end or time.monotonic_ns() + int(pool.connect_timeout * 1e9)
        if time.monotonic_ns() < (min(hung_end, deadline_ns) if deadline_ns else hung_end):
            return
        limit_said = (
            "before the call's deadline"
            if deadline_ns and deadline_ns < hung_end
            else f"within connect_timeout ({pool.connect_timeout:g} s)"
        )
        still = (
            f"the previous request on channel {pending.index} (a call that passed its "
            "deadline) is still with it"
            if pending is not None
            else "its channels are all taken, this client's by calls of other threads "
            "whose requests are still with it"
        )
        raise ServerUnavailable(
            f"{why} (its process is stopped or stalled, and no beat came {limit_said}): {still}"
        )

    def _beating(self, conn: _Connection) -> bool:
        """Whether ``conn``'s server beats, so that a channel may be claimed on it now (the lock
        held). If it is hung (10.3), wait for its beat *without* the lock, up to the pool's
        ``_wait`` from the first such wait of this take (``until``), and return False: the caller
        looks again from the start, the pool may have changed. Waited under the lock, every other
        thread of the client that wanted a channel, and ``close()``, waited as long (up to
        ``connect_timeout``), whatever their own deadlines."""
        if conn.hung() is None:
            return True
        pool = self.pool
        if self.until is None:
            wait = pool._wait(self.deadline_ns)
            self.until = (time.monotonic_ns() + int(wait * 1e9), pool._limit(wait))
        end, limit = self.until
        pool._cond.release()
        try:
            conn.wait_beating(max(0.0, (end - time.monotonic_ns()) / 1e9), limit)
        except ValueError:  # dropped and closed meanwhile (close(), a dead server): look again
            pass
        except ServerUnavailable:
            if self._seen_gone(conn):
                return False  # gone while this take waited for one more channel: the top says so
            if not conn.closing:  # hung past the wait, or gone: said so
                raise
            # dropped by another thread meanwhile (its call found the server dead, or close()):
            # not "closed during the call"; looking again says what is true now
        finally:
            pool._cond.acquire()
        return False

    def _pending_free(self) -> _Channel | None:
        """A free channel of the connection whose request is still with the server (a call that
        passed its deadline), the lock held: the wait for it is this take's to watch."""
        pool = self.pool
        for ch in list(pool._free):
            if ch.conn is pool._conn and not ch.idle():
                return ch
        return None

    def _idle_free(self) -> bool:
        """Whether a free channel of the connection can take a call now (the lock held)."""
        pool = self.pool
        return any(ch.conn is pool._conn and ch.idle() for ch in list(pool._free))

    def _may_come_free(self, pending: _Channel | None) -> bool:
        """Whether a channel of this client's connection may come free without a thread that is
        not calling (the lock held): ``pending`` (``_pending_free``), one still with the server,
        or one in another thread's call. One kept for a thread's views does not count."""
        if pending is not None:
            return True
        conn = self.pool._conn
        busy = tuple(self.pool._busy)  # (one C call: a lock-free give() changes it)
        return any(ch.conn is conn for ch in busy)
