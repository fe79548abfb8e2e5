"""The CUDA driver API calls that CUDA IPC needs (``libcuda.so.1`` through ``ctypes``).

Each call runs in the device's primary context, the one PyTorch uses. No CUDA toolkit is needed:
the driver library comes with every NVIDIA driver. Section 15.6 of the spec says why this is not
torch's own IPC machinery.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

__all__ = ["CudaError", "driver"]

log = logging.getLogger("foundation_shm")
_LAZY_PEER_ACCESS = 1  # CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS


class CudaError(RuntimeError):
    """A CUDA driver call failed; ``name`` is the CUresult's name (e.g. CUDA_ERROR_INVALID_VALUE)."""

    def __init__(self, call: str, code: int, name: str, text: str) -> None:
        self.call, self.code, self.name = call, code, name
        super().__init__(f"{call} failed: {name} ({code}): {text}")


class _Handle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_ubyte * 64)]  # CUipcMemHandle == cudaIpcMemHandle_t


_P = ctypes.POINTER
# The driver calls used, with their argument types (a CUipcMemHandle goes by value to Open).
_SIGNATURES: dict[str, list[Any]] = {
    "cuInit": [ctypes.c_uint],
    "cuGetErrorName": [ctypes.c_int, _P(ctypes.c_char_p)],
    "cuGetErrorString": [ctypes.c_int, _P(ctypes.c_char_p)],
    "cuDeviceGet": [_P(ctypes.c_int), ctypes.c_int],
    "cuDevicePrimaryCtxRetain": [_P(ctypes.c_void_p), ctypes.c_int],
    "cuCtxPushCurrent": [ctypes.c_void_p],
    "cuCtxPopCurrent": [_P(ctypes.c_void_p)],
    "cuMemGetAddressRange": [_P(ctypes.c_uint64), _P(ctypes.c_size_t), ctypes.c_uint64],
    "cuIpcGetMemHandle": [_P(_Handle), ctypes.c_uint64],
    "cuIpcOpenMemHandle": [_P(ctypes.c_uint64), _Handle, ctypes.c_uint],
    "cuIpcCloseMemHandle": [ctypes.c_uint64],
    "cuMemAlloc": [_P(ctypes.c_uint64), ctypes.c_size_t],
    "cuMemFree": [ctypes.c_uint64],
}


class _Driver:
    """The handful of driver calls CUDA IPC needs, each in the device's primary context."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libcuda.so.1")
        self.fns: dict[str, Any] = {}
        for name, argtypes in _SIGNATURES.items():
            for symbol in (f"{name}_v2", name):  # the _v2 entry points are the current ABI
                fn = getattr(lib, symbol, None)
                if fn is not None:
                    fn.argtypes, fn.restype = argtypes, ctypes.c_int
                    self.fns[name] = fn
                    break
            else:
                raise CudaError(name, -1, "CUDA_ERROR_NOT_FOUND", "the driver lacks this call")
        self._ctx: dict[int, ctypes.c_void_p] = {}
        # reentrant: a finalizer (an _OwnBuffer's free, a mapping's close) may run in this thread
        # when the garbage collector fires inside _context's ctypes allocations, and it calls
        # _context again (for any device); a plain lock deadlocked that thread for ever
        self._lock = threading.RLock()
        self._check("cuInit", self.fns["cuInit"](0))

    def _check(self, call: str, rc: int) -> None:
        if rc:
            name, text = ctypes.c_char_p(), ctypes.c_char_p()
            self.fns["cuGetErrorName"](rc, ctypes.byref(name))
            self.fns["cuGetErrorString"](rc, ctypes.byref(text))
            raise CudaError(
                call, rc, (name.value or b"?").decode(), (text.value or b"unknown error").decode()
            )

    def _context(self, device: int) -> ctypes.c_void_p:
        with self._lock:
            ctx = self._ctx.get(device)
            if ctx is None:
                dev, ctx = ctypes.c_int(), ctypes.c_void_p()
                self._check("cuDeviceGet", self.fns["cuDeviceGet"](ctypes.byref(dev), device))
                self._check(
                    "cuDevicePrimaryCtxRetain", self.fns["cuDevicePrimaryCtxRetain"](ctypes.byref(ctx), dev)
                )
                self._ctx[device] = ctx
            return ctx

    def _in(self, device: int, call: str, *args: Any) -> None:
        self._check("cuCtxPushCurrent", self.fns["cuCtxPushCurrent"](self._context(device)))
        try:
            self._check(call, self.fns[call](*args))
        finally:
            self.fns["cuCtxPopCurrent"](ctypes.byref(ctypes.c_void_p()))

    def address_range(self, device: int, ptr: int) -> tuple[int, int]:
        """(base, size) of the allocation holding device address ``ptr``."""
        base, size = ctypes.c_uint64(), ctypes.c_size_t()
        self._in(device, "cuMemGetAddressRange", ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(ptr))
        return base.value, size.value

    def export(self, device: int, ptr: int) -> tuple[bytes, int]:
        """(64-byte handle of the allocation, offset of ``ptr`` in it)."""
        base, _ = self.address_range(device, ptr)
        handle = _Handle()
        self._in(device, "cuIpcGetMemHandle", ctypes.byref(handle), ctypes.c_uint64(base))
        return bytes(handle.reserved), ptr - base

    def open(self, device: int, handle: bytes) -> tuple[int, int]:
        """Map another process's allocation: (device pointer, allocation size)."""
        h = _Handle()
        ctypes.memmove(ctypes.byref(h), handle, 64)
        ptr = ctypes.c_uint64()
        self._in(device, "cuIpcOpenMemHandle", ctypes.byref(ptr), h, _LAZY_PEER_ACCESS)
        try:
            _, size = self.address_range(device, ptr.value)
        except CudaError:
            size = 0  # unknown: the bounds check is skipped (logged by the caller)
        return ptr.value, size

    def alloc(self, device: int, size: int) -> int:
        """``size`` bytes of device memory of this process's own (``cuMemAlloc``): its IPC handle
        covers exactly them, unlike a block of torch's caching allocator, which holds others."""
        ptr = ctypes.c_uint64()
        self._in(device, "cuMemAlloc", ctypes.byref(ptr), ctypes.c_size_t(size))
        return ptr.value

    def free(self, device: int, ptr: int) -> None:
        try:
            self._in(device, "cuMemFree", ctypes.c_uint64(ptr))
        except Exception as exc:  # at exit, or a context already gone: nothing left to free
            log.debug("cuMemFree(%#x) on device %d: %s", ptr, device, exc)

    def close(self, device: int, ptr: int) -> None:
        try:
            self._in(device, "cuIpcCloseMemHandle", ctypes.c_uint64(ptr))
        except Exception as exc:  # at exit, or a context already gone: nothing left to free
            log.debug("cuIpcCloseMemHandle(%#x) on device %d: %s", ptr, device, exc)


_driver: _Driver | None = None
_driver_lock = threading.Lock()


def driver() -> _Driver:
    global _driver
    with _driver_lock:
        if _driver is None:
            _driver = _Driver()
        return _driver
