"""Encoding and decoding of shm messages (requests, responses) over a request or response area.

Encoders write the header, body and descriptors in place; tensor data must already sit at its
offsets (``layout`` computes them), so a tensor is copied at most once and a loan not at all.
Decoders check every field and every offset and size against the area, and raise the typed
``InferenceError`` the spec names for each failure; inputs come back as numpy views on the area.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from foundation_ml import DataType
from foundation_ml.errors import (
    BadChecksum,
    BadMagic,
    BadVersion,
    InvalidInput,
    TooLarge,
)

from ._accel import hot
from ._cuda_desc import decode_cuda_ipc_tensor
from ._layout import (
    BODY_SIZE,
    CRC_OFFSET,
    DESC,
    DESC_SIZE,
    HEADER_AND_BODY,
    HEADER_AND_RESP,
    MAX_NDIM,
    MSG_HEADER,
    MSG_HEADER_SIZE,
    MSG_MAGIC,
    NAME_SIZE,
    PROTOCOL_VERSION,
    REQ_BODY,
    RESP_BODY,
    VERSION_SIZE,
    Location,
    MessageFlag,
    MessageKind,
    align,
)

__all__ = [
    "DecodedRequest",
    "DecodedResponse",
    "Limits",
    "TensorRef",
    "decode_request",
    "decode_response",
    "decode_tensor",
    "fill",
    "layout",
    "request_payload_size",
    "response_payload_size",
    "write_request",
    "write_response",
]

_EMPTY_SHAPE = (0,) * MAX_NDIM
# Plain ints on the hot path: IntEnum/IntFlag member access and arithmetic cost ~1 µs each here.
_DATA_CRC = int(MessageFlag.DATA_CRC)
_HOST = int(Location.HOST)
_RESPONSE = int(MessageKind.RESPONSE)
_REQUEST_KINDS = frozenset(int(k) for k in MessageKind if k != MessageKind.RESPONSE)
_U32 = struct.Struct("<I")
_fixed_cache: dict[tuple[str, int], bytes] = {}
_ZERO_HANDLE = bytes(64)
_MAX_TEXT = 1 << 20  # error messages and JSON documents: at most 1 MiB


class Limits(NamedTuple):
    """What a decoder accepts (the server publishes its own in the region header)."""

    max_tensors: int = 64
    max_bytes: int = 1 << 32
    max_ndim: int = MAX_NDIM


DEFAULT_LIMITS = Limits()


class TensorRef(NamedTuple):
    """One tensor as the encoder sees it: where its bytes lie in the area."""

    name: str
    dtype: DataType
    shape: tuple[int, ...]
    offset: int
    size: int


class DecodedRequest(NamedTuple):
    kind: int
    request_id: int
    flags: int
    model: str
    version: str
    deadline_ns: int
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    params: dict[str, Any]


class DecodedResponse(NamedTuple):
    request_id: int
    flags: int
    status: int
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    text: str
    params: dict[str, Any]
    required_bytes: int


# --- sizes and placement ------------------------------------------------------------------------


def request_payload_size(n_inputs: int, n_outputs: int, params_size: int) -> int:
    return BODY_SIZE + DESC_SIZE * n_inputs + NAME_SIZE * n_outputs + params_size


def response_payload_size(n_outputs: int, text_size: int, params_size: int) -> int:
    return BODY_SIZE + DESC_SIZE * n_outputs + text_size + params_size


def layout(
    specs: Sequence[tuple[str, DataType, tuple[int, ...]]], payload_size: int
) -> tuple[list[TensorRef], int]:
    """Place tensors after the header and payload, each at a multiple of 64; returns the refs and
    the end of the last tensor (the bytes the area needs)."""
    offset = align(MSG_HEADER_SIZE + payload_size)
    refs = []
    for name, dtype, shape in specs:
        size = math.prod(shape) * dtype.itemsize
        refs.append(TensorRef(name, dtype, shape, offset, size))
        offset = align(offset + size)
    return refs, offset


# --- encoding -----------------------------------------------------------------------------------


def _fixed(text: str, size: int, what: str) -> bytes:
    raw = _fixed_cache.get((text, size))
    if raw is not None:
        return raw
    raw = text.encode("utf-8")
    if len(raw) >= size or b"\0" in raw:
        raise InvalidInput(f"{what} {text!r} must be at most {size - 1} UTF-8 bytes without NUL")
    if len(_fixed_cache) < 4096:  # names repeat: model and tensor names
        _fixed_cache[text, size] = raw
    return raw


def _write_descs(buf: Any, at: int, refs: Sequence[TensorRef]) -> int:
    for ref in refs:
        if len(ref.shape) > MAX_NDIM:
            raise InvalidInput(f"tensor {ref.name!r} has {len(ref.shape)} dimensions (at most {MAX_NDIM})")
        shape = tuple(ref.shape) + _EMPTY_SHAPE[len(ref.shape) :]
        DESC.pack_into(
            buf,
            at,
            _fixed(ref.name, NAME_SIZE, "tensor name"),
            ref.dtype.code,
            len(ref.shape),
            *shape,
            ref.offset,
            ref.size,
            _HOST,
            0,
            0,
            0,
            _ZERO_HANDLE,
            0,
        )
        at += DESC_SIZE
    return at


def _seal(buf: Any, payload_size: int, flags: int, refs: Sequence[TensorRef]) -> None:
    mv = buf if type(buf) is memoryview else memoryview(buf)
    crc = zlib.crc32(mv[MSG_HEADER_SIZE : MSG_HEADER_SIZE + payload_size], zlib.crc32(mv[:CRC_OFFSET]))
    if flags & _DATA_CRC:
        for ref in refs:
            crc = zlib.crc32(mv[ref.offset : ref.offset + ref.size], crc)
    _U32.pack_into(buf, CRC_OFFSET, crc)


def write_request(
    buf: Any,
    *,
    request_id: int,
    model: str,
    inputs: Sequence[TensorRef] = (),
    kind: int = 1,  # MessageKind.INFER_REQUEST
    version: str = "",
    deadline_ns: int = 0,
    outputs: Sequence[str] = (),
    params: bytes = b"",
    flags: int = 0,
) -> int:
    """Write a request's header, body and descriptors (data already in place); returns payload size."""
    payload = request_payload_size(len(inputs), len(outputs), len(params))
    MSG_HEADER.pack_into(buf, 0, MSG_MAGIC, PROTOCOL_VERSION, kind, request_id, payload, flags, 0, 0)
    REQ_BODY.pack_into(
        buf,
        MSG_HEADER_SIZE,
        _fixed(model, NAME_SIZE, "model name"),
        _fixed(version, VERSION_SIZE, "model version"),
        deadline_ns,
        len(inputs),
        len(outputs),
        len(params),
        0,
        0,
    )
    at = _write_descs(buf, MSG_HEADER_SIZE + BODY_SIZE, inputs)
    for name in outputs:
        raw = _fixed(name, NAME_SIZE, "output name")
        buf[at : at + NAME_SIZE] = raw + bytes(NAME_SIZE - len(raw))
        at += NAME_SIZE
    buf[at : at + len(params)] = params
    _seal(buf, payload, flags, inputs)
    return payload


def write_response(
    buf: Any,
    *,
    request_id: int,
    status: int = 0,
    model: str = "",
    version: str = "",
    outputs: Sequence[TensorRef] = (),
    text: bytes = b"",
    params: bytes = b"",
    required_bytes: int = 0,
    flags: int = 0,
) -> int:
    """Write a response's header, body and descriptors (data already in place); returns payload size."""
    payload = response_payload_size(len(outputs), len(text), len(params))
    MSG_HEADER.pack_into(buf, 0, MSG_MAGIC, PROTOCOL_VERSION, _RESPONSE, request_id, payload, flags, 0, 0)
    RESP_BODY.pack_into(
        buf,
        MSG_HEADER_SIZE,
        status,
        len(outputs),
        len(text),
        len(params),
        required_bytes,
        _fixed(model, NAME_SIZE, "model name"),
        _fixed(version, VERSION_SIZE, "model version"),
        0,
    )
    at = _write_descs(buf, MSG_HEADER_SIZE + BODY_SIZE, outputs)
    buf[at : at + len(text)] = text
    at += len(text)
    buf[at : at + len(params)] = params
    _seal(buf, payload, flags, outputs)
    return payload


# --- decoding -----------------------------------------------------------------------------------

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


_DIM_LIMIT = 1 << 63  # numpy's (and every array library's) largest dimension is 2^63 - 1


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
    if any(d >= _DIM_LIMIT for d in shape):  # the C, Rust and Go decoders refuse these as well
        raise InvalidInput(
            f"tensor {name!r}: a dimension of {max(shape)} is beyond 2^63 - 1", request_id=request_id
        )
    count = math.prod(shape)
    if count * itemsize != size:
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
    return np.frombuffer(area, npdtype, count, offset).reshape(shape)


TensorDecoder = Callable[[tuple[Any, ...], Any, int, int], np.ndarray]
# The one place descriptors are decoded: the CUDA IPC variant registers its location here.
LOCATION_DECODERS: dict[int, TensorDecoder] = {_HOST: decode_host_tensor}
LOCATION_DECODERS[int(Location.CUDA_IPC)] = decode_cuda_ipc_tensor  # refs, no GPU (spec 15)


def decode_tensor(
    area: Any, at: int, area_size: int, limits: Limits, request_id: int
) -> tuple[str, np.ndarray]:
    """Decode the descriptor at ``at`` and return (name, array) through its location's decoder."""
    fields = DESC.unpack_from(area, at)
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _params(raw: bytes, rid: int) -> dict[str, Any]:
    if not raw:
        return {}
    try:  # strictly UTF-8 (json.loads would sniff UTF-16 and take a BOM), strictly JSON (no NaN)
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("params are not valid UTF-8 JSON", request_id=rid) from None
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) and not isinstance(v, dict) for v in value.values()
    ):
        raise InvalidInput("params must be a JSON object of strings, numbers and booleans", request_id=rid)
    return value


def decode_request(
    area: Any, area_size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> DecodedRequest:
    """Decode and check the request at offset 0 of ``area``; raises the typed error on any fault."""
    size = len(area) if area_size is None else area_size
    if size < MSG_HEADER_SIZE + BODY_SIZE:
        raise InvalidInput(f"area of {size} bytes is smaller than a request header")
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
    ) = HEADER_AND_BODY.unpack_from(area, 0)
    _check_header(area, size, magic, version, payload, rid)
    if payload != request_payload_size(n_in, n_out, n_params):
        raise InvalidInput(f"payload_size {payload} does not match the counts in the body", request_id=rid)
    if not flags & _DATA_CRC:
        _check_crc(area, payload, crc, rid)
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
        name, array = decode_tensor(area, at, size, limits, rid)
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
        _check_crc(area, payload, crc, rid, list(inputs.values()))
    outputs = tuple(
        _text(bytes(area[at + i * NAME_SIZE : at + (i + 1) * NAME_SIZE]), "output name", rid)
        for i in range(n_out)
    )
    at += NAME_SIZE * n_out
    return DecodedRequest(
        kind,
        rid,
        flags,
        model_name,
        _text(mversion, "model version", rid),
        deadline,
        inputs,
        outputs,
        _params(bytes(area[at : at + n_params]), rid),
    )


def decode_response(
    area: Any, area_size: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> DecodedResponse:
    """Decode and check the response at offset 0 of ``area``; outputs are views on the area."""
    size = len(area) if area_size is None else area_size
    if size < MSG_HEADER_SIZE + BODY_SIZE:
        raise InvalidInput(f"area of {size} bytes is smaller than a response header")
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
    ) = HEADER_AND_RESP.unpack_from(area, 0)
    _check_header(area, size, magic, version, payload, rid)
    if payload != response_payload_size(n_out, n_text, n_params) or n_text > _MAX_TEXT:
        raise InvalidInput(f"payload_size {payload} does not match the counts in the body", request_id=rid)
    if not flags & _DATA_CRC:
        _check_crc(area, payload, crc, rid)
    if kind != _RESPONSE:
        raise InvalidInput(f"message kind {kind} is not a response", request_id=rid)
    if n_out > limits.max_tensors:
        raise TooLarge(f"{n_out} outputs (at most {limits.max_tensors})", request_id=rid)
    at = MSG_HEADER_SIZE + BODY_SIZE
    outputs: dict[str, np.ndarray] = {}
    for _ in range(n_out):
        name, array = decode_tensor(area, at, size, limits, rid)
        if name in outputs:
            raise InvalidInput(f"output {name!r} appears twice", request_id=rid)
        outputs[name] = array
        at += DESC_SIZE
    if flags & _DATA_CRC:
        _check_crc(area, payload, crc, rid, list(outputs.values()))
    try:
        text = bytes(area[at : at + n_text]).decode("utf-8")
    except UnicodeDecodeError:
        text = bytes(area[at : at + n_text]).decode("utf-8", "replace")
    at += n_text
    return DecodedResponse(
        rid,
        flags,
        status,
        _text(model, "model name", rid),
        _text(mversion, "model version", rid),
        outputs,
        text,
        _params(bytes(area[at : at + n_params]), rid),
        required,
    )


def text_and_params(parameters: Mapping[str, Any], request_id: int) -> tuple[bytes, bytes]:
    """A response's text (its ``__text__`` parameter: a JSON document or a message) and its other
    parameters as JSON. Text over 1 MiB is ``TooLarge`` here, not a malformed response there."""
    params = dict(parameters)
    text = str(params.pop("__text__", "")).encode()
    if len(text) > _MAX_TEXT:
        raise TooLarge(f"a response text of {len(text)} bytes (at most {_MAX_TEXT})", request_id=request_id)
    return text, encode_params(params)


def encode_params(params: Mapping[str, Any]) -> bytes:
    """Parameters as the protocol's JSON; NaN and infinities are not JSON (``InvalidInput``)."""
    if not params:
        return b""
    try:
        return json.dumps(dict(params), separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    except ValueError as exc:
        raise InvalidInput(f"parameters cannot be sent as JSON: {exc}") from None


# --- the hot path: re-use what the previous message on the same area already established ----------


def views(area: Any, refs: Sequence[TensorRef]) -> list[np.ndarray]:
    """Numpy views on ``area`` where ``refs`` place their tensors (writable if the area is)."""
    return [
        np.frombuffer(area, ref.dtype.numpy, math.prod(ref.shape), ref.offset).reshape(ref.shape)
        for ref in refs
    ]


def _py_fill(dsts: list[np.ndarray], arrays: Iterable[Any]) -> bool:
    """Copy each array into its view if dtypes and shapes agree; False (nothing copied) if not."""
    arrays = list(arrays)
    if len(arrays) != len(dsts) or any(
        type(a) is not np.ndarray or a.dtype != d.dtype or a.shape != d.shape
        for d, a in zip(dsts, arrays, strict=False)
    ):
        return False
    for d, a in zip(dsts, arrays, strict=True):
        d[...] = a  # the one copy, into shared memory (strided sources too)
    return True


def _hot_fill(dsts: list[np.ndarray], arrays: Iterable[Any]) -> bool:
    """The C copy for C-contiguous arrays of the same buffer format; what it declines (strided
    sources, a dtype exported under another format letter) the numpy copy takes."""
    return bool(hot.fill(dsts, arrays)) or _py_fill(dsts, arrays)  # type: ignore[union-attr]


fill: Callable[[list[np.ndarray], Iterable[Any]], bool] = _hot_fill if hot is not None else _py_fill


def write_header(
    buf: Any, kind: int, request_id: int, payload: int, flags: int, refs: Sequence[TensorRef]
) -> None:
    """Rewrite only the header (and CRC) of a message whose payload is already in place."""
    if hot is not None and not flags & _DATA_CRC:
        hot.seal(buf, kind, request_id, payload, flags)
        return
    MSG_HEADER.pack_into(buf, 0, MSG_MAGIC, PROTOCOL_VERSION, kind, request_id, payload, flags, 0, 0)
    _seal(buf, payload, flags, refs)
