"""A loaded torch model on a device: numpy in, numpy out, zero-copy on CPU, under ``inference_mode``.

torch tensors are taken too (the shm transport's CUDA IPC path hands over CUDA tensors opened from
their handles). A tensor already on the model's device goes in as it is (no copy); one on another
device is moved there (``.to``: CPU tensors, or another GPU's). When an input is a CUDA tensor the
outputs stay torch tensors, on the device of the first CUDA input (moved there if the model runs
elsewhere); otherwise they are numpy arrays. Nothing here synchronises: work is queued on each
device's current stream, and the transport synchronises before it answers (spec 15.4 rule 2).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from foundation_ml import DataType, TensorSpec
from foundation_ml._backend import LoadedModel
from foundation_ml._tensors import device_of

__all__ = ["DTYPES", "TorchModel", "torch_dtype"]

_get_num_threads = torch.get_num_threads  # bound once: asked before every call

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
# 1 µs (measured); fall back to the public form if a torch version lacks it. A partial, not a
# lambda: no Python frame per call.
_inference_mode: Callable[[], Any] = (
    functools.partial(torch._C._InferenceMode, True)
    if hasattr(torch._C, "_InferenceMode")
    else torch.inference_mode
)

# Transports hand the model read-only views (shared memory); the model only reads its inputs. The
# filter is this module's calls only (the warning names its caller's module), not the process's:
# a user's own torch.from_numpy of a read-only array still warns. Per call, catch_warnings would
# cost microseconds.
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", category=UserWarning, module=__name__
)


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
        return t.view(torch.int16).numpy().view(DataType.BF16.numpy)  # travels as BF16
    return t.numpy()


def _tensor_arg(
    a: Any, from_numpy: Callable[[np.ndarray], torch.Tensor], device: torch.device
) -> torch.Tensor:
    """A numpy array through ``from_numpy``; a torch tensor as it is, moved only when on another device."""
    if not isinstance(a, torch.Tensor):
        return from_numpy(a)
    return a if a.device == device else a.to(device)


def _outputs_on(result: Any, names: list[str], device: torch.device) -> dict[str, Any]:
    """The module's result as torch tensors on ``device`` (a CUDA request's device)."""
    if isinstance(result, torch.Tensor):
        items: list[tuple[str, Any]] = [(names[0], result)]
    elif isinstance(result, Mapping):
        items = [(k, result[k]) for k in names if k in result]
    elif isinstance(result, tuple | list):
        items = list(zip(names, _in_order(result, names), strict=True))
    else:
        raise TypeError(f"model returned {type(result).__name__}, expected a tensor, tuple or dict")
    return {k: v if v.device == device else v.to(device) for k, v in items}


def _in_order(result: tuple[Any, ...] | list[Any], names: list[str]) -> tuple[Any, ...] | list[Any]:
    """A tuple or list answer, whose items are the declared outputs in order, one each: an item
    more or fewer would shift or drop a name (a model returning ``(logits, probs)`` declared
    ``{"probs": ...}`` answered its logits as ``probs``)."""
    if len(result) != len(names):
        raise TypeError(
            f"model returned a {type(result).__name__} of {len(result)} outputs, but the signature "
            f"declares {len(names)} ({', '.join(names) or 'none'}), matched to them in order: declare "
            "every output it returns, in its order, or return a dict of the declared names"
        )
    return result


class TorchModel(LoadedModel):
    """Calls ``module(*inputs in signature order)``; the result may be a tensor (one output), a
    tuple or list (every declared output, in order) or a dict (outputs by name). Takes numpy arrays and torch
    tensors (see the module docstring); on ``cuda:N`` it declares ``device_tensors``."""

    platform = "pytorch"
    takes_tensors = True

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
        threads: int | None = None,
    ) -> None:
        # torch's intra-op width where the model is loaded (``threads``, or what the loading thread
        # set), applied in every thread that calls it (see _apply_threads)
        if batchable is not None and not isinstance(batchable, bool):  # "no" batched it (truthy)
            raise TypeError(
                "TorchModel: batchable must be True, False or None (told by the signature), "
                f"not {batchable!r}"
            )
        self._threads = threads or torch.get_num_threads()
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
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())  # "cuda": compare inputs' cuda:N
        self._dev = dev
        self._pairs = [(_to_torch(s, dev), s.name) for s in inputs]
        self._out_names = [s.name for s in outputs]
        self._in_names = [s.name for s in inputs]
        # one CPU output that is not BF16: ``.numpy()`` directly
        self._plain_out = dev.type == "cpu" and outputs[0].datatype is not DataType.BF16 if outputs else False

    @property
    def batchable(self) -> bool:
        return super().batchable if self._batchable is None else self._batchable

    def _apply_threads(self) -> None:
        """This model's width in the calling thread, before each call. ``torch.set_num_threads``
        sets OpenMP's thread count for the thread that calls it only (an OpenMP ICV is per
        thread): a serving thread that never called it ran a parallel region of another width,
        whose worker then spin-waits on the other core (measured: 0.8 CPU-s/s burnt by a batched
        server on this 2-vCPU VM). Asked every call (``get_num_threads``, ~40 ns), not
        remembered per thread: two models of different ``threads=`` called in one thread
        each set its own, where a per-thread "done" ran the second at the first's width."""
        if _get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._apply_threads()
        for n in self._in_names:  # the numpy-only path below is the hot one: one check per input
            if type(inputs[n]) is not np.ndarray:
                return self._call_tensors(inputs)
        with _inference_mode():
            args = [conv(inputs[n]) for conv, n in self._pairs]
            result = self.module(*args)
        return self._host_outputs(result, args)

    def _call_tensors(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs with torch tensors: tensors in place (moved only off-device), CUDA outputs kept."""
        self._apply_threads()
        dev = self._dev
        with _inference_mode():
            args = [_tensor_arg(inputs[n], to_t, dev) for to_t, n in self._pairs]
            result = self.module(*args)
        target = device_of(inputs)
        if target is None:  # CPU tensors only: a host request
            return self._host_outputs(result, args)
        out = _outputs_on(result, self._out_names, target)
        for k, v in out.items():  # never hand back an input (the caller's own memory)
            if _is_one_of(v, args):
                out[k] = v.clone()
        return out

    def _host_outputs(self, result: Any, args: list[torch.Tensor]) -> dict[str, np.ndarray]:
        if type(result) is torch.Tensor:
            if _is_one_of(result, args):  # never hand back the input
                result = result.clone()
            return {self._out_names[0]: result.numpy() if self._plain_out else _to_numpy(result)}
        if isinstance(result, Mapping):
            return {k: _to_numpy(result[k]) for k in self._out_names if k in result}
        if isinstance(result, tuple | list):
            names = self._out_names
            return {k: _to_numpy(v) for k, v in zip(names, _in_order(result, names), strict=True)}
        raise TypeError(f"model returned {type(result).__name__}, expected a tensor, tuple or dict")

    def close(self) -> None:
        self.module = _closed
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _is_one_of(value: Any, items: list[torch.Tensor]) -> bool:
    """Whether ``value`` is one of ``items`` itself (a loop: no generator per call)."""
    for item in items:  # noqa: SIM110
        if value is item:
            return True
    return False


def _closed(*args: Any) -> Any:
    raise RuntimeError("the model was unloaded")
