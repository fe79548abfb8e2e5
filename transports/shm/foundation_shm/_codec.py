"""Encoding of shm messages (requests, responses) in place over a request or response area.

The message types and limits are defined here. Encoders write the header, body and descriptors in
place; tensor data must already sit at its offsets (``layout`` computes them), so a tensor is
copied at most once and a loan not at all. The decoders, which check every field, are in
``_decoders``; the hot path's helpers (``views``, ``fill``, ``write_header``) are at the end.
"""

from __future__ import annotations

import json
import math
import operator
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from foundation_ml import DataType
from foundation_ml.errors import InvalidInput, TooLarge

from ._accel import hot
from ._layout import (
    BODY_SIZE,
    CRC_OFFSET,
    DESC,
    DESC_SIZE,
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
    "cut_message",
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
_U32 = struct.Struct("<I")
_fixed_cache: dict[tuple[str, int], bytes] = {}
_ZERO_HANDLE = bytes(64)
_MAX_TEXT = 1 << 20  # error messages and JSON documents: at most 1 MiB
_MAX_PARAMS = 1 << 20  # a request's parameters JSON: at most 1 MiB (spec 8 step 3, 11), else TOO_LARGE
_MAX_PARAM_INT = (1 << 53) - 1  # a parameter integer: within +-(2^53 - 1), exact in every double (8 step 10)
_SURROGATE = re.compile("[\ud800-\udfff]")  # only an escape puts one in a str decoded from UTF-8


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
    if type(text) is not str:  # a name of another type (5, None, a list) is no UTF-8 text
        raise InvalidInput(f"{what} {text!r} must be a string of at most {size - 1} UTF-8 bytes")
    raw = _fixed_cache.get((text, size))
    if raw is not None:
        return raw
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800", argv's escape of a byte not UTF-8)
        raise InvalidInput(f"{what} {text!r} is no UTF-8 text: it holds a lone surrogate") from None
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


def cut_message(message: str, room: int) -> bytes:
    """``message`` as UTF-8 of at most ``room`` bytes (an error's text must fit the response area
    and 1 MiB): whole if it fits, else cut at a character boundary and ended by a note of how
    long it was, so that a reader knows it was cut. Never raises (lone surrogates become "?")."""
    text = message.encode("utf-8", "replace")
    if len(text) <= room:
        return text
    note = f" ... [cut: {len(text)} bytes]".encode()
    head = text[: max(0, room - len(note))].decode("utf-8", "ignore").encode()
    return (head + note)[: max(0, room)]


def text_and_params(parameters: Mapping[str, Any], request_id: int) -> tuple[bytes, bytes]:
    """A response's text (its ``__text__`` parameter: a JSON document or a message) and its other
    parameters as JSON. Text over 1 MiB is ``TooLarge`` here, not a malformed response there."""
    params = dict(parameters)
    text = str(params.pop("__text__", "")).encode()
    if len(text) > _MAX_TEXT:
        raise TooLarge(f"a response text of {len(text)} bytes (at most {_MAX_TEXT})", request_id=request_id)
    return text, encode_params(params)


MAX_REQUEST_ID = (1 << 64) - 1  # the header's u64; 0 means "the client numbers it"


def request_id(value: Any, model: str) -> int:
    """``value`` as a request id the header carries (1..2**64-1), or an ``InvalidInput`` naming it."""
    try:
        rid = -1 if type(value) is bool else operator.index(value)
    except TypeError:
        rid = -1
    if not 0 < rid <= MAX_REQUEST_ID:
        raise InvalidInput(
            f"request id must be an integer 1..2**64-1 (0: the client numbers it), not {value!r}", model=model
        )
    return rid


def sendable_params(params: Mapping[str, Any], rid: int) -> bytes:
    """``params`` encoded, unless over the protocol's 1 MiB (spec 11): refused by the client
    (``TooLarge``) before anything is sent, as the server would refuse it."""
    raw = encode_params(params)
    if len(raw) > _MAX_PARAMS:
        raise TooLarge(f"parameters of {len(raw)} bytes as JSON (at most {_MAX_PARAMS})", request_id=rid)
    return raw


def param_problem(key: Any, value: Any) -> str | None:
    """Why the parameter ``key: value`` is not one the protocol carries (spec 8 step 10), or None:
    names are strings, values strings, booleans, integers within +-(2^53 - 1) or finite floats,
    and no string holds a lone surrogate (only Unicode scalar values are UTF-8)."""
    if not isinstance(key, str):
        return f"has a name of type {type(key).__name__}, not a string"
    if not key.isascii() and _SURROGATE.search(key):
        return "has a name holding a lone surrogate (not a Unicode scalar value)"
    if isinstance(value, str):
        if not value.isascii() and _SURROGATE.search(value):
            return "is a string holding a lone surrogate (not a Unicode scalar value)"
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -_MAX_PARAM_INT <= value <= _MAX_PARAM_INT:
            return None
        return f"is the integer {value}, outside +-(2^53 - 1) (send it as a string)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"is {value}, not a finite number"
    return f"is of type {type(value).__name__}, not a string, number or boolean"


def encode_params(params: Mapping[str, Any]) -> bytes:
    """Parameters as the protocol's JSON; a parameter no decoder would take (spec 8 step 10: a
    nested or null value, NaN or an infinity, an integer beyond +-(2^53 - 1), a lone surrogate,
    a name that is not a string) is ``InvalidInput`` naming it, before anything is sent."""
    if not params:
        return b""
    for key, value in params.items():
        problem = param_problem(key, value)
        if problem is not None:
            raise InvalidInput(f"parameters cannot be sent as JSON: parameter {key!r} {problem}")
    return json.dumps(dict(params), separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


# --- the hot path: re-use what the previous message on the same area already established ----------


def views(area: Any, refs: Sequence[TensorRef]) -> list[np.ndarray]:
    """Numpy views on ``area`` where ``refs`` place their tensors (writable if the area is)."""
    return [
        np.frombuffer(area, ref.dtype.numpy, math.prod(ref.shape), ref.offset).reshape(ref.shape)
        for ref in refs
    ]


def _py_fill(dsts: list[np.ndarray], arrays: Iterable[Any]) -> bool:
    """Copy each array into its view if dtypes (with their marks) and shapes agree; False (nothing
    copied) if not."""
    arrays = list(arrays)
    if len(arrays) != len(dsts) or any(
        type(a) is not np.ndarray
        or a.dtype != d.dtype
        or a.shape != d.shape
        or a.dtype.metadata != d.dtype.metadata  # BF16 and BYTES: uint16 and uint8 with a mark
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
