"""Request, response and model-metadata types, in the Open Inference Protocol's vocabulary.

Tensors are numpy arrays keyed by name (a transport may hand the server read-only views on
shared memory), or torch tensors where a transport or client passes them (CUDA IPC).
``deadline_ns`` is absolute ``CLOCK_MONOTONIC`` time (``time.monotonic_ns()``), which every
process on a Linux host shares, so a deadline survives crossing the boundary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from ._datatypes import DataType
from ._names import check_name
from ._tensors import is_tensor

__all__ = ["InferenceRequest", "InferenceResponse", "ModelMetadata", "TensorSpec", "deadline_after"]

Parameters = Mapping[str, "str | int | float | bool"]


def deadline_after(timeout: float | None) -> int:
    """The absolute deadline ``timeout`` seconds from now, in monotonic ns (0: no deadline)."""
    return 0 if timeout is None else time.monotonic_ns() + int(timeout * 1e9)


@attrs.define(slots=True)
class InferenceRequest:
    """One inference call: model name (and optional version), named input tensors."""

    model: str
    inputs: Mapping[str, np.ndarray]
    id: int = 0
    version: str = ""
    deadline_ns: int = 0
    parameters: Parameters = attrs.field(factory=dict)
    outputs: Sequence[str] = ()  # names of the outputs wanted; empty means all


@attrs.define(slots=True)
class InferenceResponse:
    """The successful answer to one request (errors travel as ``InferenceError``)."""

    id: int
    model: str
    outputs: Mapping[str, np.ndarray]
    version: str = ""
    parameters: Parameters = attrs.field(factory=dict)


@attrs.frozen
class TensorSpec:
    """One input or output of a model signature; ``-1`` in ``shape`` is a variable dimension."""

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "tensor name"))
    datatype: DataType
    shape: tuple[int, ...]

    def accepts(self, array: np.ndarray) -> bool:
        """Whether ``array`` (a numpy array, or a torch tensor on any device) fits this spec."""
        if array.ndim != len(self.shape):
            return False
        if array.dtype != self.datatype.numpy and not (is_tensor(array) and self._torch_dtype_ok(array)):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, array.shape, strict=True))

    def _torch_dtype_ok(self, tensor: Any) -> bool:
        return DataType.from_torch(tensor.dtype) is self.datatype

    def describe(self) -> str:
        dims = ", ".join("-1" if d < 0 else str(d) for d in self.shape)
        return f"{self.name}: {self.datatype.name}[{dims}]"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype.name, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), DataType.from_name(str(d["datatype"])), tuple(int(x) for x in d["shape"]))


@attrs.frozen
class ModelMetadata:
    """What a served model accepts and returns (the OIP model-metadata document)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    versions: tuple[str, ...] = ("1",)
    platform: str = ""

    def signature(self) -> str:
        ins = "; ".join(s.describe() for s in self.inputs)
        outs = "; ".join(s.describe() for s in self.outputs)
        return f"inputs ({ins}) -> outputs ({outs})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [s.as_dict() for s in self.inputs],
            "outputs": [s.as_dict() for s in self.outputs],
        }
