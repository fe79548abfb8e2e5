"""A loaded torch model on a device: numpy in, numpy out, zero-copy on CPU, under ``inference_mode``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from foundation_ml import DataType, TensorSpec
from foundation_ml._backend import LoadedModel

__all__ = ["DTYPES", "TorchModel", "torch_dtype"]

#: The protocol's datatype table mapped onto torch (BYTES has no torch dtype).
DTYPES: dict[DataType, torch.dtype] = {
    DataType.BOOL: torch.bool,
    DataType.UINT8: torch.uint8,
    DataType.UINT16: torch.uint16,
    DataType.UINT32: torch.uint32,
    DataType.UINT64: torch.uint64,
    DataType.INT8: torch.int8,
    DataType.INT16: torch.int16,
    DataType.INT32: torch.int32,
    DataType.INT64: torch.int64,
    DataType.FP16: torch.float16,
    DataType.BF16: torch.bfloat16,
    DataType.FP32: torch.float32,
    DataType.FP64: torch.float64,
}

# ``torch.inference_mode()`` is a Python wrapper around this guard and costs 2.5 µs a call against
# 1 µs (measured); fall back to the public form if a torch version lacks it.
_inference_mode: Callable[[], Any] = (
    (lambda: torch._C._InferenceMode(True)) if hasattr(torch._C, "_InferenceMode") else torch.inference_mode
)

# Transports hand the model read-only views (shared memory); the model only reads its inputs.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def torch_dtype(dt: DataType) -> torch.dtype:
    try:
        return DTYPES[dt]
    except KeyError:
        raise ValueError(f"datatype {dt.name} has no torch dtype") from None


def _to_torch(spec: TensorSpec, device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
    on_cpu = device.type == "cpu"
    if spec.datatype is DataType.BF16:  # travels as uint16 bit patterns

        def bf16(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
            return t if on_cpu else t.to(device)

        return bf16
    if on_cpu:
        return torch.from_numpy
    return lambda a: torch.from_numpy(a).to(device)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


class TorchModel(LoadedModel):
    """Calls ``module(*inputs in signature order)``; the result may be a tensor (one output), a
    tuple or list (outputs in order) or a dict (outputs by name)."""

    platform = "pytorch"

    def __init__(
        self,
        module: Callable[..., Any],
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        *,
        device: str = "cpu",
        batchable: bool | None = None,
        signature_source: str = "",
        version: str = "",
    ) -> None:
        for spec in (*inputs, *outputs):
            torch_dtype(spec.datatype)  # raises for BYTES
        self.module = module
        self.inputs = inputs
        self.outputs = outputs
        self.device = device
        self.signature_source = signature_source
        self.version = version
        self._batchable = batchable
        dev = torch.device(device)
        self._pairs = [(_to_torch(s, dev), s.name) for s in inputs]
        self._out_names = [s.name for s in outputs]
        # one CPU output that is not BF16: ``.numpy()`` directly
        self._plain_out = dev.type == "cpu" and outputs[0].datatype is not DataType.BF16 if outputs else False

    @property
    def batchable(self) -> bool:
        return super().batchable if self._batchable is None else self._batchable

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with _inference_mode():
            args = [conv(inputs[n]) for conv, n in self._pairs]
            result = self.module(*args)
        if type(result) is torch.Tensor:
            if result is args[0] or any(result is a for a in args):  # never hand back the input
                result = result.clone()
            return {self._out_names[0]: result.numpy() if self._plain_out else _to_numpy(result)}
        if isinstance(result, Mapping):
            return {k: _to_numpy(result[k]) for k in self._out_names if k in result}
        if isinstance(result, tuple | list):
            return {k: _to_numpy(v) for k, v in zip(self._out_names, result, strict=False)}
        raise TypeError(f"model returned {type(result).__name__}, expected a tensor, tuple or dict")

    def close(self) -> None:
        self.module = _closed
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _closed(*args: Any) -> Any:
    raise RuntimeError("the model was unloaded")
