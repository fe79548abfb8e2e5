"""CPU tensors standing in for device memory, so that the CUDA IPC path (``_cuda_server``,
``_cuda_client``) runs in tests on machines without a GPU: a handle names a CPU tensor, "opening" it
gives that tensor (or a view into a server output buffer). Not used outside tests."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType

from . import _cuda_client, _cuda_server
from ._cuda_desc import CudaIpcRef
from ._cuda_memory import datatype_of

if TYPE_CHECKING:
    import pytest

__all__ = ["FakeDeviceMemory"]


class FakeDeviceMemory:
    """Stands in for ``export_tensor``, ``tensor_on``, ``_OwnBuffer`` and ``_synchronize``; its
    handles open in the process that exported them (a real driver's do not), so a client may use
    them with a server in its own process, as the tests do."""

    def __init__(self) -> None:
        self.tensors: dict[bytes, Any] = {}  # exported tensors, by handle
        self.buffers: dict[bytes, Any] = {}  # server output buffers (uint8), by handle
        self.exported: list[str] = []
        self._ids = itertools.count(1)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeDeviceMemory:
        # each module that calls one is patched: the client exports, the server owns the buffers
        monkeypatch.setattr(_cuda_client, "export_tensor", self.export)
        monkeypatch.setattr(_cuda_server, "_OwnBuffer", self.buffer)
        for side in (_cuda_client, _cuda_server):
            monkeypatch.setattr(side, "tensor_on", self.tensor_on)
            monkeypatch.setattr(side, "_synchronize", lambda devices: None)
        monkeypatch.setattr(_cuda_server, "_exported_here", lambda client: False)
        return self

    def export(self, name: str, t: Any) -> CudaIpcRef:
        handle = t.data_ptr().to_bytes(8, "little") * 8
        self.tensors[handle] = t
        self.exported.append(name)
        size = t.numel() * t.element_size()
        return CudaIpcRef(name, datatype_of(t), tuple(t.shape), 0, handle, 0, size)

    def buffer(self, device: int, size: int) -> Any:
        import torch

        base = torch.zeros(size, dtype=torch.uint8)
        handle = b"B" + next(self._ids).to_bytes(8, "little") + bytes(55)
        self.buffers[handle] = base
        return _Buffer(device, size, base.data_ptr(), handle)

    def tensor_on(self, mapping: Any, ref: CudaIpcRef) -> Any:
        if ref.handle in self.tensors:
            return self.tensors[ref.handle]
        import torch

        raw = self.buffers[ref.handle][ref.offset : ref.offset + ref.size]
        bf16 = ref.dtype is DataType.BF16
        dtype = torch.bfloat16 if bf16 else torch.from_numpy(np.zeros(0, ref.dtype.numpy)).dtype
        return raw.view(dtype).reshape(ref.shape)


class _Buffer:
    __slots__ = ("device", "handle", "ptr", "size")

    def __init__(self, device: int, size: int, ptr: int, handle: bytes) -> None:
        self.device, self.size, self.ptr, self.handle = device, size, ptr, handle
