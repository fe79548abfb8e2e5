"""CUDA_IPC tensor descriptors (spec section 15): the reference type, its checks, and mixed encoding.

Nothing here imports torch or touches a GPU: a descriptor is checked and decoded into a
``CudaIpcRef`` (device, handle, offset, size, dtype, shape); opening it is the job of
``_cuda_client`` and ``_cuda_server``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from foundation_ml import DataType
from foundation_ml.errors import InvalidInput

from . import _layout as L

__all__ = [
    "CUDA_IPC",
    "FLAG_CUDA_IPC",
    "HANDLE_SIZE",
    "CudaIpcRef",
    "decode_cuda_ipc_tensor",
    "has_cuda_refs",
    "pack_cuda_desc",
    "write_mixed_request",
    "write_mixed_response",
]

CUDA_IPC = int(L.Location.CUDA_IPC)
FLAG_CUDA_IPC = 2  # FDN_FLAG_CUDA_IPC: the request's client takes CUDA_IPC outputs
HANDLE_SIZE = 64
U64_MAX = (1 << 64) - 1
_ZERO_HANDLE = bytes(HANDLE_SIZE)
_DTYPES = {d.code: d for d in DataType}


class CudaIpcRef(NamedTuple):
    """A tensor in device memory, as a CUDA_IPC descriptor names it."""

    name: str
    dtype: DataType
    shape: tuple[int, ...]
    device: int
    handle: bytes  # the 64-byte cudaIpcMemHandle of the allocation
    offset: int  # ipc_offset: bytes from the allocation's base
    size: int  # data_size

    @property
    def nbytes(self) -> int:
        return self.size

    def copy(self) -> CudaIpcRef:
        """Immutable: a copy is itself (``copy_outputs`` copies the device tensor, not this)."""
        return self


def has_cuda_refs(tensors: Any) -> bool:
    """True if any value of the mapping ``tensors`` is a ``CudaIpcRef``."""
    return CudaIpcRef in map(type, tensors.values())


def check_cuda_ipc(ref: CudaIpcRef, data_offset: int = 0, request_id: int = 0) -> None:
    """The checks of spec 15.3 that need no GPU; raises ``InvalidInput`` naming the fault."""
    name, itemsize = ref.name, ref.dtype.itemsize
    count = math.prod(ref.shape)
    if count * itemsize != ref.size:
        raise InvalidInput(
            f"tensor {name!r}: data_size {ref.size} != {count} elements x {itemsize} bytes",
            request_id=request_id,
        )
    if ref.size == 0:
        raise InvalidInput(
            f"tensor {name!r}: a CUDA_IPC tensor has data (send empty tensors as HOST)", request_id=request_id
        )
    if data_offset:
        raise InvalidInput(
            f"tensor {name!r}: data_offset {data_offset} must be 0 for a CUDA_IPC tensor",
            request_id=request_id,
        )
    if ref.device < 0:
        raise InvalidInput(f"tensor {name!r}: CUDA device {ref.device} < 0", request_id=request_id)
    if len(ref.handle) != HANDLE_SIZE or ref.handle == _ZERO_HANDLE:
        raise InvalidInput(f"tensor {name!r}: the CUDA IPC handle is all zeros", request_id=request_id)
    if ref.offset % itemsize:
        raise InvalidInput(
            f"tensor {name!r}: ipc_offset {ref.offset} not aligned to {itemsize}", request_id=request_id
        )
    if ref.offset + ref.size > U64_MAX:
        raise InvalidInput(
            f"tensor {name!r}: ipc_offset {ref.offset} + data_size {ref.size} overflows 64 bits",
            request_id=request_id,
        )


# How many CUDA_IPC descriptors this process has decoded: a server compares it with the count it
# last saw to tell, without scanning the inputs, that a request may hold a ``CudaIpcRef``.
decoded = [0]


def decode_cuda_ipc_tensor(fields: tuple[Any, ...], area: Any, area_size: int, request_id: int) -> Any:
    """The codec's decoder for ``location == CUDA_IPC`` (``LOCATION_DECODERS``): a checked ref."""
    decoded[0] += 1
    name, code, ndim = fields[0], fields[1], fields[2]
    dtype = _DTYPES.get(code)
    if dtype is None:
        raise InvalidInput(
            f"tensor {name!r}: unknown dtype code {code} (known: 1..14)", request_id=request_id
        )
    ref = CudaIpcRef(
        name, dtype, tuple(fields[3 : 3 + ndim]), fields[15], bytes(fields[17]), fields[18], fields[12]
    )
    check_cuda_ipc(ref, fields[11], request_id)
    return ref


def pack_cuda_desc(buf: Any, at: int, ref: CudaIpcRef) -> None:
    """Write ``ref`` as a CUDA_IPC descriptor at byte ``at`` (the encoder rules of section 5)."""
    if len(ref.shape) > L.MAX_NDIM:
        raise InvalidInput(f"tensor {ref.name!r} has {len(ref.shape)} dimensions (at most {L.MAX_NDIM})")
    check_cuda_ipc(ref)
    raw = ref.name.encode("utf-8")
    if len(raw) >= L.NAME_SIZE or b"\0" in raw:
        raise InvalidInput(f"tensor name {ref.name!r} must be at most 63 UTF-8 bytes without NUL")
    shape = tuple(ref.shape) + (0,) * (L.MAX_NDIM - len(ref.shape))
    L.DESC.pack_into(
        buf, at, raw, ref.dtype.code, len(ref.shape), *shape, 0, ref.size, CUDA_IPC, 0, ref.device, 0,
        ref.handle, ref.offset,
    )  # fmt: skip


def _placeholders(tensors: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    from ._codec import TensorRef

    refs, host = [], []
    for t in tensors:
        if type(t) is CudaIpcRef:
            refs.append(TensorRef(t.name, t.dtype, t.shape, 0, t.size))
        else:
            refs.append(t)
            host.append(t)
    return refs, host


def _patch(
    buf: Any, tensors: Sequence[Any], kind: int, request_id: int, payload: int, flags: int, host: Any
) -> None:
    from ._codec import write_header

    at = L.MSG_HEADER_SIZE + L.BODY_SIZE
    for i, t in enumerate(tensors):
        if type(t) is CudaIpcRef:
            pack_cuda_desc(buf, at + i * L.DESC_SIZE, t)
    write_header(buf, kind, request_id, payload, flags, host)


def write_mixed_request(buf: Any, *, tensors: Sequence[Any], **fields: Any) -> int:
    """``write_request`` for inputs that are ``TensorRef`` (HOST, data in place) or ``CudaIpcRef``;
    returns the payload size. The CRC (and DATA_CRC) cover the HOST data only."""
    from ._codec import write_request

    refs, host = _placeholders(tensors)
    payload = write_request(buf, inputs=refs, **fields)
    _patch(
        buf, tensors, int(fields.get("kind", 1)), fields["request_id"], payload, fields.get("flags", 0), host
    )
    return payload


def write_mixed_response(buf: Any, *, tensors: Sequence[Any], **fields: Any) -> int:
    """``write_response`` for outputs that are ``TensorRef`` or ``CudaIpcRef``; returns the payload."""
    from ._codec import write_response

    refs, host = _placeholders(tensors)
    payload = write_response(buf, outputs=refs, **fields)
    _patch(
        buf, tensors, int(L.MessageKind.RESPONSE), fields["request_id"], payload, fields.get("flags", 0), host
    )
    return payload
