"""Device memory and torch tensors for CUDA IPC (spec 15): what is a device tensor, dtypes, opening
and exporting allocations by handle, the per-process mappings, copies to and from the host.

torch is imported only inside the functions that handle device tensors, so the host-only shm path
stays light. Opened memory becomes a torch tensor without a copy through
``__cuda_array_interface__``. A server's cache of its clients' mappings is ``_cuda_cache``.
"""

from __future__ import annotations

import collections
import logging
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType
from foundation_ml._tensors import from_host
from foundation_ml.errors import InvalidInput

from ._cuda_desc import CudaIpcRef
from ._cuda_driver import driver

if TYPE_CHECKING:
    import torch

__all__ = [
    "cuda_available",
    "datatype_of",
    "export_tensor",
    "is_device_tensor",
    "tensor_on",
]

log = logging.getLogger("foundation_shm")


# --- what is a device tensor, is there CUDA ---------------------------------------------------------


def is_device_tensor(value: Any) -> bool:
    """True for a torch tensor on a CUDA device (checked without importing torch)."""
    return (
        type(value) is not np.ndarray
        and type(value).__module__.startswith("torch")
        and bool(getattr(value, "is_cuda", False))
    )


def cuda_available() -> bool:
    """Whether this process can use CUDA (imports torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --- dtypes -------------------------------------------------------------------------------------

# typestr for __cuda_array_interface__, and the torch dtype to view the result as (None: as is).
_TYPESTR = {
    DataType.BOOL: ("|b1", None),
    DataType.UINT8: ("|u1", None),
    DataType.UINT16: ("<i2", "uint16"),
    DataType.UINT32: ("<i4", "uint32"),
    DataType.UINT64: ("<i8", "uint64"),
    DataType.INT8: ("|i1", None),
    DataType.INT16: ("<i2", None),
    DataType.INT32: ("<i4", None),
    DataType.INT64: ("<i8", None),
    DataType.FP16: ("<f2", None),
    DataType.BF16: ("<i2", "bfloat16"),
    DataType.FP32: ("<f4", None),
    DataType.FP64: ("<f8", None),
    DataType.BYTES: ("|u1", None),
}


_BY_TORCH = {
    "bool": DataType.BOOL,
    "uint8": DataType.UINT8,
    "uint16": DataType.UINT16,
    "uint32": DataType.UINT32,
    "uint64": DataType.UINT64,
    "int8": DataType.INT8,
    "int16": DataType.INT16,
    "int32": DataType.INT32,
    "int64": DataType.INT64,
    "float16": DataType.FP16,
    "bfloat16": DataType.BF16,
    "float32": DataType.FP32,
    "float64": DataType.FP64,
}


def datatype_of(t: torch.Tensor) -> DataType:
    """The protocol datatype of a torch tensor."""
    dt = _BY_TORCH.get(str(t.dtype).removeprefix("torch."))
    if dt is None:
        raise InvalidInput(f"torch dtype {t.dtype} has no protocol datatype")
    return dt


# --- device memory <-> tensors ------------------------------------------------------------------


# --- this process's driver mappings of other processes' handles ----------------------------------
#
# The driver maps a handle once per process: a second cuIpcOpenMemHandle of a handle still open
# fails (CUDA_ERROR_ALREADY_MAPPED) on some drivers and returns the same pointer, counted, on
# others. A mapping's last reference may go in any thread (an asynchronous handler lets go of its
# inputs after its answer, a client's caller of its output views), and its close released the GIL
# while another thread opened the same handle again (the client's next request reuses its tensor):
# that open ran during the close. So every open and close of this process runs under one lock, and
# a handle is opened again only once its close has returned, or, while its close is still to come,
# its mapping is taken up again instead. Dropping a reference never waits for the lock: the close
# is queued, and done by whoever holds the lock before they let go of it.


class _Open:
    """One driver mapping of ``(device, handle)``: the driver that opened it, its pointer and size,
    how many ``_Mapping`` objects use it (``_opens_lock`` guards the count)."""

    __slots__ = ("driver", "ptr", "size", "users")

    def __init__(self, drv: Any, ptr: int, size: int) -> None:
        self.driver, self.ptr, self.size, self.users = drv, ptr, size, 0


_opens: dict[tuple[int, bytes], _Open] = {}
_opens_lock = threading.Lock()
_released: collections.deque[tuple[tuple[int, bytes], _Open]] = collections.deque()  # closes to do


def _acquire(device: int, handle: bytes) -> _Open:
    """The driver mapping of ``handle`` on ``device``, opened unless open (or closing: then taken
    up again); one more user. Raises ``CudaError`` (nothing changed) when it does not open."""
    key = (device, handle)
    try:
        with _opens_lock:
            _close_released()
            o = _opens.get(key)
            if o is None:
                drv = driver()
                ptr, size = drv.open(device, handle)
                o = _opens[key] = _Open(drv, ptr, size)
                if not size:
                    log.warning(
                        "shm: the size of an opened CUDA IPC allocation is unknown: offsets go unchecked"
                    )
            o.users += 1
            return o
    finally:
        _settle()  # closes queued while the lock was held


def _release(key: tuple[int, bytes], o: _Open) -> None:
    """A ``_Mapping`` of ``o`` is gone (its finalizer, in whatever thread dropped it): one user
    less, closed at none. Never waits: if another thread holds the lock, that one closes it."""
    _released.append((key, o))
    _settle()


def _settle() -> None:
    # a release queued after the holder's last look is seen here: the holder looks again after
    # letting go, and the one that queued it looks once it could not take the lock
    while _released and _opens_lock.acquire(blocking=False):
        try:
            _close_released()
        finally:
            _opens_lock.release()


def _close_released() -> None:
    """Count down the queued releases; close what nothing uses now (``_opens_lock`` held)."""
    while _released:
        key, o = _released.popleft()
        o.users -= 1
        if not o.users:
            if _opens.get(key) is o:
                del _opens[key]
            o.driver.close(key[0], o.ptr)


class _Mapping:
    """One opened IPC handle; closed (``cuIpcCloseMemHandle``) once nothing references it (nor
    any other ``_Mapping`` of the same handle in this process)."""

    __slots__ = ("__weakref__", "device", "handle", "ptr", "size")

    def __init__(self, device: int, handle: bytes) -> None:
        self.device, self.handle = device, handle
        o = _acquire(device, handle)
        done: list[bool] = []

        def release() -> None:  # once: from the finalizer, or below if __init__ is interrupted
            if not done:
                done.append(True)
                _release((device, handle), o)

        try:
            self.ptr, self.size = o.ptr, o.size
            weakref.finalize(self, release).atexit = False
        except BaseException:  # (an interrupt): the user counted must not keep it open for ever,
            release()  # nor be let go twice if it came once the finalizer was registered
            raise


# Every mapping this process has open, whoever holds it (a cache, or tensors after a cache let go).
_live: weakref.WeakValueDictionary[tuple[int, bytes], _Mapping] = weakref.WeakValueDictionary()
_live_lock = threading.Lock()


def open_mapping(device: int, handle: bytes) -> _Mapping:
    """The mapping of ``handle`` on ``device``: the one this process has (whoever holds it), or
    opened. Raises ``CudaError`` when the handle does not open."""
    key = (device, handle)
    with _live_lock:
        m = _live.get(key)
        if m is None:
            m = _live[key] = _Mapping(device, handle)
    return m


class _OwnBuffer:
    """Device memory the server allocated for one channel's outputs on one device (spec 13 and
    15.4 rule 3): exported by handle, it holds that channel's outputs and nothing else. A
    caching-allocator block, exported as it is, also held other clients' outputs and the model's
    own tensors, all readable and writable by whoever opened its handle. Freed (``cuMemFree``) once
    nothing references it."""

    __slots__ = ("__weakref__", "device", "handle", "ptr", "size")

    def __init__(self, device: int, size: int) -> None:
        drv = driver()
        self.device, self.size = device, size
        self.ptr = drv.alloc(device, size)
        try:
            self.handle, _ = drv.export(device, self.ptr)
        except BaseException:
            drv.free(device, self.ptr)
            raise
        weakref.finalize(self, drv.free, device, self.ptr).atexit = False


class _DeviceView:
    """``__cuda_array_interface__`` over mapped memory; the tensor made from it keeps it (and the
    mapping) alive."""

    def __init__(
        self, mapping: _Mapping | _OwnBuffer, offset: int, shape: tuple[int, ...], typestr: str
    ) -> None:
        self.mapping = mapping
        self._cai = {
            "shape": shape,
            "typestr": typestr,
            "data": (mapping.ptr + offset, False),
            "strides": None,
            "version": 2,
        }

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return self._cai


def tensor_on(mapping: _Mapping | _OwnBuffer, ref: CudaIpcRef) -> torch.Tensor:
    """A torch tensor over ``ref``'s bytes in ``mapping`` (no copy), bounds-checked."""
    import torch

    if mapping.size and ref.offset + ref.size > mapping.size:
        raise InvalidInput(
            f"tensor {ref.name!r}: bytes [{ref.offset}, {ref.offset + ref.size}) outside the "
            f"CUDA allocation of {mapping.size} bytes"
        )
    typestr, view = _TYPESTR[ref.dtype]
    t = torch.as_tensor(_DeviceView(mapping, ref.offset, ref.shape, typestr), device=f"cuda:{ref.device}")
    return t.view(getattr(torch, view)) if view else t


def export_tensor(name: str, t: torch.Tensor) -> CudaIpcRef:
    """Describe a contiguous CUDA tensor by the IPC handle of its allocation (spec 15.1)."""
    if not t.is_contiguous():
        raise InvalidInput(f"tensor {name!r} is not contiguous")
    device = t.device.index if t.device.index is not None else 0
    handle, offset = driver().export(device, t.data_ptr())
    return CudaIpcRef(
        name, datatype_of(t), tuple(t.shape), device, handle, offset, t.numel() * t.element_size()
    )


def inside_mapping(t: torch.Tensor) -> bool:
    """Whether ``t`` lies in memory this process opened from another's handle (a server output
    taken as a view): such memory has no handle of ours to export."""
    ptr = t.data_ptr()
    with _live_lock:
        return any(m.ptr <= ptr < m.ptr + max(m.size, 1) for m in list(_live.values()))


def _synchronize(devices: set[int]) -> None:
    import torch

    for d in devices:
        torch.cuda.synchronize(d)


def _to_device(a: np.ndarray, device: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only views on the response area
        t = from_host(a)  # BF16 bit patterns as bfloat16
    if t.device == torch.device(device):
        return t.clone()  # never hand back a view on shared memory the next call rewrites
    return t.to(device)
