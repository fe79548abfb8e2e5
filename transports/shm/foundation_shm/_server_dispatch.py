"""The shm server's dispatch: each request the serving loop takes, decoded (or its cached decoding
re-used) and handed to the handler, or answered with its error (ShuttingDown, DeadlineExceeded,
the decoder's, INTERNAL), which the handler is told of (``RequestHandler.rejected``, when it has
it); METADATA and STATS answered from the handler.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable

from foundation_ml import InferenceRequest, InferenceResponse, RequestHandler
from foundation_ml.errors import (
    DeadlineExceeded,
    HandlerError,
    InferenceError,
    InternalError,
    InvalidInput,
    ShuttingDown,
)

from . import _layout as L
from ._codec import DecodedRequest, Limits
from ._cuda_desc import decoded as _cuda_decoded
from ._cuda_ipc import ServerCuda
from ._fd_limit import open_file_limit
from ._liveness import is_alive
from ._log_throttle import LogThrottle
from ._readers import RequestReader
from ._segments import Segment
from ._server_channel import _Channel, _Responder

__all__ = ["_Dispatch"]

log = logging.getLogger("foundation_shm")
_C = L.ChannelField
_INFER = int(L.MessageKind.INFER_REQUEST)
_CUDA_FLAG = int(L.MessageFlag.CUDA_IPC)


class _Dispatch:
    """``ShmServer``'s dispatch, a mixin: the methods its serving loop calls with each request."""

    # ShmServer's, set in its __init__
    name: str
    handler: RequestHandler
    limits: Limits
    _ctl: Segment
    _u32: memoryview
    _u64: memoryview
    _cuda: ServerCuda
    _answer: Callable[[_Responder, InferenceResponse | InferenceError], None]
    _report: Callable[[str, str, InferenceError], None] | None  # the handler's rejected, if any
    _told: tuple[int, int] | None  # (channel, seq) last reported or handed over on a failure path
    _stopping: bool
    _drain_upto: dict[int, int]
    _parked: set[int]
    _rejected_log: LogThrottle
    _raised_log: LogThrottle

    # A request's lease is read before the channel is marked busy, and checked after: a reclaim
    # (its client died) that ended it in between found the channel not busy, or cleared it, and
    # the request is gone with its client (_drop_taken); one after it finds the channel busy and
    # the request's answer, carrying the ended lease, is dropped. Read after, the lease was the
    # reclaim's new one: the late answer, on a channel another client had claimed, was dropped as
    # stale and cleared the busy flag of that client's request in flight (the loop ran it twice).

    def _dispatch(self, ch: _Channel, seq: int) -> None:
        lease = ch.lease
        ch.busy = True
        self._u32[ch.busy_word] = 1
        if ch.lease != lease:
            self._drop_taken(ch)
            return
        self._dispatch_general(ch, seq, lease)

    def _dispatch_repeat(self, ch: _Channel, seq: int, rid: int, deadline: int) -> None:
        """A request that repeats the channel's last one (``_hot.take`` checked it and set the busy
        word): its decoding is the cached one, with this request's id and deadline."""
        lease = ch.lease
        ch.busy = True
        if ch.lease != lease:
            self._drop_taken(ch)
            return
        if (
            (self._stopping and self._refusing(ch, seq))  # an attribute read per request, no call
            or ch.index in self._cuda.channels
            or (deadline and time.monotonic_ns() >= deadline)
        ):
            # answered there: ShuttingDown, CUDA IPC, DeadlineExceeded
            self._dispatch_general(ch, seq, lease)
            return
        assert ch.reader is not None
        model, version, _, inputs, outputs, _ = ch.reader.last  # type: ignore[misc]
        request = InferenceRequest(model, dict(inputs), rid, version, deadline, {}, outputs)
        self._run(request, _Responder(self, ch, seq, rid, model, lease))

    def _drop_taken(self, ch: _Channel) -> None:
        """A reclaim ended the channel's lease as the loop took its request: the request went with
        its dead client, and the channel is not busy (the reclaim may have looked before it was)."""
        with ch.lock:
            ch.busy = False
            self._u32[ch.busy_word] = 0

    def _dispatch_general(self, ch: _Channel, seq: int, lease: int) -> None:
        """Decode the request in full (or reject it), then run it: ``lease``, the channel's when
        the loop took it (its answer is dropped once a reclaim or a stop ended it)."""

        rid, model = 0, ""
        try:
            # none mapped, or forgotten (the channel changed hands); or a new generation (it may wrap to 0)
            if ch.reader is None or ch.gen != self._u64[ch.gen_word]:
                self._map(ch)
            assert ch.reader is not None
            dec = ch.reader.read()
            if ch.lease != lease:  # reclaimed as it was read: what was read may be the next
                self._drop_taken(ch)  # client's request (its segment mapped), dispatched later
                return
            cuda = self._cuda  # CUDA IPC (spec 15): a channel that used it, the flag, or a new CUDA decode
            if ch.index in cuda.channels or dec.flags & _CUDA_FLAG or _cuda_decoded[0] != cuda.decoded:
                owner = (self._ctl.u32[ch.owner_word], self._ctl.u64[(ch.base + _C.OWNER_START) // 8])
                dec = self._cuda.on_request(ch.index, owner, dec)  # CUDA IPC: open handles
                if ch.lease != lease:  # reclaimed before they opened: the reclaim kept none of them
                    with ch.lock:
                        self._cuda.forget(ch.index, lease)  # kept for its answer, as a reclaim's
        except InferenceError as exc:
            if ch.resp is None and self._given_up(ch):
                return
            rid = self._request_id(ch)
            self._log_rejected(ch, "rejected request %d: %s", rid, exc)
            exc.request_id = rid
            self._rejected(ch, seq, exc.model, "", exc)  # the model, where the decoder got that far
            self._answer_or_park(ch, seq, rid, model, exc, lease)
            return
        except Exception as exc:  # a segment the client broke: answer if we can, never die
            if ch.resp is None and self._given_up(ch):
                return
            rid = self._request_id(ch)
            self._log_rejected(ch, "%r", exc)
            err = InternalError(str(exc), request_id=rid)
            self._rejected(ch, seq, "", "", err)
            self._answer_or_park(ch, seq, rid, model, err, lease)
            return
        respond = _Responder(self, ch, seq, dec.request_id, dec.model, lease)
        if self._refusing(ch, seq):
            stopping = ShuttingDown("the server is stopping", model=dec.model, request_id=dec.request_id)
            self._refuse(ch, dec, respond, stopping)
        elif dec.deadline_ns and time.monotonic_ns() >= dec.deadline_ns:
            late = DeadlineExceeded(
                "deadline passed before the request ran", model=dec.model, request_id=dec.request_id
            )
            self._refuse(ch, dec, respond, late)
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

    def _run(self, request: InferenceRequest, respond: _Responder) -> None:
        """Call the handler; whatever it raises becomes the request's error response."""
        try:
            self.handler(request, respond)
        except InferenceError as exc:
            self._told = (respond.channel.index, respond.seq)  # the handler's: _fail reports it not
            respond(exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the loop thread serves on
            self._told = (respond.channel.index, respond.seq)
            # a client may send what makes the handler raise as often as it likes: the traceback
            # is logged at most 10 at once and one a second per channel, as rejections are
            more = self._raised_log.admit(respond.channel.index)
            if more is not None:
                log.exception("shm %s: handler raised on request %d%s", self.name, request.id, more)
            respond(HandlerError(f"{type(exc).__name__}: {exc}", model=request.model, request_id=request.id))

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

    def _refuse(self, ch: _Channel, dec: DecodedRequest, respond: _Responder, error: InferenceError) -> None:
        """Answer a decoded request ``error`` without running it; an inference request is reported
        to the handler first (METADATA and STATS are no requests it counts)."""
        if dec.kind == _INFER:
            self._rejected(ch, respond.seq, dec.model, dec.version, error)
        respond(error)

    def _rejected(self, ch: _Channel, seq: int, model: str, version: str, error: InferenceError) -> None:
        """Tell the handler (``RequestHandler.rejected``, if it has it) of a request answered
        ``error`` here, before it is answered (a client that reads the stats then finds it
        counted). Whatever the handler raises is logged (as its other faults are: throttled per
        channel) and serving goes on. Once per request: should answering it fail, ``_fail``
        (which answers INTERNAL) does not report it again."""
        self._told = (ch.index, seq)
        report = self._report
        if report is None:
            return
        try:
            report(model, version, error)
        except BaseException as exc:  # SystemExit too: the loop thread serves on
            more = self._raised_log.admit(ch.index)
            if more is not None:
                log.warning("shm %s: handler.rejected raised: %r%s", self.name, exc, more)

    def _refusing(self, ch: _Channel, seq: int) -> bool:
        """Once stopping, a request is refused (ShuttingDown) unless its client had published it
        before ``stop`` began: those are queued, and are served while the server drains."""
        return self._stopping and seq > self._drain_upto.get(ch.index, 0)

    @staticmethod
    def _request_id(ch: _Channel) -> int:
        return int.from_bytes(ch.req[8:16], "little") if ch.req is not None and len(ch.req) >= 16 else 0

    def _map(self, ch: _Channel) -> None:
        ctl = self._ctl
        ch.unmap()
        # the owner first: a claim after this read makes the owner differ from the one recorded
        # (a segment is mapped anew then: ShmServer._active), whichever segment is mapped below
        owner = (ctl.u32[ch.owner_word], ctl.u64[ch.start_word])
        raw = bytes(ctl.buf[ch.base + _C.DATA_NAME : ch.base + _C.DATA_NAME + 64])
        name = raw.partition(b"\0")[0].decode("ascii", "replace")
        req_cap = ctl.u64[(ch.base + _C.REQUEST_CAPACITY) // 8]
        resp_cap = ctl.u64[(ch.base + _C.RESPONSE_CAPACITY) // 8]
        if not name.startswith(f"/fdn-{self.name}-d{ch.index}-"):
            raise InternalError(f"channel {ch.index}: data segment name {name!r} is not this channel's")
        try:
            data = Segment.open(name, sole=True)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            raise InternalError(
                f"channel {ch.index}: cannot map its data segment {name}: {os.strerror(exc.errno)} "
                f"(this server may open {open_file_limit()} files: raise ulimit -n, or serve fewer "
                "channels)"
            ) from None
        if req_cap + resp_cap > data.size or req_cap % L.PAGE or resp_cap % L.PAGE:
            data.close()
            raise InternalError(
                f"channel {ch.index}: capacities {req_cap}+{resp_cap} are not multiples of {L.PAGE} "
                f"within {name} ({data.size} bytes)"
            )
        if not resp_cap:  # no room for even a header: every answer raised, logged as a bug of ours
            data.close()
            raise InternalError(f"channel {ch.index}: a response area of 0 bytes in {name} holds no answer")
        ch.data, ch.gen, ch.owner = data, ctl.u64[ch.gen_word], owner
        ch.req = data.buf[:req_cap].toreadonly()
        ch.resp = data.buf[req_cap : req_cap + resp_cap]
        ch.req_cap, ch.resp_cap = req_cap, resp_cap
        ch.reader = RequestReader(ch.req, req_cap, self.limits)
        ch.wkey = None

    def _given_up(self, ch: _Channel) -> bool:
        """Whether the request on ``ch``, whose data segment could not be mapped, is one its
        client gave up on: the channel given back with it pending (``owner_start_time = 0``,
        spec 10.1: a call that timed out, then ``close()``, which unlinks the segment), or its
        owner gone (the channel freed, or its process dead). Nobody waits for its answer: the
        channel is left busy, parked, for the heartbeat's reclaim (10.4), which drops the request
        as it drops any pending on such a channel: neither a warning nor an INTERNAL rejection
        (a client that timed out and closed is no fault). False for a live owner's channel."""
        pid, started = self._u32[ch.owner_word], self._u64[ch.start_word]
        if pid and started and is_alive(pid, started):
            return False
        with ch.lock:  # the reclaim frees a channel under it
            if self._u64[ch.sseq] != self._u64[ch.cseq]:
                self._parked.add(ch.index)  # the reclaim, still to come, un-parks it
            else:  # reclaimed since the loop saw the request: nothing is pending, nothing parked
                ch.busy = False
                self._u32[ch.busy_word] = 0
        return True

    def _log_rejected(self, ch: _Channel, what: str, *args: object) -> None:
        """A warning about a request the server refused, at most 10 at once and one a second
        per channel (its client writes what they say, as often as it likes); the next line
        logged says how many were held back."""
        more = self._rejected_log.admit(ch.index, "more rejected")
        if more is not None:
            log.warning("shm %s channel %d: " + what + more, self.name, ch.index, *args)

    def _answer_or_park(
        self, ch: _Channel, seq: int, rid: int, model: str, exc: InferenceError, lease: int
    ) -> None:
        """Answer a rejected request; with no data segment mapped (the client's could not be:
        a foreign name, a missing or short segment) there is nowhere to answer, so the channel is
        parked as ``_fail`` parks it: its client's deadline ends its wait, and a stop does not
        wait the whole drain for an answer that cannot come. So is a channel whose client shrank
        its data segment under the server (a SIGBUS caught: its pages are zeros, not the client's)."""
        if ch.shrunk(self.name, self._ctl.u32[ch.owner_word]):
            ch.unmap()
        if ch.resp is None:
            log.warning(
                "shm %s channel %d: no data segment to answer in; parking the channel", self.name, ch.index
            )
            self._parked.add(ch.index)
            return
        self._answer(_Responder(self, ch, seq, rid, model, lease), exc)

    def _fail(self, ch: _Channel, seq: int) -> None:
        """Answer INTERNAL to a request whose dispatch failed; if even that is impossible, park the
        channel (busy) rather than retry it in a hot loop: its client's deadline ends the wait."""
        ch.busy = True
        try:
            if ch.reader is None or ch.gen != self._u64[ch.gen_word]:
                self._map(ch)
            err = InternalError("the server failed on this request (see its log)")
            told, self._told = self._told, None
            if told != (ch.index, seq):  # reported already, or the handler's: counted once
                self._rejected(ch, seq, "", "", err)
            self._answer(_Responder(self, ch, seq, self._request_id(ch), ""), err)
        except Exception:
            log.exception("shm %s channel %d: cannot answer; parking the channel", self.name, ch.index)
            self._parked.add(ch.index)  # a drain at stop does not wait for it
