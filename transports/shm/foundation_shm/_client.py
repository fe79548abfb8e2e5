"""The shm client: claims channels, writes requests in place, waits (spin, then block), decodes responses.

One ``ShmClient`` is thread-safe: each concurrent call takes its own channel from a small pool
(claimed from the server on demand, up to ``channels`` calls at once). Outputs are read-only numpy
views on the channel's response area, valid until the calling thread's next call on this client:
the thread keeps that channel until then, or until it ends, so no other thread's request can
overwrite them. Kept channels do not count against ``channels`` (a thread that is not calling is
never waited for), so each thread that got views holds one of the server's channels: with more
such threads than the server has channels, a call that needs one more fails ``Overloaded``
saying so. Calls whose outputs are copies keep nothing: ``copy_outputs=True`` (for the client, or
per call), ``infer_copy`` (what ``InferenceClient`` uses when it returns copies) and ``ainfer``
copy straight from the response area and give the channel back to the pool.
``loan()`` hands out writable views on the request area so inputs are written straight into
shared memory. A client dropped without ``close()`` gives its channels back when it is collected
(with a ``ResourceWarning``, as an unclosed file does).

Here is the request path; a request written whole is ``_client_write``'s, one that repeats its
channel's last, sent in one C call, is ``_client_repeat``'s, ``metadata`` and ``stats`` are
``_client_control``'s, a call sent once more (its server gone) is ``_gone``'s, a loan's taking
is ``_loan.lend``, and a request of CUDA tensors is ``ClientCuda``'s.
"""

from __future__ import annotations

import functools
import itertools
import struct
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError
from typing import Any

import numpy as np

from foundation_ml import (
    ClientCounters,
    InferenceRequest,
    InferenceResponse,
    TransportClient,
    call_abandoned,
    call_deadline,
)
from foundation_ml.errors import (
    BadChecksum,
    DeadlineExceeded,
    ErrorCode,
    InferenceError,
    InternalError,
    ServerUnavailable,
    TooLarge,
    error_for_code,
)

from . import _layout as L
from ._accel import check_start, hot
from ._channel import _Channel, _Connection, _pages
from ._client_control import control
from ._client_repeat import exchange_repeat
from ._client_write import write_full
from ._codec import MAX_REQUEST_ID, fill, request_id, sendable_params, write_header
from ._cuda_ipc import ClientCuda
from ._gone import (
    Lender,
    _GoneAtConnect,
    _GoneBeforeDispatch,
    _GoneBeforeSending,
    again,
    check_before_sending,
)
from ._loan import Loan, TensorSpecLike, lend
from ._options import ConnectOptions
from ._options import options as _options
from ._pool import ChannelPool
from ._sync import SLICE_S, AdaptiveSpin, fence, wait_seq

__all__ = ["ShmClient"]

_R = L.RegionField
_C = L.ChannelField
_U64 = struct.Struct("<Q")
_DEADLINE_AT = L.MSG_HEADER_SIZE + 80  # deadline_ns in the request body
_INFER = int(L.MessageKind.INFER_REQUEST)
_STATE = _R.STATE // 4
_SERVER_SLEEPING = _R.SERVER_SLEEPING // 4
_READY = int(L.RegionState.READY)
_TOO_LARGE = int(ErrorCode.TOO_LARGE)
_clock = time.monotonic_ns


class ShmClient(TransportClient):
    """A connection to the shm server ``address`` (see ``ShmTransport.connect`` for the options).

    Its connection and channels are a ``ChannelPool`` that does not refer back to it, so a
    finalizer can hold the pool, not the client: a client dropped without ``close()`` is collected
    like any object, and the pool then gives its channels back (``ChannelPool.dropped``).
    """

    def __init__(self, address: str, **options: Any) -> None:
        opts = _options(ConnectOptions, options, "connect")  # every option checked before connecting
        check_start()  # x86-64 only; warns once if the C hot path is missing
        self.address = address
        self.name = L.server_name(address)
        self.max_channels = opts.channels
        self.spin_ns = opts.spin_us * 1000
        self.copy_outputs = opts.copy_outputs
        self.timeout = opts.timeout
        self.connect_timeout = opts.connect_timeout
        self.flags = L.MessageFlag.DATA_CRC if opts.data_crc else 0
        self._cuda = ClientCuda(opts.cuda_ipc, opts.cuda_fallback)  # spec 15: torch CUDA tensors
        self._ids = itertools.count(1)
        self._spin = AdaptiveSpin(min(opts.spin_us * 1000, int(SLICE_S * 1e9)))  # liveness: every slice
        self._lane = hot is not None and not self.flags  # _hot.exchange: repeated requests in one call
        self.max_response_bytes = opts.max_response_bytes
        self._pool = pool = ChannelPool(
            self.name, opts.channels, opts.connect_timeout, opts.capacity, opts.max_response_bytes
        )
        # the pool's methods, bound once (no extra call per request); Loan and ClientCuda use them too
        self._take, self._give, self._connection = pool.take, pool.give, pool.connection
        self._finalizer = weakref.finalize(self, pool.dropped)
        self._finalizer.atexit = False  # at exit the process's end frees it all (spec 10.4)

    @property
    def _cond(self) -> threading.Condition:
        """The pool's lock (``ClientCuda`` looks up the connection under it)."""
        return self._pool._cond

    @property
    def _all(self) -> list[_Channel]:
        """The channels claimed on the current connection."""
        return self._pool._all

    # --- requests ------------------------------------------------------------------------------

    def _deadline(self, request_deadline: int, timeout: float | None) -> int:
        return call_deadline(request_deadline, self.timeout if timeout is None else timeout)

    def _window(self, deadline: int) -> int:
        """This wait's spin window (ns), never past the deadline: a spin checks neither the clock
        nor the server's liveness (its length is capped at one wait slice when connecting)."""
        window = self._spin.window()
        if window and deadline:
            window = max(0, min(window, deadline - _clock()))
        return window

    def infer(
        self, request: InferenceRequest, *, timeout: float | None = None, copy_outputs: bool | None = None
    ) -> InferenceResponse:
        """Send ``request``, return its response. ``copy_outputs`` (None: the client's option):
        False returns views on the response area, and this thread keeps the channel until its
        next call on the client; True returns copies and gives the channel back at once."""
        if copy_outputs is None:
            copy = self.copy_outputs
        elif type(copy_outputs) is bool:
            copy = copy_outputs
        else:
            raise TypeError(f"copy_outputs must be True, False or None, not {copy_outputs!r}")
        rid = request.id or next(self._ids)
        if type(rid) is not int or not 0 < rid <= MAX_REQUEST_ID:
            rid = request_id(rid, request.model)
        try:
            for a in request.inputs.values():  # torch CUDA tensors go by IPC handle, or by host (spec 15)
                if type(a) is not np.ndarray:
                    if self._cuda.claims(request.inputs):
                        return self._cuda.infer_once_more(self, request, rid, timeout, copy)
                    break
            deadline = self._deadline(request.deadline_ns, timeout)
            try:  # (as once_more does, without a closure per call on this path)
                return self._send(request, rid, deadline, copy, self._pool)
            except _GoneBeforeSending as gone:  # no handler saw it: once more, on a new connection
                return again(
                    self, lambda lender: self._send(request, rid, deadline, copy, lender), gone, deadline
                )
        except InferenceError as exc:  # made where the call is not known (the pool, the connection)
            if isinstance(exc, _GoneAtConnect):  # its connect at the start: nothing was written
                raise exc.unsent().with_call(request.model, rid) from None
            exc.with_call(request.model, rid)
            raise

    def _send(
        self, request: InferenceRequest, rid: int, deadline: int, copy: bool, lender: Lender
    ) -> InferenceResponse:
        """One attempt of ``infer``: a channel of ``lender`` (the pool; ``again``'s counts a moved
        call), the request written and sent, its answer."""
        ch = lender.take(deadline)
        views = False
        try:
            inputs = request.inputs
            params = sendable_params(request.parameters, rid) if request.parameters else b""
            # the request repeats the last one on this channel (model, names; then dtypes and
            # shapes, checked as the data is copied): only the data and the header are written
            key = (request.model, request.version, tuple(request.outputs), params, tuple(inputs))
            if key == ch.wkey and self._lane and ch.conn.alive:
                resp = exchange_repeat(self, ch, request, rid, deadline)
            elif key == ch.wkey and fill(ch.wval[3], inputs.values()):
                refs, _, payload, _ = ch.wval
                req = ch.req
                if deadline != ch.wdeadline:
                    _U64.pack_into(req, _DEADLINE_AT, deadline)
                    ch.wdeadline = deadline
                write_header(req, _INFER, rid, payload, self.flags, refs)
                resp = self._exchange(ch, rid, request.model, deadline, retry=True)
            else:
                write_full(self, ch, request, params, key, rid, deadline)
                resp = self._exchange(ch, rid, request.model, deadline, retry=True)
            if copy and not self.copy_outputs:  # (with copy_outputs the response is copies already)
                resp.outputs = {k: v.copy() for k, v in resp.outputs.items()}
            views = not copy
            return resp
        finally:
            lender.give(ch, hold=views)  # views: this thread keeps the channel; copies: the pool

    def infer_copy(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        """``infer`` returning copies the caller owns, copied straight from the response area; the
        channel goes back to the pool at once (the calling thread keeps none). ``InferenceClient``
        calls this when it returns copies (``copy=True``, and every ``ainfer``)."""
        return self.infer(request, timeout=timeout, copy_outputs=True)

    async def ainfer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        """The contract's ``ainfer`` (``infer_copy`` off the event loop, its timeout counted from
        this call), with this client's ``timeout`` when none is given: its outputs are copies,
        and no worker thread of the loop's executor keeps a channel (each would take one of the
        server's)."""
        return await super().ainfer(request, timeout=self.timeout if timeout is None else timeout)

    def _exchange(self, ch: _Channel, rid: int, model: str, deadline: int, retry: bool) -> InferenceResponse:
        conn = ch.conn
        u32, u64 = conn.ctl.u32, conn.ctl.u64
        if not conn.alive or u32[_STATE] != _READY or conn.closing:
            check_before_sending(conn, self._pool.closed)  # unless the server lives (a STOPPING one answers)
        seq = ch.seq + 1
        ch.seq = seq
        if hot is not None:  # store, fence, read the server's sleeping word: one C call
            if hot.publish(conn.ctl.buf, ch.cseq, seq, _SERVER_SLEEPING):
                conn.bell.release()
        else:
            u64[ch.cseq] = seq
            fence()
            if u32[_SERVER_SLEEPING]:
                conn.bell.release()
        return self._await(ch, seq, rid, model, deadline, self._window(deadline), retry)

    def _await(
        self, ch: _Channel, seq: int, rid: int, model: str, deadline: int, window: int, retry: bool
    ) -> InferenceResponse:
        """Wait for the response to ``seq``: spin up to ``window`` ns, then block (spec section 7)."""
        conn = ch.conn
        u32, u64 = conn.ctl.u32, conn.ctl.u64
        t0 = _clock()
        check = functools.partial(_still_awaited, conn)
        try:
            done = wait_seq(u64, ch.sseq, seq, window, u32, ch.sleeping_word, ch.sem, deadline, check)
        except ServerUnavailable:
            if self._pool.closed or conn.ctl.faulted() or not conn.dead():
                raise
            # Dead (10.3): its words are final. server_seq first (an answer that came just
            # before the death is an answer), then server_busy: dispatch stores 1 before it
            # decodes, so 0 means no handler saw the request, and it may be sent again (_gone.again)
            if u64[ch.sseq] != seq:
                if u32[(ch.base + _C.SERVER_BUSY) // 4]:  # its handler may have run it: never again
                    raise ServerUnavailable(conn.gone()) from None
                raise _GoneBeforeDispatch(conn.gone()) from None
            if conn.client_closed:  # close() meanwhile (its channels given back): not read
                raise ServerUnavailable(conn.gone()) from None
            done = True  # an answer (a drop by another thread's call, the server dead, left it)
        if window:
            self._spin.record(window, _clock() - t0)
        if not done:
            raise DeadlineExceeded(
                f"no response from {self.name!r} before the deadline", model=model, request_id=rid
            )
        return self._response(ch, rid, model, deadline, retry)

    def _response(self, ch: _Channel, rid: int, model: str, deadline: int, retry: bool) -> InferenceResponse:
        """Decode and check the response in the channel's response area."""
        if ch.conn.client_closed:  # close() in another thread gave the channel back; the server's
            ch.conn.check()  # reclaim (server_seq = client_seq) ended the wait, not an answer
        assert ch.reader is not None
        dec = ch.reader.read()
        if dec.request_id != rid:
            raise BadChecksum(
                f"response carries request id {dec.request_id}, not {rid}", model=model, request_id=rid
            )
        if dec.status:
            if dec.status == _TOO_LARGE and dec.required_bytes > ch.resp_cap:
                if dec.required_bytes > self.max_response_bytes:  # the area is left as it is
                    raise TooLarge(
                        f"the response needs {dec.required_bytes} bytes, more than this client's "
                        f"max_response_bytes ({self.max_response_bytes}): connect with a larger "
                        "max_response_bytes to take it",
                        model=model,
                        request_id=rid,
                    )
                if retry:
                    ch.attach(ch.req_cap, _pages(dec.required_bytes))
                    return self._exchange(ch, rid, model, deadline, retry=False)
            raise error_for_code(dec.status, dec.text, model=model, request_id=rid)
        if ch.reader.cuda and not ch.cuda_ok:  # spec 15.2: only a request with FDN_FLAG_CUDA_IPC
            name = next(n for n, v in dec.outputs.items() if not isinstance(v, np.ndarray))  # a CudaIpcRef
            raise InternalError(
                f"output {name!r} came as a CUDA_IPC descriptor, which this client did not ask for",
                model=model,
                request_id=rid,
            )
        outputs: Mapping[str, np.ndarray] = dec.outputs
        if self.copy_outputs:
            outputs = {k: v.copy() for k, v in outputs.items()}
        params: dict[str, Any] = dec.params
        if dec.text:
            params = {**params, "__text__": dec.text}
        return InferenceResponse(rid, dec.model, outputs, version=dec.version, parameters=params)

    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        return control(self, L.MessageKind.METADATA_REQUEST, model, timeout)

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return control(self, L.MessageKind.STATS_REQUEST, "", timeout)

    def loan(
        self,
        model: str,
        inputs: Mapping[str, TensorSpecLike],
        *,
        timeout: float | None = None,
        version: str = "",
        outputs: Sequence[str] = (),
        parameters: Mapping[str, Any] | None = None,
    ) -> Loan:
        """Writable numpy views on the request area for ``inputs`` (name -> (dtype, shape)); write
        them, then ``loan.infer()``. Use as a context manager; the views are invalid after it.
        ``version``, ``outputs`` and ``parameters`` are those of every request the loan sends.
        If the only channel to be had is still with the server (a call that passed its deadline),
        this waits for it up to ``timeout`` and ``connect_timeout``, then ``DeadlineExceeded``; a
        server found gone meanwhile is left for one restarted under its name (``_gone.again``)."""
        return lend(self, model, inputs, timeout, version, outputs, parameters)

    def counters(self) -> ClientCounters:
        """What this client counted since it was made (spec 10.5): ``reconnects``, connections
        made after its first (its server died, stopped or was restarted), and ``resends``, calls
        sent once more on such a connection because no handler had seen their request. A
        snapshot, read from any thread without taking a channel or waiting for a call; a closed
        client keeps its counts."""
        pool = self._pool
        # resends first: each follows its call's reconnect, so a move between the two reads shows
        # as a reconnect not yet resent, never as a resend with no reconnect (0, 1)
        resends = pool.resends
        return ClientCounters(reconnects=pool.reconnects, resends=resends)

    # --- close ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._finalizer.detach()  # closed: nothing left for a finalizer to give back, or warn of
        self._cuda.close()
        self._pool.close()


def _still_awaited(conn: _Connection) -> None:
    """Between the slices of a wait for an answer: raise unless the server lives (``check``)
    and the answer is still awaited. An ``ainfer`` whose task was cancelled stops waiting
    (raising ``concurrent.futures.CancelledError``, which nobody reads), as a call past its
    deadline does: the thread is free within a slice (the loop's executor's, which
    ``asyncio.run`` joins on its way out), and the channel goes back to the pool, the next call's once the
    server has answered the abandoned request."""
    conn.check()
    if call_abandoned():
        raise CancelledError(f"the call to {conn.name!r} was abandoned while it waited for the answer")
