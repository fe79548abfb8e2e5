"""Decoding of shm messages: every field, offset and size of a request or response checked.

Decoders check each field against the area and raise the typed ``InferenceError`` the spec names
for each failure; tensors come back as numpy views on the area (or ``CudaIpcRef`` for CUDA IPC
descriptors, spec 15). The message types and the encoders are in ``_codec``; a message that
repeats the last one on its area is read from cache by ``_readers``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from foundation_ml import DataType
from foundation_ml.errors import (
    BadChecksum,
    BadMagic,
    BadVersion,
    InvalidInput,
    TooLarge,
)

from ._codec import (
    _DATA_CRC,
    _HOST,
    _MAX_PARAMS,
    _MAX_TEXT,
    _RESPONSE,
    DEFAULT_LIMITS,
    DecodedRequest,
    DecodedResponse,
    Limits,
    param_problem,
    request_payload_size,
    response_payload_size,
)
from ._cuda_desc import decode_cuda_ipc_tensor
from ._layout import (
    BODY_SIZE,
    CRC_OFFSET,
    DESC,
    DESC_SIZE,
    HEADER_AND_BODY,
    HEADER_AND_RESP,
    MSG_HEADER_SIZE,
    MSG_MAGIC,
    NAME_SIZE,
    PROTOCOL_VERSION,
    Location,
    MessageKind,
)

__all__ = [
    "LOCATION_DECODERS",
    "decode_host_tensor",
    "decode_request",
    "decode_response",
    "decode_tensor",
]

_REQUEST_KINDS = frozenset(int(k) for k in MessageKind if k != MessageKind.RESPONSE)
_DTYPES = {d.code: (d, d.numpy, d.itemsize) for d in DataType}


def _text(raw: bytes, what: str, request_id: int) -> str:
    """A fixed text field: UTF-8 ended by a NUL within the field (spec section 8)."""
    head, nul, _ = raw.partition(b"\0")
    if not nul:
        raise InvalidInput(
            f"{what} has no NUL within its {len(raw)} bytes (at most {len(raw) - 1} bytes of text)",
            request_id=request_id,
        )
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not valid UTF-8", request_id=request_id) from None


_MAX_NBYTES = (1 << 63) - 1  # numpy's (every array library's) sizes are signed 64-bit


def _too_large(name: str, shape: Sequence[int], nbytes: int, request_id: int) -> InvalidInput:
    big = max(shape)
    why = (
        f"a dimension of {big} is beyond 2^63 - 1"
        if big > _MAX_NBYTES
        else f"shape {list(shape)} spans {nbytes} bytes over its nonzero dimensions, beyond 2^63 - 1"
    )
    return InvalidInput(f"tensor {name!r}: {why}", request_id=request_id)


def decode_host_tensor(fields: tuple[Any, ...], area: Any, area_size: int, request_id: int) -> np.ndarray:
    """A ``location == HOST`` descriptor: a numpy view on the area, bounds-checked."""
    name = fields[0]
    ndim = fields[2]
    entry = _DTYPES.get(fields[1])
    if entry is None:
        raise InvalidInput(
            f"tensor {name!r}: unknown dtype code {fields[1]} (known: 1..14)", request_id=request_id
        )
    _, npdtype, itemsize = entry
    shape = fields[3 : 3 + ndim]
    offset, size = fields[11], fields[12]
    count = math.prod(shape)
    nbytes = count * itemsize
    # spec 8 step 7: itemsize x the nonzero dimensions <= 2^63 - 1, also when a 0 makes the
    # product 0 (then the overflow of the 64-bit product, taken dimension by dimension, is caught
    # too, as the C, Go and Rust decoders catch it)
    spans = nbytes if count else math.prod([d for d in shape if d]) * itemsize
    if spans > _MAX_NBYTES:
        raise _too_large(name, shape, spans, request_id)
    if nbytes != size:
        raise InvalidInput(
            f"tensor {name!r}: data_size {size} != {count} elements x {itemsize} bytes", request_id=request_id
        )
    if offset + size > area_size or offset < MSG_HEADER_SIZE:
        raise InvalidInput(
            f"tensor {name!r}: bytes [{offset}, {offset + size}) outside the area of {area_size} bytes",
            request_id=request_id,
        )
    if offset % itemsize:
        raise InvalidInput(
            f"tensor {name!r}: data_offset {offset} not aligned to {itemsize}", request_id=request_id
        )
    try:
        return np.frombuffer(area, npdtype, count, offset).reshape(shape)
    except ValueError as exc:  # the checks above leave numpy nothing to refuse; if it does, say so
        raise InvalidInput(f"tensor {name!r}: {exc}", request_id=request_id) from None


TensorDecoder = Callable[[tuple[Any, ...], Any, int, int], np.ndarray]
# The one place descriptors are decoded: the CUDA IPC variant registers its location here.
LOCATION_DECODERS: dict[int, TensorDecoder] = {_HOST: decode_host_tensor}
LOCATION_DECODERS[int(Location.CUDA_IPC)] = decode_cuda_ipc_tensor  # refs, no GPU (spec 15)


def decode_tensor(
    area: Any, at: int, area_size: int, limits: Limits, request_id: int, msg: Any = None
) -> tuple[str, np.ndarray]:
    """Decode the descriptor at ``at`` and return (name, array) through its location's decoder.
    ``msg``: a copy of the message to read the descriptor from (the data stays in ``area``)."""
    fields = DESC.unpack_from(area if msg is None else msg, at)
    name = _text(fields[0], "tensor name", request_id)
    ndim = fields[2]
    if ndim > limits.max_ndim:
        raise InvalidInput(f"tensor {name!r}: ndim {ndim} > {limits.max_ndim}", request_id=request_id)
    decoder = LOCATION_DECODERS.get(fields[13])
    if decoder is None:
        raise InvalidInput(f"tensor {name!r}: unsupported location {fields[13]}", request_id=request_id)
    return name, decoder((name, *fields[1:]), area, area_size, request_id)


def _check_header(area: Any, area_size: int, magic: int, version: int, payload: int, rid: int) -> None:
    if magic != MSG_MAGIC:
        raise BadMagic(f"bad magic 0x{magic:08X} (want 0x{MSG_MAGIC:08X})", request_id=rid)
    if version != PROTOCOL_VERSION:
        raise BadVersion(f"protocol version {version} (this side speaks {PROTOCOL_VERSION})", request_id=rid)
    if payload < BODY_SIZE or MSG_HEADER_SIZE + payload > area_size:
        raise InvalidInput(f"payload_size {payload} outside the area of {area_size} bytes", request_id=rid)


def _check_crc(area: Any, payload: int, crc: int, rid: int, data: Sequence[np.ndarray] = ()) -> None:
    mv = memoryview(area)
    got = zlib.crc32(mv[MSG_HEADER_SIZE : MSG_HEADER_SIZE + payload], zlib.crc32(mv[:CRC_OFFSET]))
    for array in data:
        if isinstance(array, np.ndarray):  # DATA_CRC covers HOST data only, not CudaIpcRef (spec 15.2)
            got = zlib.crc32(array.reshape(-1).view(np.uint8).data, got)
    if got != crc:
        raise BadChecksum(f"CRC32 0x{got:08X} != 0x{crc:08X} in the header", request_id=rid)


class _Refused(ValueError):
    """Parameters that are JSON but not the protocol's (spec 8 step 10); the message says why."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _param_int(text: str) -> int:
    """An integer literal; one of more than 17 characters (a sign and 16 digits) is beyond
    +-(2^53 - 1) whatever its digits, and is refused before int() builds it."""
    if len(text) > 17:
        raise _Refused(f"an integer of {len(text)} characters is outside +-(2^53 - 1)")
    return int(text)


def _param_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each object's members: no name twice, every value one the protocol carries (the top
    object's; a nested one is refused where it is a value)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"params name {key!r} twice")
            seen.add(key)
    for key, v in pairs:
        problem = param_problem(key, v)
        if problem is not None:
            raise _Refused(f"params: {key!r} {problem}")
    return value


# one decoder for every message (json.loads would build one per call): strictly JSON (no NaN),
# I-JSON through the hooks (spec 8 step 10); a BOM is no JSON whitespace, so it is refused
_PARAMS_JSON = json.JSONDecoder(
    parse_constant=_no_constant, parse_int=_param_int, object_pairs_hook=_param_pairs
)


def _params(raw: bytes, rid: int) -> dict[str, Any]:
    if not raw:
        return {}
    try:  # strictly UTF-8 (json.loads would sniff UTF-16 and take a BOM)
        value = _PARAMS_JSON.decode(raw.decode("utf-8"))
    except _Refused as exc:
        raise InvalidInput(str(exc), request_id=rid) from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("params are not valid UTF-8 JSON", request_id=rid) from None
    except RecursionError:  # a value is never an array or object: any nesting is refused anyway
        raise InvalidInput(
            "params nest too deeply (values are strings, numbers and booleans)", request_id=rid
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput("params must be a JSON object of strings, numbers and booleans", request_id=rid)
    return value


def decode_request(
    area: Any, area_size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> DecodedRequest:
    """Decode and check the request at offset 0 of ``area``; raises the typed error on any fault."""
    return decode_request_copy(area, area_size, limits)[0]


def decode_request_copy(
    area: Any, area_size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[DecodedRequest, bytes]:
    """``decode_request``, and the header and payload bytes it decoded: a copy, read once (spec
    13: the peer may rewrite the area meanwhile; every field is checked and used from the copy,
    only the tensor data is read in the area, at offsets the copy gives)."""
    size = len(area) if area_size is None else area_size
    if size < MSG_HEADER_SIZE + BODY_SIZE:
        raise InvalidInput(f"area of {size} bytes is smaller than a request header")
    head = bytes(area[: MSG_HEADER_SIZE + BODY_SIZE])
    (
        magic,
        version,
        kind,
        rid,
        payload,
        flags,
        _,
        crc,
        model,
        mversion,
        deadline,
        n_in,
        n_out,
        n_params,
        _,
        _,
    ) = HEADER_AND_BODY.unpack_from(head, 0)
    _check_header(area, size, magic, version, payload, rid)
    if n_params > _MAX_PARAMS:  # before the CRC and the copy read those bytes (spec 8 step 3)
        raise TooLarge(f"params_size {n_params} bytes (at most {_MAX_PARAMS})", request_id=rid)
    if payload != request_payload_size(n_in, n_out, n_params):
        raise InvalidInput(f"payload_size {payload} does not match the counts in the body", request_id=rid)
    msg = head + bytes(area[MSG_HEADER_SIZE + BODY_SIZE : MSG_HEADER_SIZE + payload])
    if not flags & _DATA_CRC:
        _check_crc(msg, payload, crc, rid)
    if kind not in _REQUEST_KINDS:
        raise InvalidInput(f"message kind {kind} is not a request", request_id=rid)
    if n_in > limits.max_tensors or n_out > limits.max_tensors:
        raise TooLarge(
            f"{n_in} inputs / {n_out} outputs requested (at most {limits.max_tensors})", request_id=rid
        )
    model_name = _text(model, "model name", rid)
    at = MSG_HEADER_SIZE + BODY_SIZE
    inputs: dict[str, np.ndarray] = {}
    total = 0
    for _ in range(n_in):
        name, array = decode_tensor(area, at, size, limits, rid, msg)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice", model=model_name, request_id=rid)
        inputs[name] = array
        total += array.nbytes
        at += DESC_SIZE
    if total > limits.max_bytes:
        raise TooLarge(
            f"{total} bytes of inputs (at most {limits.max_bytes})", model=model_name, request_id=rid
        )
    if flags & _DATA_CRC:
        _check_crc(msg, payload, crc, rid, list(inputs.values()))
    outputs = tuple(
        _text(msg[at + i * NAME_SIZE : at + (i + 1) * NAME_SIZE], "output name", rid) for i in range(n_out)
    )
    at += NAME_SIZE * n_out
    dec = DecodedRequest(
        kind,
        rid,
        flags,
        model_name,
        _text(mversion, "model version", rid),
        deadline,
        inputs,
        outputs,
        _params(msg[at : at + n_params], rid),
    )
    return dec, msg


def decode_response(
    area: Any, area_size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> DecodedResponse:
    """Decode and check the response at offset 0 of ``area``; outputs are views on the area."""
    return decode_response_copy(area, area_size, limits)[0]


def decode_response_copy(
    area: Any, area_size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[DecodedResponse, bytes]:
    """``decode_response``, and the header and payload bytes it decoded: a copy, read once, as
    ``decode_request_copy`` reads a request (spec 13: a server may rewrite the area meanwhile)."""
    size = len(area) if area_size is None else area_size
    if size < MSG_HEADER_SIZE + BODY_SIZE:
        raise InvalidInput(f"area of {size} bytes is smaller than a response header")
    head = bytes(area[: MSG_HEADER_SIZE + BODY_SIZE])
    (
        magic,
        version,
        kind,
        rid,
        payload,
        flags,
        _,
        crc,
        status,
        n_out,
        n_text,
        n_params,
        required,
        model,
        mversion,
        _,
    ) = HEADER_AND_RESP.unpack_from(head, 0)
    _check_header(area, size, magic, version, payload, rid)
    if payload != response_payload_size(n_out, n_text, n_params):
        raise InvalidInput(f"payload_size {payload} does not match the counts in the body", request_id=rid)
    if n_text > _MAX_TEXT:  # spec 11: an error message or document is at most 1 MiB
        raise InvalidInput(f"text_size {n_text} bytes (at most {_MAX_TEXT})", request_id=rid)
    with memoryview(area) as mv:  # one copy of the payload, however long its text
        msg = b"".join((head, mv[MSG_HEADER_SIZE + BODY_SIZE : MSG_HEADER_SIZE + payload]))
    if not flags & _DATA_CRC:
        _check_crc(msg, payload, crc, rid)
    if kind != _RESPONSE:
        raise InvalidInput(f"message kind {kind} is not a response", request_id=rid)
    if n_out > limits.max_tensors:
        raise TooLarge(f"{n_out} outputs (at most {limits.max_tensors})", request_id=rid)
    at = MSG_HEADER_SIZE + BODY_SIZE
    outputs: dict[str, np.ndarray] = {}
    for _ in range(n_out):
        name, array = decode_tensor(area, at, size, limits, rid, msg)
        if name in outputs:
            raise InvalidInput(f"output {name!r} appears twice", request_id=rid)
        outputs[name] = array
        at += DESC_SIZE
    if flags & _DATA_CRC:
        _check_crc(msg, payload, crc, rid, list(outputs.values()))
    with memoryview(msg) as mv:  # decoded where it lies: a 1 MiB message is not copied again
        raw = mv[at : at + n_text]
        try:
            text = str(raw, "utf-8")
        except UnicodeDecodeError:
            text = str(raw, "utf-8", "replace")
        raw.release()
    at += n_text
    dec = DecodedResponse(
        rid,
        flags,
        status,
        _text(model, "model name", rid),
        _text(mversion, "model version", rid),
        outputs,
        text,
        _params(msg[at : at + n_params], rid),
        required,
    )
    return dec, msg
