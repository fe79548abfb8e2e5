"""The client's side of the shm protocol's objects: one attachment to a server, and its channels.

``_Connection`` maps a server's control segment and opens its semaphores; ``_Channel`` is one
claimed channel with its data segment (request and response areas) and the caches of the hot path.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Any

import numpy as np
import posix_ipc

from foundation_ml.errors import BadVersion, InternalError, Overloaded, ServerUnavailable, TooLarge

from . import _layout as L
from ._codec import Limits, TensorRef
from ._gone import _GoneAtConnect
from ._liveness import is_alive, is_gone, is_zombie, lock_state
from ._objects import no_server_hint
from ._readers import ResponseReader
from ._segments import Segment, open_semaphore, unlink_segment

__all__ = ["_Channel", "_Connection", "_pages"]

_R = L.RegionField
_C = L.ChannelField


HUNG_MIN_NS = 1_000_000_000  # a heartbeat is stale after 10 intervals, and never sooner than this
_BEAT_POLL_S = 0.005  # how often a connect waiting for a hung server's beat looks again

# This process's data segment of each name. A name is the server's, the channel's index, our pid
# and a generation (10.1), so a reconnect to a restarted server makes the very names of the dead
# one's channels: one of those still in a call when the connection was dropped, retired after
# the reconnect, unlinked by name the new channel's segment (the server then parked the new
# request, unanswered). A segment is unlinked only while it is still the one of its name.
_NAMED: dict[str, Segment] = {}
_NAMED_LOCK = threading.RLock()  # (reentrant: a finalizer may retire a channel during a create)


def _forget_named_after_fork() -> None:
    """In a forked child: the segments are the parent's (``_forget_after_fork`` in _pool_local drops
    its channels), so they go once collected, not held for the child's life; and the lock is
    new, as one held by another thread of the parent at the fork (a create) is never let go."""
    global _NAMED_LOCK
    _NAMED_LOCK = threading.RLock()
    _NAMED.clear()


os.register_at_fork(after_in_child=_forget_named_after_fork)


def _pages(n: int) -> int:
    return max(L.PAGE, (n + L.PAGE - 1) // L.PAGE * L.PAGE)


class _Connection:
    """One attachment to one server instance: its control segment and semaphores."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closing = False  # the client dropped this connection while calls were on it
        # ... because it was closed (close(), or dropped): it gave its channels back, so the
        # server may reclaim one under a call (server_seq = client_seq, no answer). Not so for a
        # drop after another thread's call found the server gone (stopped or dead): that leaves
        # each call's channel to it, words untouched, and the call ends as its server did
        self.client_closed = False
        self.claimed = False  # a channel was claimed on it (the pool counts reconnects by it)
        try:
            # guarded (C hot path): a control segment shrunk under us becomes zero pages, and
            # check() says so, instead of a SIGBUS ending this process
            self.ctl = Segment.open(L.control_name(name), guard=True)
        except posix_ipc.ExistentialError:
            raise ServerUnavailable(f"no shm server named {name!r} ({no_server_hint(name)})") from None
        except posix_ipc.PermissionsError:
            raise ServerUnavailable(
                f"no permission to use shm server {name!r} (/dev/shm{L.control_name(name)}): another "
                "user's; a server started with mode 0o660 lets its group in"
            ) from None
        except ValueError as exc:  # empty (its server is creating it) or not a region at all
            raise ServerUnavailable(f"shm server {name!r} is not ready ({exc})") from None
        except OSError as exc:  # EMFILE, ENFILE: this process at its file limit, it may pass later
            kind = Overloaded if exc.errno in (errno.EMFILE, errno.ENFILE) else ServerUnavailable
            why = exc.strerror or str(exc)
            raise kind(f"shm server {name!r}: cannot open /dev/shm{L.control_name(name)}: {why}") from None
        u32, u64 = self.ctl.u32, self.ctl.u64
        try:
            if self.ctl.size < L.REGION_HEADER_SIZE or u32[_R.MAGIC // 4] != L.REGION_MAGIC:
                raise ServerUnavailable(f"shm server {name!r} is not ready (no region header yet)")
            major = int.from_bytes(self.ctl.buf[_R.VERSION_MAJOR : _R.VERSION_MAJOR + 2], "little")
            if major != L.PROTOCOL_VERSION:
                raise BadVersion(
                    f"shm server {name!r} speaks protocol {major}, this client {L.PROTOCOL_VERSION}"
                )
            self.pid = u32[_R.SERVER_PID // 4]
            self.started = u64[_R.SERVER_START // 8]
            self.channel_count = count = u32[_R.CHANNEL_COUNT // 4]
            size, offset = u32[_R.CHANNEL_SIZE // 4], u64[_R.CHANNELS_OFFSET // 8]
            # a claim reads the channel blocks at this layout's offsets: a header that puts them
            # elsewhere, or more of them than the segment holds, is no region this client can use
            if (
                not 0 < count <= L.MAX_CHANNELS
                or (size, offset) != (L.CHANNEL_SIZE, L.CHANNELS_OFFSET)
                or offset + count * size > self.ctl.size
            ):
                raise InternalError(
                    f"shm server {name!r}: its region header says {count} channels of {size} bytes "
                    f"at offset {offset}, which a control segment of {self.ctl.size} bytes of "
                    f"this protocol cannot hold (channels of {L.CHANNEL_SIZE} bytes at "
                    f"{L.CHANNELS_OFFSET}, 1..{L.MAX_CHANNELS} of them)"
                )
            self.max_bytes = u64[_R.MAX_REQUEST_BYTES // 8]
            self.capacity = u64[_R.DEFAULT_CAPACITY // 8]
            # responses are held to the server's own published limits (spec 3, 8 step 6)
            self.limits = Limits(max_tensors=u32[_R.MAX_TENSORS // 4])
            self.mode = self.ctl.mode  # data segments are made with the server's mode (spec 4)
            self._check_visible()
            self._check_found()
            if u32[_R.STATE // 4] != L.RegionState.READY:  # spec 10.1: a STOPPING server takes no one new
                raise ServerUnavailable(f"shm server {name!r} is stopping")
            try:
                self.mutex = open_semaphore(L.mutex_name(name))
            except posix_ipc.ExistentialError:  # it stopped and removed its objects meanwhile
                raise ServerUnavailable(f"shm server {name!r} went away while connecting") from None
            try:
                self.bell = open_semaphore(L.doorbell_name(name))
            except posix_ipc.ExistentialError:
                self.mutex.close()
                raise ServerUnavailable(f"shm server {name!r} went away while connecting") from None
        except BaseException:
            self.ctl.close()
            raise
        self.alive = True

    def _check_visible(self) -> None:
        """At connect: a server whose pid this process cannot see while its lock file is held
        lives in another PID namespace (a container that shares /dev/shm but not the pids);
        liveness is told by pid (spec 10), so say so rather than "the server is gone". Not when
        the pid is a zombie of the server's start time: that is the server, seen from here, dead,
        its other threads still exiting with the lock (``is_zombie``); ``check`` says it is gone.
        A reconnect right after a SIGKILL said it may live in another PID namespace."""
        if self.ctl.u32[_R.STATE // 4] != L.RegionState.READY or is_alive(self.pid, self.started):
            return
        if lock_state(L.lock_file(self.name)) == "held" and not is_zombie(self.pid, self.started):
            self.alive = False
            raise ServerUnavailable(
                f"shm server {self.name!r} holds its lock, but its pid {self.pid} is not a live "
                "process seen from here: it runs in another PID namespace (a container sharing "
                "/dev/shm but not the pids), or it is restarting. A server and its clients must "
                "share the PID namespace as well as /dev/shm (docker run --ipc=container:S "
                "--pid=container:S; Kubernetes: shareProcessNamespace: true)"
            )

    def check(self) -> None:
        """Raise ``ServerUnavailable`` unless the server is alive and serving (between wait slices)."""
        if self.client_closed:
            raise ServerUnavailable(f"the client of shm server {self.name!r} was closed during the call")
        if self.ctl.faulted():
            self.alive = False
            raise ServerUnavailable(
                f"shm server {self.name!r}: its control segment was shrunk under this client (a "
                "SIGBUS, caught): the region is lost"
            )
        state = self.ctl.u32[_R.STATE // 4]
        if state not in (L.RegionState.READY, L.RegionState.STOPPING) or not is_alive(self.pid, self.started):
            self.alive = False
            raise ServerUnavailable(self.gone())
        if self.closing:  # dropped as its server was found gone, by a look this one raced
            self.alive = False
            raise ServerUnavailable(self.gone())

    def _check_found(self) -> None:
        """``check`` as a connect looks (at its start, and while it waits for a hung server's
        beat): the server found gone is raised as ``_GoneAtConnect``, which a call that connects
        as it begins turns into its own words (nothing of it was written, 10.3)."""
        try:
            self.check()
        except ServerUnavailable as exc:
            if self.client_closed or self.ctl.faulted():  # the client closed, or the region lost
                raise
            raise _GoneAtConnect(exc.message) from None

    def gone(self) -> str:
        """What a call says of this server once it found it dead (10.3)."""
        return f"shm server {self.name!r} (pid {self.pid}) is gone"

    def dead(self) -> bool:
        """Whether the server's process is gone (pid absent, a zombie, or another start time:
        10.3), so that no word it writes can change any more (a call that found it gone reads
        its channel's words once more, and may send its request again, 10.3). Only on proof:
        a ``/proc`` entry that cannot be read (EMFILE) is no death (``kill(pid, 0)`` decides),
        the request may be queued with the live server; ``check`` uses the same rule."""
        return is_gone(self.pid, self.started)

    def hung(self) -> str | None:
        """Why the server counts as hung (spec 10.3: its heartbeat is older than 10 intervals, and
        at least ``HUNG_MIN_NS``), or None. The server beats from a thread of its own, so a model
        that runs for seconds does not make it hung; a stopped or stalled process does."""
        u32, u64 = self.ctl.u32, self.ctl.u64
        beat = u64[_R.HEARTBEAT_NS // 8]
        stale = max(10 * max(u32[_R.HEARTBEAT_INTERVAL_MS // 4], 1) * 1_000_000, HUNG_MIN_NS)
        now = time.monotonic_ns()
        if not beat or now <= beat + stale:
            return None
        return (
            f"shm server {self.name!r} (pid {self.pid}) is hung: no heartbeat for "
            f"{(now - beat) // 1_000_000} ms"
        )

    def wait_beating(self, wait: float, limit: str) -> None:
        """A hung server takes no new channel (spec 10.3): wait up to ``wait`` s (``limit`` says
        what bounds it) for its heartbeat to move (a server that has just resumed beats within an
        interval), then ``ServerUnavailable`` saying it is hung; a server that dies meanwhile is
        reported gone at once (``_check_found``). A claim on a hung server succeeded, and the call
        on it then left its request with a server that could not answer: the channel was the
        server's to reclaim once it ran again, so a service retrying through a stall took every
        channel of the server, and every client was told it was overloaded."""
        end = time.monotonic_ns() + int(wait * 1e9)
        while (why := self.hung()) is not None:
            self._check_found()
            if time.monotonic_ns() >= end:
                raise ServerUnavailable(
                    f"{why} (its process is stopped or stalled, and no beat came {limit}): it "
                    "takes no new client until it beats again"
                )
            time.sleep(_BEAT_POLL_S)

    def close(self) -> None:
        self.mutex.close()
        self.bell.close()
        self.ctl.close()


class _Channel:
    """The client's side of one claimed channel."""

    __slots__ = (
        "base",
        "conn",
        "cseq",
        "cuda_devices",
        "cuda_keep",
        "cuda_ok",
        "data",
        "gen",
        "index",
        "reader",
        "req",
        "req_cap",
        "resp",
        "resp_cap",
        "sem",
        "seq",
        "sleeping_word",
        "sseq",
        "used",
        "wdeadline",
        "wkey",
        "words",
        "wval",
    )

    def __init__(self, conn: _Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self.base = L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE
        self.cseq = (self.base + _C.CLIENT_SEQ) // 8
        self.sseq = (self.base + _C.SERVER_SEQ) // 8
        self.sleeping_word = (self.base + _C.CLIENT_SLEEPING) // 4
        self.words = conn.ctl.u64
        self.seq = 0
        self.used = 0
        self.gen = 0
        self.data: Segment | None = None
        self.req = self.resp = memoryview(b"")
        self.req_cap = self.resp_cap = 0
        self.sem: posix_ipc.Semaphore | None = None
        self.reader: ResponseReader | None = None
        self.wkey: tuple[Any, ...] | None = None  # the last request's shape, whose payload is in place
        self.wval: tuple[list[TensorRef], int, int, list[np.ndarray]] = ([], 0, 0, [])
        self.wdeadline = 0
        self.cuda_keep: list[Any] | None = None  # CUDA inputs of a call left without an answer
        self.cuda_devices: set[int] = set()  # devices of the last answer's outputs taken as views
        self.cuda_ok = False  # the request in flight asked for CUDA_IPC outputs (FDN_FLAG_CUDA_IPC)

    def idle(self) -> bool:
        """The server has answered everything this channel published. ``seq`` is re-read from
        ``client_seq`` (only this client writes it): an interrupt (KeyboardInterrupt) between
        publishing a request and noting it must not leave the channel looking busy for ever."""
        words = self.words
        published = words[self.cseq]
        if words[self.sseq] != published:
            return False
        self.seq = published
        return True

    def attach(self, req_cap: int, resp_cap: int) -> None:
        """Create a data segment of the given capacities and publish it in the channel block
        (the old one's request bytes in use are carried over, then it is unlinked)."""
        ctl, pid = self.conn.ctl, os.getpid()
        gen = (ctl.u64[(self.base + _C.DATA_GEN) // 8] + 1) & 0xFFFF_FFFF_FFFF_FFFF  # wraps (10.1)
        name = L.data_name(self.conn.name, self.index, pid, gen)
        data = self._create(name, req_cap, resp_cap)
        if self.data is not None and self.used:
            data.buf[: self.used] = self.data.buf[: self.used]
        u64 = ctl.u64
        u64[(self.base + _C.REQUEST_CAPACITY) // 8] = req_cap
        u64[(self.base + _C.RESPONSE_CAPACITY) // 8] = resp_cap
        raw = name.encode()
        ctl.buf[self.base + _C.DATA_NAME : self.base + _C.DATA_NAME + 64] = raw + bytes(64 - len(raw))
        u64[(self.base + _C.DATA_GEN) // 8] = gen
        self.detach()
        self.data, self.gen = data, gen
        self.req, self.resp = data.buf[:req_cap], data.buf[req_cap:].toreadonly()
        self.req_cap, self.resp_cap = req_cap, resp_cap
        self.reader = ResponseReader(self.resp, resp_cap, self.conn.limits)

    def _create(self, name: str, req_cap: int, resp_cap: int) -> Segment:
        """The new data segment, or a typed error: OVERLOADED when /dev/shm or memory has no room
        now, no file descriptor is free now or signals interrupted its allocation
        ``FALLOCATE_TRIES`` times in a row (it may later), TOO_LARGE for capacities that can
        never be allocated (larger than /dev/shm, or than a file may be). A segment of this name
        is ours (it carries our pid) and left over from a claim or grow that failed: it is
        replaced."""
        size = req_cap + resp_cap
        what = f"shm server {self.conn.name!r} channel {self.index}: capacities {req_cap}+{resp_cap} bytes"
        try:
            room = os.statvfs("/dev/shm")
            total = room.f_blocks * room.f_frsize
        except OSError:
            total = 0
        if total and size > total:
            raise TooLarge(f"{what}: more than /dev/shm can ever hold ({total} bytes)")
        try:
            with _NAMED_LOCK:
                try:
                    data = Segment.create(name, size, self.conn.mode)
                except posix_ipc.ExistentialError:
                    unlink_segment(name)
                    data = Segment.create(name, size, self.conn.mode)
                _NAMED[name] = data
                return data
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                raise Overloaded(f"{what}: no room: {exc.strerror}") from None
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # no descriptor free now: may be later
                raise Overloaded(f"{what}: no file descriptor free: {exc.strerror}") from None
            if exc.errno == errno.EINTR:  # posix_fallocate interrupted FALLOCATE_TRIES times in a row
                raise Overloaded(f"{what}: {exc.strerror}") from None
            raise TooLarge(f"{what}: {exc.strerror or exc}") from None

    def detach(self) -> None:
        self.wkey, self.wval = None, ([], 0, 0, [])  # drop the views before unmapping
        if self.data is not None:
            with _NAMED_LOCK:
                if _NAMED.get(self.data.name) is self.data:
                    del _NAMED[self.data.name]
                    unlink_segment(self.data.name)
            self.req = self.resp = memoryview(b"")
            # the reader views the response area too (its cached outputs): kept, the segment
            # could not be unmapped, and its mapping, fd and pages outlived close() for as long
            # as this channel object lived (a closed client kept, a thread's held channel)
            self.reader = None
            self.data.close()
            self.data = None
