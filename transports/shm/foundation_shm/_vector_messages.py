"""The test vectors' messages: built with the codec, then broken on purpose for the error cases.

``_request`` and ``_response`` encode a whole area (header at 0, tensors at their offsets); the
other helpers change a field and reseal the CRC, so that the check a vector means to fail is the
one that fails. The cases themselves are in ``_vectors`` and ``_vector_errors``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from foundation_ml import DataType

from ._codec import (
    encode_params,
    layout,
    request_payload_size,
    response_payload_size,
    write_request,
    write_response,
)
from ._cuda_desc import FLAG_CUDA_IPC, U64_MAX, CudaIpcRef, write_mixed_request, write_mixed_response
from ._layout import BODY_SIZE, CRC_OFFSET, MSG_HEADER_SIZE, MessageKind

__all__ = [
    "_DATA0",
    "_DESC0",
    "_HANDLE",
    "_X",
    "Tensors",
    "_corrupt_data",
    "_cuda_message",
    "_cuda_ref",
    "_overflowing_shape",
    "_poke",
    "_raw_params",
    "_raw_response_params",
    "_rename",
    "_request",
    "_reseal",
    "_response",
    "_shaped",
    "_zero_handle",
]

Tensors = dict[str, np.ndarray]


def _request(
    inputs: Tensors,
    *,
    request_id: int,
    model: str = "echo",
    kind: int = MessageKind.INFER_REQUEST,
    version: str = "",
    deadline_ns: int = 0,
    outputs: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
    flags: int = 0,
) -> bytearray:
    raw_params = encode_params(params or {})
    specs = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in inputs.items()]
    refs, end = layout(specs, request_payload_size(len(inputs), len(outputs), len(raw_params)))
    buf = bytearray(end)
    for ref, array in zip(refs, inputs.values(), strict=True):
        buf[ref.offset : ref.offset + ref.size] = array.tobytes()
    write_request(
        buf,
        request_id=request_id,
        model=model,
        inputs=refs,
        kind=kind,
        version=version,
        deadline_ns=deadline_ns,
        outputs=outputs,
        params=raw_params,
        flags=flags,
    )
    return buf


def _response(
    outputs: Tensors, *, request_id: int, status: int = 0, text: str = "", required_bytes: int = 0, **kw: Any
) -> bytearray:
    raw_text = text.encode()
    specs = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in outputs.items()]
    refs, end = layout(specs, response_payload_size(len(outputs), len(raw_text), 0))
    buf = bytearray(end)
    for ref, array in zip(refs, outputs.values(), strict=True):
        buf[ref.offset : ref.offset + ref.size] = array.tobytes()
    write_response(
        buf,
        request_id=request_id,
        status=status,
        outputs=refs,
        text=raw_text,
        required_bytes=required_bytes,
        **kw,
    )
    return buf


def _reseal(buf: bytearray) -> bytearray:
    """Recompute the CRC after a deliberate corruption, so the intended check is the one that fails."""
    import zlib

    payload = struct.unpack_from("<I", buf, 16)[0]
    end = min(len(buf), MSG_HEADER_SIZE + payload)
    crc = zlib.crc32(bytes(buf[MSG_HEADER_SIZE:end]), zlib.crc32(bytes(buf[:CRC_OFFSET])))
    struct.pack_into("<I", buf, CRC_OFFSET, crc)
    return buf


def _poke(buf: bytearray, offset: int, fmt: str, value: int, reseal: bool = True) -> bytearray:
    struct.pack_into(fmt, buf, offset, value)
    return _reseal(buf) if reseal else buf


_X = np.arange(6, dtype=np.float32).reshape(2, 3)
_DESC0 = MSG_HEADER_SIZE + BODY_SIZE  # first descriptor
_DATA0 = 448  # align64(32 + 112 + 256): the data of a request with one input and no params


def _rename(buf: bytearray, desc: int, name: str) -> bytearray:
    """Overwrite the name of the descriptor at ``desc`` and reseal the CRC."""
    raw = name.encode()
    buf[desc : desc + 64] = raw + bytes(64 - len(raw))
    return _reseal(buf)


def _raw_params(raw: bytes, request_id: int) -> bytearray:
    """A request with no tensors whose params are ``raw``, as given (the encoder would refuse
    most broken JSON)."""
    payload = request_payload_size(0, 0, len(raw))
    buf = bytearray(-(-(MSG_HEADER_SIZE + payload) // 64) * 64)
    write_request(buf, request_id=request_id, model="echo", params=raw)
    return buf


def _raw_params_builder(body: bytes, request_id: int) -> Callable[[], bytearray]:
    """A case's builder: the request ``_raw_params(body, request_id)``."""
    return lambda: _raw_params(body, request_id)


def _raw_response_params(raw: bytes, request_id: int) -> bytearray:
    """A response with no outputs whose params are ``raw``, as given."""
    payload = response_payload_size(0, 0, len(raw))
    buf = bytearray(-(-(MSG_HEADER_SIZE + payload) // 64) * 64)
    write_response(buf, request_id=request_id, model="echo", params=raw)
    return buf


def _shaped(dtype: DataType, shape: tuple[int, ...], request_id: int) -> bytearray:
    """A request whose one input is the empty tensor ``shape`` (holding a 0) of ``dtype``,
    ``data_size`` 0: shapes the encoder (and numpy) would not build."""
    buf = _request({"e": np.zeros(0, np.uint8)}, request_id=request_id)
    struct.pack_into("<II", buf, _DESC0 + 64, dtype.code, len(shape))
    struct.pack_into(f"<{len(shape)}Q", buf, _DESC0 + 72, *shape)
    return _reseal(buf)


def _corrupt_data(buf: bytearray) -> bytearray:
    buf[_DATA0] ^= 0xFF  # the first data byte of the only tensor
    return buf


# --- section 15 (CUDA IPC) ------------------------------------------------------------------------

_HANDLE = bytes(range(1, 65))


def _cuda_message(kind: str, tensors: list[Any], request_id: int) -> bytearray:
    host = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in (t for t in tensors if type(t) is tuple)]
    count = len(tensors)
    payload = request_payload_size(count, 0, 0) if kind == "request" else response_payload_size(count, 0, 0)
    refs, end = layout(host, payload)
    buf = bytearray(end)
    it = iter(refs)
    placed: list[Any] = []
    for t in tensors:
        if type(t) is tuple:
            ref = next(it)
            buf[ref.offset : ref.offset + ref.size] = t[1].tobytes()
            placed.append(ref)
        else:
            placed.append(t)
    if kind == "request":
        write_mixed_request(buf, tensors=placed, request_id=request_id, model="echo", flags=FLAG_CUDA_IPC)
    else:
        write_mixed_response(buf, tensors=placed, request_id=request_id, model="echo")
    return buf


def _cuda_ref(**kw: Any) -> CudaIpcRef:
    fields: dict[str, Any] = dict(
        name="x", dtype=DataType.FP32, shape=(2, 3), device=0, handle=_HANDLE, offset=4096, size=24
    )
    fields.update(kw)
    return CudaIpcRef(**fields)


def _zero_handle(buf: bytearray) -> bytearray:
    buf[_DESC0 + 168 : _DESC0 + 232] = bytes(64)  # ipc_handle of the first descriptor
    return _reseal(buf)


def _overflowing_shape(buf: bytearray) -> bytearray:
    struct.pack_into("<I", buf, _DESC0 + 68, 2)  # ndim
    struct.pack_into("<QQ", buf, _DESC0 + 72, 1 << 63, 1 << 63)
    struct.pack_into("<Q", buf, _DESC0 + 144, U64_MAX)  # data_size
    struct.pack_into("<Q", buf, _DESC0 + 232, 0)  # ipc_offset 0: only the shape check can catch it
    return _reseal(buf)
