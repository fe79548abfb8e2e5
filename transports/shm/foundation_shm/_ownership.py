"""Which of a server's channels a client owns (spec 10.1): claimed, and given back, under the
server's region mutex, through the ownership words of each channel block (``owner_pid``,
``owner_start_time``). ``ChannelPool`` decides when; this module writes the words."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence

import posix_ipc

from foundation_ml.errors import DeadlineExceeded, Overloaded, ServerUnavailable

from . import _layout as L
from ._channel import _Channel, _Connection, _pages
from ._liveness import is_alive, own_start_time
from ._segments import drain, open_semaphore, sem_wait

__all__ = [
    "await_owed",
    "claim",
    "drop_wait",
    "give_back_unopened",
    "region_mutex",
    "release_channels",
    "retire",
    "server_has_free",
]

_R = L.RegionField
_C = L.ChannelField
_SAME_PROCESS_WAIT = 0.05  # s: a finalizer's wait for a region mutex another thread of ours holds
_OWED_GRACE = 0.1  # s: close()'s wait for the late answer of an abandoned call (as C, Go, Rust)


class _Holding(threading.local):
    """How many region mutexes this thread holds (or is about to) in the code below: a finalizer
    the garbage collector runs on it meanwhile must not wait for one of them."""

    depth = 0


_holding = _Holding()


@contextlib.contextmanager
def region_mutex(conn: _Connection, wait: float) -> Iterator[None]:
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


def retire(ch: _Channel) -> None:
    """Let go of a channel's data segment (unlinked, unmapped) and close its semaphore: this
    client uses it no more."""
    ch.detach()
    if ch.sem is not None:
        ch.sem.close()
        ch.sem = None


def _kept(held: int) -> str:
    """Why a client that keeps channels for output views found the server's channels all taken."""
    return (
        f"this client keeps {held} of them for threads holding output views (a thread that got "
        "views keeps its channel until its next call on the client, or its end); copy the "
        "outputs instead: connect(copy_outputs=True), infer(..., copy_outputs=True) or "
        "InferenceClient(copy=True)"
    )


def claim(conn: _Connection, wait: float, connect_timeout: float, capacity: int, held: int) -> _Channel:
    """Claim a channel of ``conn``'s server (``held``: how many this client keeps for views), its
    areas ``capacity`` bytes each (rounded up to pages), waiting for the region mutex up to
    ``wait`` s: still busy then, it fails ``DeadlineExceeded`` if a call's deadline cut ``wait``
    below ``connect_timeout``, else ``Overloaded``."""
    try:
        with region_mutex(conn, wait):
            ch = _claim_free(conn, capacity, held)
    except posix_ipc.BusyError:
        if wait < connect_timeout:
            raise DeadlineExceeded(
                f"shm server {conn.name!r}: region mutex still busy at the deadline"
            ) from None
        raise Overloaded(f"shm server {conn.name!r}: region mutex busy for {connect_timeout}s") from None
    try:
        ch.sem = open_semaphore(L.channel_sem_name(conn.name, ch.index))
        drain(ch.sem)
    except BaseException as exc:
        give_back_unopened(ch)
        if isinstance(exc, posix_ipc.ExistentialError):  # the server stopped and removed its objects
            conn.alive = False
            raise ServerUnavailable(f"shm server {conn.name!r} went away while connecting") from None
        if isinstance(exc, (OSError, posix_ipc.Error)):  # EMFILE, ENFILE; EACCES: PermissionsError
            raise ServerUnavailable(
                f"shm server {conn.name!r}: cannot open the semaphore of channel {ch.index} "
                f"({L.channel_sem_name(conn.name, ch.index)}): {exc}"
            ) from None
        raise
    return ch


def give_back_unopened(ch: _Channel) -> None:
    """A channel claimed but not usable (its semaphore could not be opened, or its client
    closed or dropped the connection while it was being claimed): give it back as
    a disconnect without the region mutex does (spec 10.1), ``owner_start_time = 0`` (only the
    owner writes that word), and the server reclaims it within a heartbeat (10.4). Left owned
    by this live process it was never reclaimed: a process whose connects kept failing lost
    one channel per try, until every client of the server got Overloaded."""
    ch.conn.ctl.u64[(ch.base + _C.OWNER_START) // 8] = 0
    retire(ch)


def _claim_free(conn: _Connection, capacity: int, held: int) -> _Channel:
    """Claim the first free channel (spec 10.1), the region mutex held."""
    u32, u64 = conn.ctl.u32, conn.ctl.u64
    try:  # owner_start_time 0 would say "given back" (10.1): the server would reclaim it live
        started = own_start_time()
    except OSError as exc:  # EMFILE at this process's file limit, ENFILE, ENOMEM
        raise ServerUnavailable(
            f"shm server {conn.name!r}: cannot read this process's start time "
            f"(/proc/{os.getpid()}/stat): {exc.strerror or exc}; no channel claimed"
        ) from None
    for index in range(conn.channel_count):
        if not u32[(L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE + _C.OWNER_PID) // 4]:
            break
    else:
        full = f"shm server {conn.name!r}: all {conn.channel_count} channels are in use"
        raise Overloaded(f"{full}: {_kept(held)}" if held else full)
    ch = _Channel(conn, index)
    try:
        pages = _pages(capacity)
        ch.attach(pages, pages)
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


def server_has_free(conn: _Connection) -> bool:
    """Whether ``conn``'s server has a channel no client owns (read without the region
    mutex: a claim under it says for sure). A call that found them all taken waited for its
    own to come free even once another client gave one back."""
    u32 = conn.ctl.u32
    return any(
        not u32[(L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE + _C.OWNER_PID) // 4]
        for index in range(conn.channel_count)
    )


def drop_wait(conn: _Connection, connect_timeout: float) -> float:
    """How long a finalizer may wait for the region mutex: not at all while this thread holds
    one (the collector ran inside a claim or a release here); briefly while another thread of
    this process does (a claim takes microseconds; a server in this process reclaiming a
    channel could be this very thread); otherwise as long as ``close()`` does."""
    if _holding.depth:
        return 0.0
    if conn.ctl.u32[_R.MUTEX_HOLDER // 4] == os.getpid():
        return min(connect_timeout, _SAME_PROCESS_WAIT)
    return connect_timeout


def _serving(conn: _Connection) -> bool:
    """Whether ``conn``'s server still answers requests it has (READY, or STOPPING: it drains)."""
    return conn.ctl.u32[_R.STATE // 4] in (L.RegionState.READY, L.RegionState.STOPPING)


def await_owed(conn: _Connection, channels: Sequence[_Channel], busy: set[_Channel]) -> None:
    """Before ``release_channels``: wait up to ``_OWED_GRACE`` for the late answers still owed on
    the ``channels`` of ``conn`` no call is in (not ``busy``: their calls passed their deadlines),
    so that they are freed, not given back: a channel given back stays taken until the server's
    next beat reclaims it (10.4), and a client connecting meanwhile to a server whose channels
    were all taken failed ``Overloaded`` though the answer came a moment after the close. A
    server that stopped (its region STOPPED: it answers nothing more, though its process may live
    on), died or is hung answers nothing: no wait (one that stops during it ends it; one that
    dies costs the moment, no more)."""
    owed = [ch for ch in channels if ch.conn is conn and ch not in busy and not ch.idle()]
    if not owed or not _serving(conn) or conn.hung() is not None or not is_alive(conn.pid, conn.started):
        return
    end = time.monotonic() + _OWED_GRACE
    while not all(ch.idle() for ch in owed) and _serving(conn) and time.monotonic() < end:
        time.sleep(0.001)


def release_channels(
    conn: _Connection, channels: Sequence[_Channel], busy: set[_Channel], wait: float
) -> None:
    """Spec 10.1, disconnect: under the region mutex, free each idle channel of ``channels`` (one
    not ``busy``: no call took it), and mark one whose request is still pending
    (``owner_start_time = 0``) for the server to reclaim when done. If the mutex stays busy for
    ``wait`` seconds, every channel is marked so, without it: that word is the owning client's
    to write, and the server reclaims a channel whose owner's start time does not match within a
    heartbeat (spec 10.4)."""
    u32, u64 = conn.ctl.u32, conn.ctl.u64
    try:
        with region_mutex(conn, wait):
            for ch in channels:
                if ch.idle() and ch not in busy:
                    u32[(ch.base + _C.OWNER_PID) // 4] = 0
                # a request still with the server, or a call that took the channel and may
                # be about to publish one (freed, another client could claim it first): the
                # server reclaims it (and the call, seeing `closing`, publishes nothing)
                else:
                    u64[(ch.base + _C.OWNER_START) // 8] = 0
            u64[_R.CONNECT_EPOCH // 8] += 1
    except posix_ipc.BusyError:
        for ch in channels:
            u64[(ch.base + _C.OWNER_START) // 8] = 0
