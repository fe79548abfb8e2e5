"""A shm client's request that repeats its channel's last one, sent and answered in one C call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_ml import InferenceRequest, InferenceResponse

from . import _layout as L
from ._accel import hot
from ._channel import _Channel
from ._client_write import write_full
from ._codec import encode_params
from ._gone import check_before_sending
from ._sync import YIELD_AFTER_NS

if TYPE_CHECKING:
    from ._client import ShmClient

__all__ = ["exchange_repeat"]

_STATE = L.RegionField.STATE // 4
_SERVER_SLEEPING = L.RegionField.SERVER_SLEEPING // 4
_READY = int(L.RegionState.READY)


def exchange_repeat(
    client: ShmClient, ch: _Channel, request: InferenceRequest, rid: int, deadline: int
) -> InferenceResponse:
    """A request that repeats the channel's last one, in one C call (``_hot.exchange``): the
    data copied in, the header sealed, the sequence published, the response awaited by
    spinning and checked against the cached one. What it cannot finish goes the general way."""
    conn = ch.conn
    if conn.ctl.u32[_STATE] != _READY or conn.closing:
        check_before_sending(conn, client._pool.closed)
    _, _, payload, dsts = ch.wval
    seq = ch.seq + 1
    spin = client._spin
    window = client._window(deadline)
    reader = ch.reader
    assert reader is not None
    code = hot.exchange(  # type: ignore[union-attr]
        conn.ctl.buf,
        ch.req,
        ch.resp,
        dsts,
        request.inputs.values(),
        rid,
        payload,
        deadline,
        ch.cseq,
        seq,
        _SERVER_SLEEPING,
        ch.sseq,
        window,
        YIELD_AFTER_NS,
        reader.payload,
    )
    if code == 0:  # answered, and the response repeats the cached one: its views stand
        ch.seq, ch.wdeadline = seq, deadline  # published, whatever follows (_gone._Moved counts it)
        if conn.client_closed:  # no: close() gave the channel back and the server reclaimed it
            conn.check()
        spin.record(window, 0)
        _, model, version, outputs, text, params, _ = reader.last  # type: ignore[misc]
        if client.copy_outputs:
            outputs = {k: v.copy() for k, v in outputs.items()}
        if text:
            params = {**params, "__text__": text}
        return InferenceResponse(rid, model, dict(outputs), version, params)
    if code < 0:  # the inputs' dtypes or shapes changed: nothing was written
        params = encode_params(request.parameters) if request.parameters else b""
        write_full(client, ch, request, params, ch.wkey, rid, deadline)  # type: ignore[arg-type]
        return client._exchange(ch, rid, request.model, deadline, retry=True)
    ch.seq = seq
    ch.wdeadline = deadline
    if code == 3:  # answered; an error, or another shape of response: decode it in full
        spin.record(window, 0)
        return client._response(ch, rid, request.model, deadline, True)
    if code == 1:  # the server sleeps: ring its bell, then spin and block as usual
        conn.bell.release()
        return client._await(ch, seq, rid, request.model, deadline, window, True)
    spin.record(window, window + 1)  # the spin ran out: block
    return client._await(ch, seq, rid, request.model, deadline, 0, True)
