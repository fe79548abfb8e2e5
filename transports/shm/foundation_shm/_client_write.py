"""Writing a shm client's request into its channel's request area: grown to hold it (``ensure``),
written whole (``write``: a loan's, a control call's), or, for ``infer``, laid out from its inputs
and cached on the channel so that a request repeating it writes only its data and header
(``write_full``; ``ShmClient._send`` writes those repeats)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType, InferenceRequest
from foundation_ml.errors import InvalidInput, TooLarge

from . import _layout as L
from ._channel import _Channel, _pages
from ._codec import TensorRef, layout, request_payload_size, views, write_request

if TYPE_CHECKING:
    from ._client import ShmClient

__all__ = ["ensure", "write", "write_full"]


def ensure(client: ShmClient, ch: _Channel, end: int) -> None:
    """Grow the channel's areas to hold a request of ``end`` bytes (and a response as big, up
    to ``client.max_response_bytes``)."""
    if end > ch.req_cap:
        if end - L.MSG_HEADER_SIZE > ch.conn.max_bytes + (1 << 20):
            raise TooLarge(f"a request of {end} bytes exceeds the server's {ch.conn.max_bytes}")
        ch.used = 0
        ch.attach(_pages(end), max(ch.resp_cap, min(_pages(end), _pages(client.max_response_bytes))))


def write_full(
    client: ShmClient,
    ch: _Channel,
    request: InferenceRequest,
    params: bytes,
    key: tuple[Any, ...],
    rid: int,
    deadline: int,
) -> None:
    """Write ``request`` (with its encoded ``params``) whole, as request ``rid``, and cache its
    layout on the channel under ``key`` for the requests that repeat it."""
    inputs = request.inputs
    arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in inputs.values()]
    try:
        specs = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in zip(inputs, arrays, strict=True)]
    except ValueError:
        raise _no_datatype(request, arrays, rid) from None
    refs, end = layout(specs, request_payload_size(len(specs), len(request.outputs), len(params)))
    ensure(client, ch, end)
    dsts = views(ch.req, refs)
    for dst, a in zip(dsts, arrays, strict=True):
        dst[...] = a
    payload = write(
        client, ch, refs, end, rid, request.model, request.version, deadline, request.outputs, params
    )
    ch.wkey, ch.wval, ch.wdeadline = key, (refs, end, payload, dsts), deadline


def write(
    client: ShmClient,
    ch: _Channel,
    refs: Sequence[TensorRef],
    end: int,
    rid: int,
    model: str,
    version: str,
    deadline: int,
    outputs: Sequence[str] = (),
    params: bytes = b"",
    kind: int = L.MessageKind.INFER_REQUEST,
) -> int:
    """Write a request of ``end`` bytes, its tensors at ``refs`` (their data not written), with
    ``client``'s flags; its payload size. The channel's cached layout is dropped."""
    ch.wkey = None
    payload = write_request(
        ch.req,
        request_id=rid,
        model=model,
        inputs=refs,
        kind=kind,
        version=version,
        deadline_ns=deadline,
        outputs=outputs,
        params=params,
        flags=client.flags,
    )
    ch.used = end
    return payload


def _no_datatype(request: InferenceRequest, arrays: list[np.ndarray], rid: int) -> InvalidInput:
    """The error for the first input whose numpy dtype the protocol cannot carry, naming it."""
    for name, a in zip(request.inputs, arrays, strict=True):
        try:
            DataType.from_numpy(a.dtype)
        except ValueError as exc:
            carried = ", ".join(str(d.numpy) for d in DataType if d not in (DataType.BF16, DataType.BYTES))
            return InvalidInput(
                f"input {name}: {exc} (carried: {carried}; BF16 and BYTES as uint16 bit patterns "
                "and uint8 viewed as DataType.BF16.numpy and DataType.BYTES.numpy)",
                model=request.model,
                request_id=rid,
            )
    raise AssertionError("every input has a datatype")  # pragma: no cover - called on a failure only
