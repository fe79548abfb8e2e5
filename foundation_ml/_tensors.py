"""torch tensors as request values, recognised by duck typing: foundation_ml never imports torch for them.

A transport may hand the runtime torch tensors (the shm transport's CUDA IPC path gives CUDA
tensors opened from their handles), and a client may pass them. These helpers check and convert
them by their attributes (``dtype``, ``shape``, ``is_cuda``, ``device``); the few conversions that
need torch itself import it inside the function, where a tensor proves it is already loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._datatypes import DataType

__all__ = [
    "device_of",
    "from_host",
    "has_tensor",
    "is_device_tensor",
    "is_tensor",
    "to_host",
]


def is_tensor(value: object) -> bool:
    """True for a torch tensor (on any device), without importing torch."""
    kind = type(value)
    return kind is not np.ndarray and kind.__module__.startswith("torch") and hasattr(value, "is_cuda")


def is_device_tensor(value: object) -> bool:
    """True for a torch tensor on a CUDA device."""
    return is_tensor(value) and bool(getattr(value, "is_cuda", False))


def has_tensor(inputs: Mapping[str, Any]) -> bool:
    """Whether any value of ``inputs`` is a torch tensor (numpy-only inputs: one type check each)."""
    for v in inputs.values():  # noqa: SIM110  (a loop: no generator on the hot path)
        if type(v) is not np.ndarray and is_tensor(v):
            return True
    return False


def device_of(inputs: Mapping[str, Any]) -> Any:
    """The device (a ``torch.device``) of the first CUDA tensor of ``inputs``, else None."""
    for v in inputs.values():
        if type(v) is not np.ndarray and is_device_tensor(v):
            return v.device
    return None


def to_host(value: Any) -> np.ndarray:
    """A torch tensor as a C-contiguous host numpy array (zero-copy for a contiguous CPU tensor;
    bfloat16 as its bit patterns, of dtype ``DataType.BF16.numpy``, which travel as BF16); numpy
    arrays pass through."""
    if not is_tensor(value):
        return np.ascontiguousarray(value)
    t = value.detach()
    if t.is_cuda:
        t = t.cpu()
    t = t.contiguous()
    if DataType.from_torch(t.dtype) is DataType.BF16:
        import torch  # loaded: ``value`` is one of its tensors

        bits: np.ndarray = t.view(torch.int16).numpy().view(DataType.BF16.numpy)
        return bits
    array: np.ndarray = t.numpy()
    return array


def from_host(array: np.ndarray) -> Any:
    """A host numpy array as a CPU torch tensor on the same memory (BF16 bit patterns, of dtype
    ``DataType.BF16.numpy``, as ``torch.bfloat16``). For callers that already hold torch tensors:
    this is where torch is imported."""
    import torch

    if DataType.from_numpy(array.dtype) is DataType.BF16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
