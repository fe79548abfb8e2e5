"""The shm server's answers: a response or an error written into a channel's response area and
published (``server_seq``, busy cleared, the client woken if it sleeps), exactly once per dispatch.

A response that repeats the channel's last one (same model, version, output names; dtypes and
shapes checked as the data is copied) is one C call (``_hot.answer``); anything else is encoded in
full. ``_Responder`` (the handler's ``respond``) calls ``Answers.answer``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from foundation_ml import DataType, InferenceResponse
from foundation_ml.errors import HandlerError, InferenceError, InternalError, InvalidInput, TooLarge

from . import _layout as L
from ._accel import hot
from ._codec import (
    _MAX_TEXT,
    Limits,
    cut_message,
    fill,
    layout,
    response_payload_size,
    text_and_params,
    views,
    write_header,
    write_response,
)
from ._cuda_ipc import ServerCuda
from ._log_throttle import LogThrottle
from ._segments import Segment
from ._server_channel import _Channel, _Responder
from ._sync import fence

__all__ = ["Answers"]

log = logging.getLogger("foundation_shm")
_RESPONSE = int(L.MessageKind.RESPONSE)


def _key(model: str, value: InferenceResponse, outputs: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a response must share with the channel's last one for its payload to stand as written."""
    params = value.parameters
    return (model, value.version, tuple(params.items()) if params else (), tuple(outputs))


class Answers:
    """Writes and publishes the answers of one server (its control segment, CUDA state, limits)."""

    def __init__(
        self, name: str, ctl: Segment, cuda: ServerCuda, limits: Limits, handler_log: LogThrottle
    ) -> None:
        self.name = name
        self.limits = limits
        self._handler_log = handler_log  # the handler's faults, per channel (shared with _run's)
        self._ctl = ctl
        self._cuda = cuda
        self._lane = hot is not None  # _hot.answer: a repeated response in one call

    def answer(self, r: _Responder, value: InferenceResponse | InferenceError) -> None:
        """Write ``value`` as the answer to ``r``'s request and publish it; dropped if the channel
        was reclaimed or the request is no longer the pending one."""
        ch = r.channel
        if not self._answer_locked(ch, r, value):
            # the channel was reclaimed (its client died), or the server stopped: nobody to
            # answer; a CUDA request the reclaim or the stop kept its inputs for lets them go
            # (synchronised), by its own lease: the channel may serve a new client's by now.
            # Outside the channel's lock: that synchronise (a dead client's model's kernels) held
            # up the new client's answers on it, and the serving loop with them
            self._cuda.dropped(ch.index, r.lease)

    def _answer_locked(self, ch: _Channel, r: _Responder, value: InferenceResponse | InferenceError) -> bool:
        """``answer`` under the channel's lock; False (nothing done) if the request's lease ended."""
        with ch.lock:
            if ch.lease != r.lease:
                return False
            if ch.resp is None:
                return True
            if self._ctl.u32[ch.owner_word] != ch.owner[0]:
                # freed by its owner with this request pending (no client does; a broken one may)
                # and claimed by another process, whose request may have this very sequence
                # number: published, this answer ended that client's call with the old owner's
                # segment's answer (its own area empty). The pid alone (one word): a new owner of
                # the same pid would need the old one dead, and a dead owner's channel is
                # reclaimed (the lease above), never claimed, until the server frees it.
                self._drop_stale(ch, r, "its channel changed hands")
                return True
            if self._lane and ch.wkey is not None and type(value) is InferenceResponse:
                # the response repeats the last one on this channel: one C call (_hot.answer)
                outputs = value.outputs
                key = _key(value.model or r.model, value, outputs)
                if key == ch.wkey and ch.index not in self._cuda.channels:
                    _, payload, dsts = ch.wval
                    # cleared before the C call publishes (the general path clears it after):
                    # either order is safe, as the loop dispatches a channel only once both the
                    # busy word and this flag are clear; first, the loop never waits on it
                    busy, ch.busy = ch.busy, False
                    woke = hot.answer(  # type: ignore[union-attr]
                        self._ctl.buf,
                        ch.resp,
                        dsts,
                        outputs.values(),
                        r.request_id,
                        payload,
                        ch.cseq,
                        ch.sseq,
                        r.seq,
                        ch.busy_word,
                        ch.served_word,
                        ch.sleeping_word,
                    )
                    if woke is not None and woke >= 0:
                        if woke:
                            ch.sem.release()
                        return True
                    ch.busy = busy  # stale, or new dtypes or shapes: nothing written; the general way
            if self._ctl.u64[ch.cseq] != r.seq or self._ctl.u64[ch.sseq] == r.seq:
                self._drop_stale(ch, r, "not the pending request any more")
                return True
            try:
                self._write(ch, r, value)
            except Exception as exc:  # a response we cannot encode becomes a typed error
                self._write_failure(ch, r, exc)  # never raises: the channel is completed below
            u32, u64 = self._ctl.u32, self._ctl.u64
            u64[ch.sseq] = r.seq
            u32[ch.busy_word] = 0
            u64[ch.served_word] += 1
            ch.busy = False
            fence()
            if u32[ch.sleeping_word]:
                ch.sem.release()
        return True

    def _drop_stale(self, ch: _Channel, r: _Responder, why: str) -> None:
        """An answer to a request that is not the pending one any more, or not its client's
        (never expected): answering would clobber another; the channel must not stay busy, or its
        next request is never served."""
        log.warning("shm %s channel %d: answer to %d is stale (%s); dropped", self.name, ch.index, r.seq, why)
        if ch.busy:
            self._ctl.u32[ch.busy_word] = 0
            ch.busy = False

    def _write_failure(self, ch: _Channel, r: _Responder, exc: Exception) -> None:
        """Answer with ``exc`` a response that could not be encoded; never raises. What the
        handler put in it is the handler's fault, not the request's: ``InvalidInput`` (a name too
        long, params no decoder takes) becomes ``HandlerError``; an untyped error ``InternalError``."""
        more = self._handler_log.admit(ch.index)  # as often as the handler answers so
        if more is not None:
            log.warning("shm %s: cannot encode the response to %d: %r%s", self.name, r.request_id, exc, more)
        if isinstance(exc, InvalidInput):
            err: InferenceError = HandlerError(f"the handler's response cannot be sent: {exc.message}")
        elif isinstance(exc, InferenceError):
            err = exc
        else:
            err = InternalError(f"cannot encode response: {exc}")
        self.write_error(ch, r, err)

    def write_error(self, ch: _Channel, r: _Responder, exc: InferenceError, required: int = 0) -> None:
        """Write ``exc`` as the response. Never raises: whatever the model's name or the message
        hold, the field written is at most 63 UTF-8 bytes without NUL, and the text is cut to what
        the response area holds (a 4 KiB area holds about 4,000 bytes of message), at most 1 MiB."""
        assert ch.resp is not None
        ch.wkey = None
        room = min(_MAX_TEXT, ch.resp_cap - L.MSG_HEADER_SIZE - response_payload_size(0, 0, 0))
        text = cut_message(exc.message, room)
        model = r.model.encode("utf-8", "replace").replace(b"\0", b"")[:63].decode("utf-8", "ignore")
        write_response(
            ch.resp,
            request_id=r.request_id,
            status=int(exc.code),
            model=model,
            text=text,
            required_bytes=required,
        )

    def fits(self, ch: _Channel, r: _Responder, end: int) -> bool:
        """Whether a response of ``end`` bytes fits the channel's response area; if not, the answer
        is TOO_LARGE with the size the client must attach (it grows the area and retries)."""
        if end <= ch.resp_cap:
            return True
        need = (end + L.PAGE - 1) // L.PAGE * L.PAGE
        exc = TooLarge(
            f"the response needs {need} bytes; the response area has {ch.resp_cap}",
            model=r.model,
            request_id=r.request_id,
        )
        self.write_error(ch, r, exc, need)
        return False

    def _write(self, ch: _Channel, r: _Responder, value: InferenceResponse | InferenceError) -> None:
        resp = ch.resp
        assert resp is not None
        if ch.index in self._cuda.channels and self._cuda.handles(ch.index):
            self._cuda.write(self, ch, r, value)  # a CUDA IPC request: outputs by handle
            return
        if isinstance(value, InferenceError):
            self.write_error(ch, r, value)
            return
        outputs = value.outputs
        model = value.model or r.model
        # the response repeats the last one on this channel (model, names; dtypes and shapes are
        # checked as the data is copied, the one copy of each output): only the header is new
        key = _key(model, value, outputs)
        if key == ch.wkey and fill(ch.wval[2], outputs.values()):
            refs, payload, _ = ch.wval
            write_header(resp, _RESPONSE, r.request_id, payload, 0, refs)
            return
        arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in outputs.values()]
        self._write_full(ch, r, model, value, arrays, key)

    def _write_full(
        self,
        ch: _Channel,
        r: _Responder,
        model: str,
        value: InferenceResponse,
        arrays: list[np.ndarray],
        key: tuple[Any, ...],
    ) -> None:
        assert ch.resp is not None
        text, raw_params = text_and_params(value.parameters, r.request_id)
        specs = [
            (n, DataType.from_numpy(a.dtype), a.shape) for n, a in zip(value.outputs, arrays, strict=True)
        ]
        if len(specs) > self.limits.max_tensors:
            raise TooLarge(
                f"{len(specs)} outputs (at most {self.limits.max_tensors})", request_id=r.request_id
            )
        refs, end = layout(specs, response_payload_size(len(specs), len(text), len(raw_params)))
        if not self.fits(ch, r, end):
            return
        dsts = views(ch.resp, refs)
        for dst, a in zip(dsts, arrays, strict=True):
            dst[...] = a
        payload = write_response(
            ch.resp,
            request_id=r.request_id,
            model=model,
            version=value.version,
            outputs=refs,
            text=text,
            params=raw_params,
        )
        ch.wkey, ch.wval = (None if text else key), (refs, payload, dsts)
