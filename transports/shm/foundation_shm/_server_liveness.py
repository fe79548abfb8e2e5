"""The shm server's heartbeat: it beats, reclaims the channels of dead clients, and frees the
region mutex if its holder died or it stays taken by no one (spec 10.3, 10.4)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

import posix_ipc

from foundation_ml.errors import InternalError

from . import _layout as L
from ._accel import hot
from ._cuda_ipc import ServerCuda
from ._liveness import is_alive, is_running
from ._log_throttle import LogFold, LogThrottle
from ._objects import SHM_DIR
from ._segments import Segment, drain, sem_wait, unlink_segment
from ._server_channel import _Channel
from ._sync import SLICE_S

__all__ = ["_Liveness"]

log = logging.getLogger("foundation_shm")
_R = L.RegionField
_C = L.ChannelField
SWEEP_EVERY = 10  # beats between sweeps for data segments left by dead clients (1 s by default)


class _Liveness:
    """``ShmServer``'s heartbeat thread, a mixin: ``_heartbeat`` is its target."""

    # ShmServer's, set in its __init__
    name: str
    heartbeat_s: float
    stuck_mutex_s: float
    failed: BaseException | None
    _ctl: Segment
    _mutex: posix_ipc.Semaphore
    _channels: list[_Channel]
    _cuda: ServerCuda
    _parked: set[int]
    _faults_seen: int
    _rejected_log: LogThrottle
    _raised_log: LogThrottle
    _given_back_log: LogFold
    _dead_client_log: LogFold
    _reclaimed: dict[str, int]
    _unremovable: set[str]
    _running: bool
    _unnamed_since: tuple[int, float] | None
    _loop_thread: threading.Thread
    _stop_event: threading.Event

    def _heartbeat(self) -> None:
        u64 = self._ctl.u64
        while not self._stop_event.wait(self.heartbeat_s):
            if not self._loop_thread.is_alive() and self._running:  # never expected (stop() ends it
                # on purpose: _running is False then); clients must not wait on a dead loop
                log.error("shm %s: the serving loop died; marking the server stopped", self.name)
                self._ctl.u32[_R.STATE // 4] = L.RegionState.STOPPED
                if self.failed is None:
                    self.failed = InternalError(f"shm {self.name}: the serving loop ended unexpectedly")
                return
            if hot is not None and hot.faults() != self._faults_seen and self._shrunk():
                return
            u64[_R.HEARTBEAT // 8] += 1
            u64[_R.HEARTBEAT_NS // 8] = time.monotonic_ns()
            try:
                self._reap()
                self._fold_reclaims()
                if u64[_R.HEARTBEAT // 8] % SWEEP_EVERY == 0:
                    self._sweep_orphans()
            except Exception:  # never let the heartbeat die
                log.exception("shm %s: reaping dead clients failed", self.name)

    def _shrunk(self) -> bool:
        """A SIGBUS was caught (``_hot.faults()`` moved: one call a beat, not one a channel): a
        client shrank its data segment (said now, not at its next request), or a segment of the
        server's own, its control segment. Then the server has lost its region: it is marked
        failed (``foundation serve`` stops, releases its objects and exits 1) and True is returned."""
        assert hot is not None  # only the C hot path guards segments
        self._faults_seen = hot.faults()
        u32 = self._ctl.u32
        for ch in self._channels:
            ch.shrunk(self.name, u32[ch.owner_word])
        if not self._ctl.faulted():
            return False
        log.error(
            "shm %s: the control segment %s was shrunk under the server (a SIGBUS, caught): the region "
            "is lost; the server stops",
            self.name,
            self._ctl.name,
        )
        if self.failed is None:
            self.failed = InternalError(f"shm {self.name}: its control segment {self._ctl.name} was shrunk")
        return True

    def _reap(self) -> None:
        u32, u64 = self._ctl.u32, self._ctl.u64
        holder = u32[_R.MUTEX_HOLDER // 4]
        if holder and not is_running(holder):  # gone, or a zombie (spec 10.3 counts it as gone)
            u32[_R.MUTEX_HOLDER // 4] = 0
            # only a mutex that is taken: a dead pid written while it is free (a hostile or
            # broken client) would make each beat post it again, a counting semaphore that
            # lets two clients claim one channel
            if self._mutex.value == 0:
                log.warning("shm %s: pid %d died holding the region mutex; releasing it", self.name, holder)
                self._mutex.release()
        self._free_unnamed_mutex(holder)
        for ch in self._channels:
            if self._stop_event.is_set():  # stop() waits for this beat: no reclaim starts now
                return
            pid = u32[ch.owner_word]
            started = u64[(ch.base + _C.OWNER_START) // 8]
            if pid and not is_alive(pid, started):
                # owner_start_time 0: a live client gave it back with a request pending (10.1)
                self._reclaim(ch, pid, given_back=started == 0)

    def _sweep_orphans(self) -> None:
        """Unlink the data segments of this server's channels (``/fdn-N-d{i}-{pid}-{gen}``) whose
        client ``pid`` is gone and that no owned channel names (spec 10.4). A client killed
        between creating its segment and publishing it (a claim or a grow), or between freeing
        its channel and unlinking it, leaves one that no reclaim finds: each stayed in /dev/shm
        (its size, 2 MiB by default) until the server stopped. Under the region mutex, taken
        without waiting (busy: the next sweep), so no client claims meanwhile: a process that
        reuses a dead pid gets a data segment only by claiming a channel. A running pid keeps
        its segments (a live client unlinks its own)."""
        pattern = re.compile(rf"fdn-{re.escape(self.name)}-d\d+-(\d+)-\d+")
        try:
            entries = os.listdir(SHM_DIR)
        except OSError:
            return
        found = [(entry, int(m.group(1))) for entry in entries if (m := pattern.fullmatch(entry))]
        if not found:
            return
        try:
            self._mutex.acquire(0)
        except posix_ipc.BusyError:
            return
        ctl = self._ctl
        ctl.u32[_R.MUTEX_HOLDER // 4] = os.getpid()
        try:
            named = set()
            for ch in self._channels:
                if ctl.u32[ch.owner_word]:  # its reclaim, if it died, unlinks the one it names
                    raw = bytes(ctl.buf[ch.base + _C.DATA_NAME : ch.base + _C.DATA_NAME + 64])
                    named.add(raw.partition(b"\0")[0].decode("ascii", "replace").lstrip("/"))
            running: dict[int, bool] = {}
            self._unremovable &= {entry for entry, _ in found}  # forget those gone since
            for entry, pid in found:
                if entry in named or entry in self._unremovable or running.setdefault(pid, is_running(pid)):
                    continue
                if self._unlink_left("/" + entry, pid):
                    log.info("shm %s: removed data segment %s of dead client pid %d", self.name, entry, pid)
        finally:
            ctl.u32[_R.MUTEX_HOLDER // 4] = 0
            self._mutex.release()

    def _unlink_left(self, name: str, pid: int) -> bool:
        """Unlink a dead client's data segment; False, said once, if it is another user's (a group
        mode server's client: /dev/shm is sticky, so only its owner may remove it). It raised
        into the reclaim, which then never freed the channel and failed again every beat."""
        try:
            unlink_segment(name)
        except posix_ipc.PermissionsError as exc:
            self._unremovable.add(name.lstrip("/"))
            log.warning(
                "shm %s: cannot remove data segment %s left by dead client pid %d (%s): another "
                "user's; `foundation shm clean` run as its owner removes it",
                self.name,
                name,
                pid,
                exc,
            )
            return False
        return True

    def _free_unnamed_mutex(self, holder: int) -> None:
        """Release the region mutex if it stays taken by no one: ``mutex_holder_pid`` 0 and
        ``connect_epoch`` unchanged for ``stuck_mutex_s`` (a client killed or interrupted
        between acquiring it and storing its pid, or between clearing it and releasing). Else no
        client could ever connect again, nor could this server reclaim channels."""
        epoch = self._ctl.u64[_R.CONNECT_EPOCH // 8]
        if holder or self._mutex.value:
            self._unnamed_since = None
            return
        now = time.monotonic()
        if self._unnamed_since is None or self._unnamed_since[0] != epoch:
            self._unnamed_since = (epoch, now)
            return
        held = now - self._unnamed_since[1]
        if held < self.stuck_mutex_s:
            return
        self._unnamed_since = None
        log.warning(
            "shm %s: the region mutex was held by no one (mutex_holder_pid 0, no connect) for %.1f s: "
            "a client was interrupted or killed between taking it and naming itself; releasing it",
            self.name,
            held,
        )
        self._mutex.release()

    def _take_mutex(self, timeout: float) -> bool:
        """Take the region mutex within ``timeout`` seconds, waiting in slices (``SLICE_S``); False
        if it stays taken (a client stopped inside it: try again at the next beat), or at once
        once ``stop()`` has begun. ``stop()`` waits for the beat before it closes the mutex and
        unmaps the region: a wait of a second per channel made a beat outlive it, and the wait
        then woke on a closed semaphore (a segfault of the server process)."""
        end = time.monotonic() + timeout
        while not self._stop_event.is_set():
            left = end - time.monotonic()
            if sem_wait(self._mutex, min(SLICE_S, max(0.0, left))):
                return True
            if left <= SLICE_S:
                return False
        return False

    def _reclaim(self, ch: _Channel, pid: int, given_back: bool = False) -> None:
        if not self._take_mutex(1.0):
            return  # try again at the next beat (or stopping: there is none)
        ctl = self._ctl
        ctl.u32[_R.MUTEX_HOLDER // 4] = os.getpid()  # spec 10.1: whoever holds the mutex says so
        try:
            if ctl.u32[ch.owner_word] != pid:
                return
            with ch.lock:
                ended, ch.lease = ch.lease, ch.lease + 1
                ctl.u64[ch.sseq] = ctl.u64[ch.cseq]
                # a dead client: close its CUDA IPC mappings, but those its request still with the
                # handler (busy, not parked: an answer is to come) uses, kept till that answer,
                # dropped, synchronises
                running = ch.busy and ch.index not in self._parked
                self._cuda.forget(ch.index, ended if running else None)
                ctl.u32[ch.busy_word] = 0
                ch.busy = False
                self._parked.discard(ch.index)
                self._rejected_log.forget(ch.index)  # the next client starts with a full burst
                self._raised_log.forget(ch.index)
            raw = bytes(ctl.buf[ch.base + _C.DATA_NAME : ch.base + _C.DATA_NAME + 64]).partition(b"\0")[0]
            name = raw.decode("ascii", "replace")
            if name.startswith(f"/fdn-{self.name}-d{ch.index}-"):
                self._unlink_left(name, pid)  # never stops the reclaim: the channel is freed
            drain(ch.sem)
            ctl.u32[ch.owner_word] = 0
            ctl.u64[_R.CONNECT_EPOCH // 8] += 1
            # counted exactly (stats' reclaimed); each kind is routine when it repeats (a call
            # that timed out, then its client closed; a preforking service recycling workers that
            # never closed their clients): after the first, a window's are summed up in one line
            # (_fold_reclaims)
            if given_back:
                self._reclaimed["given_back"] += 1
                if self._given_back_log.take():
                    log.info(
                        "shm %s: reclaimed channel %d given back by client pid %d", self.name, ch.index, pid
                    )
            else:
                self._reclaimed["dead_client"] += 1
                if self._dead_client_log.take():
                    log.info("shm %s: reclaimed channel %d of dead client pid %d", self.name, ch.index, pid)
        finally:
            ctl.u32[_R.MUTEX_HOLDER // 4] = 0
            self._mutex.release()

    def _fold_reclaims(self, final: bool = False) -> None:
        """Log how many channels of each kind (given back, of dead clients) were reclaimed but
        not logged one by one, once their window has passed (each beat), or at once (``final``:
        the server stops)."""
        for fold, whose in (
            (self._given_back_log, "given back by clients"),
            (self._dead_client_log, "of dead clients"),
        ):
            held, seconds = fold.due(final=final)
            if held:
                log.info(
                    "shm %s: reclaimed %d more channel%s %s in the last %.0f s (not logged one by one)",
                    self.name,
                    held,
                    "" if held == 1 else "s",
                    whose,
                    seconds,
                )
