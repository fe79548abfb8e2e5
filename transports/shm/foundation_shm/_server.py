"""The shm server: owns the region, polls channels (spin, then sleep on the doorbell), calls the handler.

One loop thread finds pending requests and hands them to the handler (``_server_dispatch``);
``respond`` may come from any thread, later (``_answers``). A heartbeat thread beats, reclaims the
channels of dead clients, and frees the region mutex if its holder died (``_server_liveness``).
Its start (open files claimed, a live server refused, objects and region made) is ``_server_start``.
Everything it created is unlinked at ``stop()``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

from foundation_ml import RequestHandler, TransportServer

from . import _layout as L
from ._accel import check_start, hot
from ._codec import Limits
from ._cuda_ipc import ServerCuda
from ._fd_limit import OpenFiles
from ._log_throttle import LogFold, LogThrottle
from ._objects import remove_objects
from ._options import ServeOptions
from ._options import options as _options
from ._segments import sem_wait
from ._server_channel import _Channel
from ._server_dispatch import _Dispatch
from ._server_liveness import _Liveness
from ._server_start import _Start
from ._start_lock import take_server_lock
from ._sync import YIELD_AFTER_NS, fence, poll_channels

__all__ = ["ShmServer"]

log = logging.getLogger("foundation_shm")
_R = L.RegionField


class ShmServer(_Dispatch, _Liveness, _Start, TransportServer):
    """A running shm server under ``address`` (see ``ShmTransport.serve`` for the options)."""

    def __init__(self, address: str, handler: RequestHandler, **options: Any) -> None:
        opts = _options(ServeOptions, options, "serve")  # every option checked before anything is made
        check_start()  # x86-64 only; warns once if the C hot path is missing
        self.address = address
        self.name = L.server_name(address)
        self.handler = handler
        report = getattr(handler, "rejected", None)  # RequestHandler.rejected: optional
        self._report = report if callable(report) else None
        self._told: tuple[int, int] | None = None  # see _Dispatch._rejected
        self.spin_ns = opts.spin_us * 1000
        self.heartbeat_s = opts.heartbeat_ms / 1000
        self.limits = Limits(opts.max_tensors, opts.max_request_bytes)
        self.data_crc = opts.data_crc
        self._cuda = ServerCuda(opts.cuda_ipc, handler, opts.cuda_cache_bytes)  # spec 15: CUDA IPC
        self._lock = take_server_lock(self.name, opts.mode)  # a killed predecessor's: waited for
        self._refuse_a_live_server()
        self._stopping = False
        self.failed = None  # why the serving loop died, if it ever does
        # a region mutex taken with mutex_holder_pid 0 (its taker interrupted or killed between
        # acquire and naming itself) and no connect for this long is freed: 2 x a connect timeout
        self.stuck_mutex_s = 2 * 2.0
        self._unnamed_since = None  # (connect_epoch, when) first seen
        self._drain_upto = {}  # at stop: each channel's request published by then
        self._parked = set()  # channels _fail could not answer: no answer will ever come
        self._faults_seen = 0  # _hot.faults() at the last beat: SIGBUS the data-segment guard caught
        self._rejected_log = LogThrottle()  # rejected requests' warnings, per channel
        self._raised_log = LogThrottle()  # tracebacks of a handler that raised, per channel
        self._given_back_log = LogFold()  # channels given back and reclaimed: one line a minute
        self._dead_client_log = LogFold()  # dead clients' channels reclaimed: likewise
        self._reclaimed = {"given_back": 0, "dead_client": 0}  # channels the heartbeat reclaimed
        self._unremovable = set()  # dead clients' data segments another user owns (said once)
        self._hurry = False  # hurry(): the drain ends now
        self.abandoned = 0  # requests stop() gave up on (its drain timed out, or hurry())
        self._running = True
        self._loop_thread = threading.Thread(target=self._loop, name=f"shm-{self.name}", daemon=True)
        self._beat_thread = threading.Thread(
            target=self._heartbeat, name=f"shm-{self.name}-beat", daemon=True
        )
        self._stop_event = threading.Event()
        self._create(opts)
        self._open_files = OpenFiles.NONE
        try:
            self._open_files = self._check_open_files(opts.channels)
            self._loop_thread.start()
            self._beat_thread.start()
        except BaseException:  # (no thread to be had, a Ctrl-C): the objects made, the claim
            self._release()  # and the lock go with the start, as _create's own failure's do
            raise

    # --- the loop ------------------------------------------------------------------------------

    def _active(self) -> list[_Channel]:
        u32, u64 = self._ctl.u32, self._ctl.u64
        active = []
        for ch in self._channels:
            if pid := u32[ch.owner_word]:
                active.append(ch)
                if ch.data is not None and not ch.owned_by(pid, u64[ch.start_word]):
                    ch.forget_segment()  # freed and claimed again since: not the segment mapped
            elif ch.data is not None and not ch.busy:
                ch.unmap()
                self._cuda.forget(ch.index)  # its client disconnected: its CUDA mappings go
        return active

    def _loop(self) -> None:
        """Run the serving loop; if it dies all the same, record why in ``failed`` (the runtime's
        ``serve`` then exits non-zero, so that a supervisor restarts the server) and mark the
        region STOPPED: clients fail ServerUnavailable rather than wait on a loop that is gone."""
        try:
            self._serve_loop()
        except BaseException as exc:  # a serving thread: no Ctrl-C arrives here
            self.failed = exc
            log.critical("shm %s: the serving loop died: %r", self.name, exc, exc_info=exc)
            if self._running:
                self._ctl.u32[_R.STATE // 4] = L.RegionState.STOPPED

    def _serve_loop(self) -> None:
        """Serve requests one at a time: the scan (``poll_channels``: in C with the GIL released,
        or its Python twin) resumes after the channel just served, so every client gets its turn;
        once nothing is pending the handler may flush a batch; an idle server sleeps on its bell."""
        u32, u64 = self._ctl.u32, self._ctl.u64
        epoch_word, sleeping_word = _R.CONNECT_EPOCH // 8, _R.SERVER_SLEEPING // 4
        epoch = -1
        active: list[_Channel] = []
        cseq: list[int] = []
        sseq: list[int] = []
        busy: list[int] = []
        poll, spin_ns, start = poll_channels(self._ctl), self.spin_ns, 0
        take = functools.partial(hot.take, self._ctl.buf) if hot is not None else None
        flush = getattr(self.handler, "flush", None)  # RequestHandler.flush: batches run here
        dirty = False  # requests handed over since the last flush
        while self._running:
            if u64[epoch_word] != epoch:
                epoch = u64[epoch_word]
                active = self._active()
                cseq = [ch.cseq for ch in active]
                sseq = [ch.sseq for ch in active]
                busy = [ch.busy_word for ch in active]
            window = spin_ns
            if dirty:  # every pending request handed over? then the handler's batch may run
                i = poll(cseq, sseq, busy, 0, 0, epoch_word, epoch, start)
                if i == -1:
                    due = self._flush(flush)
                    if not self._running:  # a batch that outlived stop's wait for this loop: the
                        break  # region may be released now (its next poll raised, "loop died")
                    dirty = due > 0
                    window = min(spin_ns, due) if dirty else spin_ns
            i = poll(cseq, sseq, busy, window, YIELD_AFTER_NS, epoch_word, epoch, start)
            if i >= 0:
                ch = active[i]
                start = i + 1
                # a connect or disconnect since `active` was read (one word read; the owner's two
                # only then): this channel may have been freed and claimed again, its request the
                # new owner's, whose generation a previous owner may have made the one mapped
                if (
                    u64[epoch_word] != epoch
                    and ch.data is not None
                    and not ch.owned_by(u32[ch.owner_word], u64[ch.start_word])
                ):
                    ch.forget_segment()
                # poll's reads of cseq, sseq and busy are not one snapshot: an answer landing
                # between them looks like a new request. An answer clears the busy word after it
                # stores sseq, and poll saw it clear, so fresh reads of both words are the truth.
                if ch.busy:
                    # the busy word is the server's; poll saw it clear while a request of this
                    # channel is still in flight: an answer under way (which holds ch.lock and
                    # clears ch.busy in it), or a client that cleared it, which would make poll
                    # find this channel at once again and again (the loop at 100 % CPU)
                    with ch.lock:
                        if ch.busy:
                            u32[ch.busy_word] = 1
                    continue
                # (no local for ch.reader: one held across the idle wait kept the views of its
                # area, so a departed client's data segment stayed mapped, its pages allocated)
                if take is not None and ch.reader is not None and ch.reader.last is not None:
                    # the C lane: fresh reads, the busy word set, and a request that repeats the
                    # channel's last one checked (header, CRC) with its id and deadline
                    got = take(
                        ch.req,
                        ch.reader.payload,
                        ch.req_cap,
                        ch.cseq,
                        ch.sseq,
                        ch.busy_word,
                        ch.gen_word,
                        ch.gen,
                    )
                    if got is None:
                        continue
                    seq, rid, deadline = got
                else:
                    seq = u64[ch.cseq]
                    if seq == u64[ch.sseq]:
                        continue
                    rid = None
                try:
                    if rid is None:
                        self._dispatch(ch, seq)
                    else:
                        self._dispatch_repeat(ch, seq, rid, deadline)
                except BaseException:  # a bug of ours (or a handler's SystemExit) costs one request,
                    # never the server; this is not the main thread: a KeyboardInterrupt is no Ctrl-C
                    log.exception("shm %s channel %d: dispatch failed", self.name, ch.index)
                    self._fail(ch, seq)
                dirty = flush is not None
                continue
            if i == -2 or dirty:  # a client connected or left; or a batch is due soon
                continue
            u32[sleeping_word] = 1
            fence()
            if u64[epoch_word] == epoch and poll(cseq, sseq, busy, 0, 0, epoch_word, epoch, 0) == -1:
                sem_wait(self._bell, 0.1)  # a signal landing on this thread meanwhile is no failure
            u32[sleeping_word] = 0

    def _flush(self, flush: Any) -> int:
        """``handler.flush()`` (RequestHandler.flush): ns until it wants another call, 0 if none."""
        try:
            return int(flush())
        except BaseException:  # a handler bug (or a model's SystemExit) must not stop the loop
            log.exception("shm %s: handler.flush failed", self.name)
            return 0

    # --- stop ----------------------------------------------------------------------------------

    def in_flight(self) -> int:
        """Requests taken or queued and not yet answered: a busy channel (one whose request
        runs), or one whose request is published and not yet taken (while stopping: published
        before ``stop``; later ones are refused).
        A parked channel (``_fail`` could not answer it; its client's deadline ends its wait)
        is not one: waiting for it would make every stop wait the whole drain timeout."""
        u64, upto = self._ctl.u64, self._drain_upto
        return sum(
            ch.index not in self._parked
            and (ch.busy or u64[ch.sseq] < (upto.get(ch.index, 0) if self._stopping else u64[ch.cseq]))
            for ch in self._channels
        )

    def hurry(self) -> None:
        """End a drain that ``stop`` is waiting on now (a second Ctrl-C): what is still in
        flight is abandoned, and every object is released all the same."""
        self._hurry = True

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop taking requests; answer those in flight and those already queued (published
        before this call), for up to ``drain_timeout`` seconds or until ``hurry()``; then release
        every object, even if the wait is interrupted. ``abandoned`` then says how many requests
        were left unanswered (their clients fail ServerUnavailable). A handler call or batch still
        running after 2 s more is not waited for: its answer is dropped when it comes, and the
        CUDA IPC mappings its inputs use stay open until then (until the process exits if it
        never comes)."""
        if not self._running:
            return
        u32, u64 = self._ctl.u32, self._ctl.u64
        self._drain_upto = {ch.index: u64[ch.cseq] for ch in self._channels if u64[ch.cseq] != u64[ch.sseq]}
        self._stopping = True
        u32[_R.STATE // 4] = L.RegionState.STOPPING
        try:
            end = time.monotonic() + drain_timeout
            while not self._hurry and time.monotonic() < end and self.in_flight():
                time.sleep(0.005)
            self.abandoned = self.in_flight()
        finally:  # a KeyboardInterrupt in the wait must not leak the objects
            self._release()

    def _release(self) -> None:
        try:
            self._release_objects()
        finally:
            self._open_files.release()  # its channels' descriptors are no longer needed

    def _release_objects(self) -> None:
        u32 = self._ctl.u32
        self._running = False
        self._stop_event.set()  # the beat ends within a wait slice (_take_mutex)
        self._bell.release()
        if self._loop_thread.ident is not None:  # (a start that failed may not have started it)
            self._loop_thread.join(2)
        # the beat uses the mutex, the control segment and the channels' semaphores: it must have
        # ended before they are closed (a beat outliving a timed join woke on a closed semaphore)
        interrupted = _join(self._beat_thread)
        self._fold_reclaims(final=True)  # the reclaims not yet summed up: none goes unsaid
        u32[_R.STATE // 4] = L.RegionState.STOPPED
        for ch in self._channels:
            with ch.lock:  # an answer after this is dropped (Answers.answer): none is under way now
                ended, ch.lease = ch.lease, ch.lease + 1
                if ch.busy and ch.index not in self._parked:  # a request still running: its
                    self._cuda.stopping(ch.index, ended)  # CUDA inputs stay open till its answer
            if u32[ch.owner_word]:
                ch.sem.release()  # sleeping clients wake, see STOPPED, fail ServerUnavailable
        # a client that is another user (a group-mode server's) made its data segment, which
        # /dev/shm's sticky bit keeps: raising there left the rest open and the name held
        failed: list[tuple[str, str]] = []
        remove_objects(self.name, keep_lock_file=True, failed=failed)
        if failed:
            log.warning(
                "shm %s: stopped, but cannot remove %s: another user's (a client's data segment); "
                "`foundation shm clean %s` run as its owner removes it",
                self.name,
                "; ".join(f"/dev/shm/{entry} ({why})" for entry, why in failed),
                self.name,
            )
        self._cuda.close()
        for ch in self._channels:
            ch.unmap()
            ch.sem.close()
        self._mutex.close()
        self._bell.close()
        self._ctl.close()
        self._lock.release()
        if interrupted is not None:  # a Ctrl-C while waiting for the beat: raised once all is released
            raise interrupted

    def stats(self) -> dict[str, Any]:
        """The server's channel count, how many are busy now, and how many channels its heartbeat
        reclaimed since it started, given back by clients or of dead clients (``MLRuntime.stats``'
        transports); a server that accepts CUDA IPC adds its cache of clients' mappings
        (``ServerCuda.stats``)."""
        stats: dict[str, Any] = {
            "channels": len(self._channels),
            "busy": sum(ch.busy for ch in self._channels),
            "reclaimed": dict(self._reclaimed),  # exact, though routine ones are logged summed up
        }
        if self._cuda.enabled:
            stats["cuda_ipc"] = self._cuda.stats()
        return stats


def _join(thread: threading.Thread) -> BaseException | None:
    """Wait until ``thread`` (if it was started) has ended, with no timeout: what is released
    after it must not be released under it. An interrupt meanwhile (a Ctrl-C raising
    KeyboardInterrupt in the join) is returned, not raised, once the thread has ended: raised at
    once it left every object in /dev/shm and the name held."""
    if thread.ident is None:
        return None
    caught: BaseException | None = None
    while True:
        try:
            thread.join()
            return caught
        except BaseException as exc:
            caught = caught or exc
