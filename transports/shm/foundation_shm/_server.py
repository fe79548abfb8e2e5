"""The shm server: owns the region, polls channels (spin, then sleep on the doorbell), calls the handler.

One loop thread finds pending requests and hands them to the handler; ``respond`` may come from any
thread, later. A heartbeat thread beats, reclaims the channels of dead clients, and frees the
region mutex if its holder died. Everything it created is unlinked at ``stop()``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import threading
import time
from typing import Any

import posix_ipc

from foundation_ml import InferenceRequest, InferenceResponse, RequestHandler, TransportServer
from foundation_ml.errors import (
    DeadlineExceeded,
    HandlerError,
    InferenceError,
    InternalError,
    InvalidInput,
    ShuttingDown,
)

from . import _layout as L
from ._accel import hot
from ._answers import Answers
from ._codec import DecodedRequest, Limits
from ._cuda_desc import decoded as _cuda_decoded
from ._cuda_ipc import ServerCuda
from ._liveness import ServerLock, is_alive, is_running, start_time
from ._objects import remove_objects
from ._options import ServeOptions
from ._options import options as _options
from ._readers import RequestReader
from ._region import read_region, region_alive
from ._segments import Segment, create_semaphore, drain, unlink_segment
from ._server_channel import _Channel, _Responder
from ._sync import YIELD_AFTER_NS, fence, poll_channels

__all__ = ["ShmServer"]

log = logging.getLogger("foundation_shm")
_R = L.RegionField
_C = L.ChannelField
_MAX_TEXT = 1 << 20
_RESPONSE = int(L.MessageKind.RESPONSE)
_INFER = int(L.MessageKind.INFER_REQUEST)
_CUDA_FLAG = int(L.MessageFlag.CUDA_IPC)


class ShmServer(TransportServer):
    """A running shm server under ``address`` (see ``ShmTransport.serve`` for the options)."""

    def __init__(self, address: str, handler: RequestHandler, **options: Any) -> None:
        opts = _options(ServeOptions, options, "serve")  # every option checked before anything is made
        self.address = address
        self.name = L.validate_name(address.removeprefix("shm://"))
        self.handler = handler
        self.spin_ns = opts.spin_us * 1000
        self.heartbeat_s = opts.heartbeat_ms / 1000
        self.limits = Limits(opts.max_tensors, opts.max_request_bytes)
        self.data_crc = opts.data_crc
        self._cuda = ServerCuda(opts.cuda_ipc, handler)  # spec 15: CUDA IPC descriptors
        mode = opts.mode
        self._lock = ServerLock(L.lock_file(self.name), mode)
        live = read_region(self.name)
        if region_alive(live) and live["pid"] != os.getpid():  # its lock file went missing
            self._lock.release()
            raise FileExistsError(
                f"a live shm server (pid {live['pid']}) serves {self.name!r}, although its lock "
                "file was missing; stop it first"
            )
        self._stopping = False
        self.failed: BaseException | None = None  # why the serving loop died, if it ever does
        # a region mutex taken with mutex_holder_pid 0 (its taker interrupted or killed between
        # acquire and naming itself) and no connect for this long is freed: 2 x a connect timeout
        self.stuck_mutex_s = 2 * 2.0
        self._unnamed_since: tuple[int, float] | None = None  # (connect_epoch, when) first seen
        self._drain_upto: dict[int, int] = {}  # at stop: each channel's request published by then
        self._parked: set[int] = set()  # channels _fail could not answer: no answer will ever come
        self._hurry = False  # hurry(): the drain ends now
        self.abandoned = 0  # requests stop() gave up on (its drain timed out, or hurry())
        self._running = True
        try:  # from here on, a failure removes what was made and lets the lock go
            failed: list[tuple[str, str]] = []  # we hold the lock: leftovers are stale
            remove_objects(self.name, keep_lock_file=True, failed=failed)
            if failed:
                raise PermissionError(
                    f"stale objects of {self.name!r} cannot be removed: "
                    + "; ".join(f"/dev/shm/{e}: {why}" for e, why in failed)
                    + " (another user's? `foundation shm clean` as their owner removes them)"
                )
            self._mutex = create_semaphore(L.mutex_name(self.name), mode, 1)
            self._bell = create_semaphore(L.doorbell_name(self.name), mode, 0)
            self._channels = [
                _Channel(i, create_semaphore(L.channel_sem_name(self.name, i), mode, 0))
                for i in range(opts.channels)
            ]
            self._ctl = Segment.create(
                L.control_name(self.name), L.CHANNELS_OFFSET + opts.channels * L.CHANNEL_SIZE, mode
            )
            self._u32, self._u64 = self._ctl.u32, self._ctl.u64
            self._answers = Answers(self.name, self._ctl, self._cuda, self.limits)
            self._answer = self._answers.answer  # what _Responder calls: one bound method, no extra call
            self._write_header(opts)
        except BaseException:
            try:
                remove_objects(self.name, keep_lock_file=True, failed=[])
            finally:
                self._lock.release()  # whatever is left, the name is not held by a failed start
            raise
        self._loop_thread = threading.Thread(target=self._loop, name=f"shm-{self.name}", daemon=True)
        self._beat_thread = threading.Thread(
            target=self._heartbeat, name=f"shm-{self.name}-beat", daemon=True
        )
        self._stop_event = threading.Event()
        self._loop_thread.start()
        self._beat_thread.start()

    # --- region --------------------------------------------------------------------------------

    def _write_header(self, opts: ServeOptions) -> None:
        pid = os.getpid()
        features = (L.Feature.DATA_CRC if self.data_crc else 0) | self._cuda.feature
        L.REGION.pack_into(
            self._ctl.buf,
            0,
            0,  # magic last
            L.PROTOCOL_VERSION,
            L.PROTOCOL_MINOR,
            L.REGION_HEADER_SIZE,
            int(features),
            L.RegionState.STARTING,
            pid,
            start_time(pid),
            0,
            time.monotonic_ns(),
            opts.heartbeat_ms,
            0,
            opts.channels,
            L.CHANNEL_SIZE,
            L.CHANNELS_OFFSET,
            opts.max_request_bytes,
            opts.max_tensors,
            L.MAX_NDIM,
            0,
            0,
            opts.spin_us,
            random.getrandbits(64),
            opts.default_capacity,
            0,
            self.name.encode(),
        )
        self._ctl.u32[_R.MAGIC // 4] = L.REGION_MAGIC
        self._ctl.u32[_R.STATE // 4] = L.RegionState.READY

    # --- the loop ------------------------------------------------------------------------------

    def _active(self) -> list[_Channel]:
        u32 = self._ctl.u32
        active = []
        for ch in self._channels:
            if u32[ch.owner_word]:
                active.append(ch)
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
                    dirty = due > 0
                    window = min(spin_ns, due) if dirty else spin_ns
            i = poll(cseq, sseq, busy, window, YIELD_AFTER_NS, epoch_word, epoch, start)
            if i >= 0:
                ch = active[i]
                start = i + 1
                # poll's reads of cseq, sseq and busy are not one snapshot: an answer landing
                # between them looks like a new request. An answer clears the busy word after it
                # stores sseq, and poll saw it clear, so fresh reads of both words are the truth.
                if ch.busy:
                    continue
                reader = ch.reader
                if take is not None and reader is not None and reader.last is not None:
                    # the C lane: fresh reads, the busy word set, and a request that repeats the
                    # channel's last one checked (header, CRC) with its id and deadline
                    got = take(
                        ch.req,
                        reader.payload,
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
                with contextlib.suppress(posix_ipc.BusyError):
                    self._bell.acquire(0.1)
            u32[sleeping_word] = 0

    def _flush(self, flush: Any) -> int:
        """``handler.flush()`` (RequestHandler.flush): ns until it wants another call, 0 if none."""
        try:
            return int(flush())
        except BaseException:  # a handler bug (or a model's SystemExit) must not stop the loop
            log.exception("shm %s: handler.flush failed", self.name)
            return 0

    def _fail(self, ch: _Channel, seq: int) -> None:
        """Answer INTERNAL to a request whose dispatch failed; if even that is impossible, park the
        channel (busy) rather than retry it in a hot loop: its client's deadline ends the wait."""
        ch.busy = True
        try:
            if ch.resp is None or ch.gen != self._u64[ch.gen_word]:
                self._map(ch)
            err = InternalError("the server failed on this request (see its log)")
            self._answer(_Responder(self, ch, seq, self._request_id(ch), ""), err)
        except Exception:
            log.exception("shm %s channel %d: cannot answer; parking the channel", self.name, ch.index)
            self._parked.add(ch.index)  # a drain at stop does not wait for it

    def _map(self, ch: _Channel) -> None:
        ctl = self._ctl
        ch.unmap()
        raw = bytes(ctl.buf[ch.base + _C.DATA_NAME : ch.base + _C.DATA_NAME + 64])
        name = raw.partition(b"\0")[0].decode("ascii", "replace")
        req_cap = ctl.u64[(ch.base + _C.REQUEST_CAPACITY) // 8]
        resp_cap = ctl.u64[(ch.base + _C.RESPONSE_CAPACITY) // 8]
        if not name.startswith(f"/fdn-{self.name}-d{ch.index}-"):
            raise InternalError(f"channel {ch.index}: data segment name {name!r} is not this channel's")
        data = Segment.open(name)
        if req_cap + resp_cap > data.size or req_cap % L.PAGE or resp_cap % L.PAGE:
            data.close()
            raise InternalError(
                f"channel {ch.index}: capacities {req_cap}+{resp_cap} are not multiples of {L.PAGE} "
                f"within {name} ({data.size} bytes)"
            )
        ch.data, ch.gen = data, ctl.u64[ch.gen_word]
        ch.req = data.buf[:req_cap].toreadonly()
        ch.resp = data.buf[req_cap : req_cap + resp_cap]
        ch.req_cap, ch.resp_cap = req_cap, resp_cap
        ch.reader = RequestReader(ch.req, req_cap, self.limits)
        ch.wkey = None

    def _dispatch_repeat(self, ch: _Channel, seq: int, rid: int, deadline: int) -> None:
        """A request that repeats the channel's last one (``_hot.take`` checked it and set the busy
        word): its decoding is the cached one, with this request's id and deadline."""
        ch.busy = True
        if (
            (self._stopping and self._refusing(ch, seq))  # an attribute read per request, no call
            or ch.index in self._cuda.channels
            or (deadline and time.monotonic_ns() >= deadline)
        ):
            self._dispatch_general(ch, seq)  # answered there: ShuttingDown, CUDA IPC, DeadlineExceeded
            return
        assert ch.reader is not None
        model, version, _, inputs, outputs, _ = ch.reader.last  # type: ignore[misc]
        request = InferenceRequest(model, dict(inputs), rid, version, deadline, {}, outputs)
        self._run(request, _Responder(self, ch, seq, rid, model))

    def _dispatch(self, ch: _Channel, seq: int) -> None:
        ch.busy = True
        self._u32[ch.busy_word] = 1
        self._dispatch_general(ch, seq)

    def _run(self, request: InferenceRequest, respond: _Responder) -> None:
        """Call the handler; whatever it raises becomes the request's error response."""
        try:
            self.handler(request, respond)
        except InferenceError as exc:
            respond(exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the loop thread serves on
            log.exception("shm %s: handler raised on request %d", self.name, request.id)
            respond(HandlerError(f"{type(exc).__name__}: {exc}", model=request.model, request_id=request.id))

    def _dispatch_general(self, ch: _Channel, seq: int) -> None:
        """Decode the request in full (or reject it), then run it."""
        rid, model = 0, ""
        try:
            if ch.gen != self._u64[ch.gen_word]:
                self._map(ch)
            assert ch.reader is not None
            dec = ch.reader.read()
            cuda = self._cuda  # CUDA IPC (spec 15): a channel that used it, the flag, or a new CUDA decode
            if ch.index in cuda.channels or dec.flags & _CUDA_FLAG or _cuda_decoded[0] != cuda.decoded:
                owner = (self._ctl.u32[ch.owner_word], self._ctl.u64[(ch.base + _C.OWNER_START) // 8])
                dec = self._cuda.on_request(ch.index, owner, dec)  # CUDA IPC: open handles
        except InferenceError as exc:
            rid = self._request_id(ch)
            log.warning("shm %s channel %d: rejected request %d: %s", self.name, ch.index, rid, exc)
            exc.request_id = rid
            self._answer(_Responder(self, ch, seq, rid, model), exc)
            return
        except Exception as exc:  # a segment the client broke: answer if we can, never die
            rid = self._request_id(ch)
            log.warning("shm %s channel %d: %r", self.name, ch.index, exc)
            self._answer(_Responder(self, ch, seq, rid, model), InternalError(str(exc), request_id=rid))
            return
        respond = _Responder(self, ch, seq, dec.request_id, dec.model)
        if self._refusing(ch, seq):
            respond(ShuttingDown("the server is stopping", model=dec.model, request_id=dec.request_id))
        elif dec.deadline_ns and time.monotonic_ns() >= dec.deadline_ns:
            respond(
                DeadlineExceeded(
                    "deadline passed before the request ran", model=dec.model, request_id=dec.request_id
                )
            )
        elif dec.kind == _INFER:
            request = InferenceRequest(
                dec.model,
                dec.inputs,
                id=dec.request_id,
                version=dec.version,
                deadline_ns=dec.deadline_ns,
                parameters=dec.params,
                outputs=dec.outputs,
            )
            self._run(request, respond)
        else:
            self._control(dec, respond)

    @staticmethod
    def _request_id(ch: _Channel) -> int:
        return int.from_bytes(ch.req[8:16], "little") if ch.req is not None and len(ch.req) >= 16 else 0

    def _control(self, dec: DecodedRequest, respond: _Responder) -> None:
        """METADATA (kind 3) and STATS (kind 4): no inputs, outputs or parameters; STATS names no
        model (spec 5). A request that carries any is refused, not answered as if it had none."""
        kind, model = dec.kind, dec.model
        what = "METADATA" if kind == L.MessageKind.METADATA_REQUEST else "STATS"
        extra = [
            f"{len(got)} {label}"
            for label, got in (("inputs", dec.inputs), ("outputs", dec.outputs), ("parameters", dec.params))
            if got
        ]
        if kind == L.MessageKind.STATS_REQUEST and model:
            extra.append(f"model {model!r}")
        if extra:
            respond(
                InvalidInput(
                    f"a {what} request carries no inputs, outputs, parameters"
                    + (" or model" if what == "STATS" else "")
                    + f"; this one has {', '.join(extra)}",
                    model=model,
                    request_id=respond.request_id,
                )
            )
            return
        try:
            doc = (
                self.handler.metadata(model)
                if kind == L.MessageKind.METADATA_REQUEST
                else self.handler.stats()
            )
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        except InferenceError as exc:
            respond(exc)
            return
        except Exception as exc:
            respond(HandlerError(f"{type(exc).__name__}: {exc}", model=model, request_id=respond.request_id))
            return
        respond(InferenceResponse(respond.request_id, model, {}, parameters={"__text__": text}))

    # --- liveness ------------------------------------------------------------------------------

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
            u64[_R.HEARTBEAT // 8] += 1
            u64[_R.HEARTBEAT_NS // 8] = time.monotonic_ns()
            try:
                self._reap()
            except Exception:  # never let the heartbeat die
                log.exception("shm %s: reaping dead clients failed", self.name)

    def _reap(self) -> None:
        u32, u64 = self._ctl.u32, self._ctl.u64
        holder = u32[_R.MUTEX_HOLDER // 4]
        if holder and not is_running(holder):  # gone, or a zombie (spec 10.3 counts it as gone)
            log.warning("shm %s: pid %d died holding the region mutex; releasing it", self.name, holder)
            u32[_R.MUTEX_HOLDER // 4] = 0
            self._mutex.release()
        self._free_unnamed_mutex(holder)
        for ch in self._channels:
            pid = u32[ch.owner_word]
            if pid and not is_alive(pid, u64[(ch.base + _C.OWNER_START) // 8]):
                self._reclaim(ch, pid)

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

    def _reclaim(self, ch: _Channel, pid: int) -> None:
        try:
            self._mutex.acquire(1.0)
        except posix_ipc.BusyError:
            return  # try again at the next beat
        ctl = self._ctl
        ctl.u32[_R.MUTEX_HOLDER // 4] = os.getpid()  # spec 10.1: whoever holds the mutex says so
        try:
            if ctl.u32[ch.owner_word] != pid:
                return
            with ch.lock:
                ch.lease += 1
                ctl.u64[ch.sseq] = ctl.u64[ch.cseq]
                self._cuda.forget(ch.index)  # a dead client: close its CUDA IPC mappings
                ctl.u32[ch.busy_word] = 0
                ch.busy = False
                self._parked.discard(ch.index)
            raw = bytes(ctl.buf[ch.base + _C.DATA_NAME : ch.base + _C.DATA_NAME + 64]).partition(b"\0")[0]
            name = raw.decode("ascii", "replace")
            if name.startswith(f"/fdn-{self.name}-d{ch.index}-"):
                unlink_segment(name)
            drain(ch.sem)
            ctl.u32[ch.owner_word] = 0
            ctl.u64[_R.CONNECT_EPOCH // 8] += 1
            log.info("shm %s: reclaimed channel %d of dead client pid %d", self.name, ch.index, pid)
        finally:
            ctl.u32[_R.MUTEX_HOLDER // 4] = 0
            self._mutex.release()

    # --- stop ----------------------------------------------------------------------------------

    def _refusing(self, ch: _Channel, seq: int) -> bool:
        """Once stopping, a request is refused (ShuttingDown) unless its client had published it
        before ``stop`` began: those are queued, and are served while the server drains."""
        return self._stopping and seq > self._drain_upto.get(ch.index, 0)

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
        were left unanswered (their clients fail ServerUnavailable)."""
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
        u32 = self._ctl.u32
        self._running = False
        self._bell.release()
        self._loop_thread.join(2)
        self._stop_event.set()
        self._beat_thread.join(2)
        u32[_R.STATE // 4] = L.RegionState.STOPPED
        for ch in self._channels:
            with ch.lock:
                ch.lease += 1
            if u32[ch.owner_word]:
                ch.sem.release()  # sleeping clients wake, see STOPPED, fail ServerUnavailable
        remove_objects(self.name, keep_lock_file=True)
        self._cuda.close()
        for ch in self._channels:
            ch.unmap()
            ch.sem.close()
        self._mutex.close()
        self._bell.close()
        self._ctl.close()
        self._lock.release()

    def stats(self) -> dict[str, Any]:
        """The server's channel count and how many are busy now (``MLRuntime.stats``' transports)."""
        return {"channels": len(self._channels), "busy": sum(ch.busy for ch in self._channels)}
