"""Request, response and model-metadata types, in the Open Inference Protocol's vocabulary.

Tensors are numpy arrays keyed by name (a transport may hand the server read-only views on
shared memory), or torch tensors where a transport or client passes them (CUDA IPC).
``deadline_ns`` is absolute ``CLOCK_MONOTONIC`` time (``time.monotonic_ns()``), which every
process on a Linux host shares, so a deadline survives crossing the boundary.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from ._datatypes import DataType
from ._names import check_name
from ._tensors import is_tensor

__all__ = [
    "MAX_NDIM",
    "ClientCounters",
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "TensorSpec",
    "check_shape",
    "deadline_after",
]

#: The most dimensions a tensor may have: the shm protocol's fixed shape field
#: (``docs/protocol/shm.md``), the tightest transport we have.
MAX_NDIM = 8
MAX_DIM = 2**63 - 1  # numpy's largest dimension (the shm protocol's field is 64 bits)

Parameters = Mapping[str, "str | int | float | bool"]


def deadline_after(timeout: float | None) -> int:
    """The absolute deadline ``timeout`` seconds from now, in monotonic ns (0: no deadline)."""
    return 0 if timeout is None else time.monotonic_ns() + int(timeout * 1e9)


def seconds_of(value: Any) -> float | None:
    """``value`` as seconds if it is a real number (an int, a float, numpy's ints and floats),
    else None (a bool, a str, None): what every timeout check takes, before its range."""
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def call_deadline(request_deadline_ns: int, timeout: float | None) -> int:
    """A transport client's deadline for one call, in monotonic ns (0: none): the request's own
    (``deadline_ns``), or ``timeout`` seconds from now if that is sooner. A ``timeout`` that is no
    number of seconds in [0, 1e9] (NaN, a bool, a string) is a ``ValueError`` naming it, raised
    before anything is sent: the rule every transport's ``infer`` keeps."""
    if timeout is None:
        return request_deadline_ns
    seconds = timeout if type(timeout) is float or type(timeout) is int else seconds_of(timeout)
    if seconds is None or not 0 <= seconds <= 1e9:  # NaN fails too
        raise ValueError(f"timeout must be a number of seconds in [0, 1e9] or None, not {timeout!r}")
    mine = time.monotonic_ns() + int(seconds * 1e9)
    return min(mine, request_deadline_ns) if request_deadline_ns else mine


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


def check_shape(shape: Any, tensor: str) -> tuple[int, ...]:
    """``shape`` as a tuple if it is a list (or tuple) of at most ``MAX_NDIM`` integers, each a size
    ``>= 0`` or ``-1`` (variable); else a ``TypeError`` or ``ValueError`` naming ``tensor`` and the
    bad value. Every way of declaring a signature (specs, OIP dicts, manifests) goes through here."""
    if not isinstance(shape, list | tuple):
        raise TypeError(
            f"tensor {tensor!r}: shape must be a list of integers, "
            f"not {type(shape).__name__} ({_brief(shape)})"
        )
    if len(shape) > MAX_NDIM:
        raise ValueError(f"tensor {tensor!r}: shape has {len(shape)} dimensions (at most {MAX_NDIM})")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(
                f"tensor {tensor!r}: dimension {_brief(d)} is a {type(d).__name__}, not an integer; "
                "dimensions are sizes >= 0 or -1 (variable)"
            )
        if d < -1:
            raise ValueError(f"tensor {tensor!r}: dimension {d} is neither a size >= 0 nor -1 (variable)")
        if d > MAX_DIM:
            shown = str(d) if d.bit_length() < 128 else f"of {d.bit_length()} bits"
            raise ValueError(f"tensor {tensor!r}: dimension {shown} is larger than 2**63 - 1")
    return tuple(int(d) for d in shape)


def _brief(value: Any) -> str:
    """A bad value as an error shows it: a scalar's repr (cut short), a container only bracketed
    (its repr could be huge, or nested too deeply to print)."""
    for kind, shown in ((list, "[...]"), (tuple, "(...)"), (dict, "{...}")):
        if isinstance(value, kind):
            return shown
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "<a huge int>"
    return text if len(text) <= 40 else f"{text[:37]}..."


def _valid_shape(spec: TensorSpec, _: object, shape: Any) -> None:
    if type(shape) is not tuple:
        raise TypeError(f"tensor {spec.name!r}: shape must be a tuple, not {type(shape).__name__}")
    check_shape(shape, spec.name)


@attrs.frozen
class TensorSpec:
    """One input or output of a model signature; ``-1`` in ``shape`` is a variable dimension."""

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "tensor name"))
    datatype: DataType
    shape: tuple[int, ...] = attrs.field(validator=_valid_shape)

    def accepts(self, array: np.ndarray) -> bool:
        """Whether ``array`` (a numpy array, or a torch tensor on any device) fits this spec."""
        if array.ndim != len(self.shape):
            return False
        if is_tensor(array):
            if not self._torch_dtype_ok(array):
                return False
        elif not self.datatype.takes(array.dtype):  # BF16 bits are no UINT16 (the dtype's mark)
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, array.shape, strict=True))

    def _torch_dtype_ok(self, tensor: Any) -> bool:
        return DataType.from_torch(tensor.dtype) is self.datatype

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {self.datatype.name}[{dims}]"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype.name, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        """From an OIP dict, ``{"name": "x", "datatype": "FP32", "shape": [-1, 784]}``: the name
        and datatype strings, the shape a list of integers (``check_shape``); nothing is coerced."""
        if not isinstance(d, Mapping):
            raise TypeError(
                f"a tensor is an object with name, datatype and shape, not {type(d).__name__} {d!r:.70}"
            )
        missing = [k for k in ("name", "datatype", "shape") if k not in d]
        if missing:
            who = f"tensor {d['name']!r:.70}" if isinstance(d.get("name"), str) else "a tensor"
            raise ValueError(f"{who} lacks {', '.join(missing)}")
        name = check_name(d["name"], "tensor name")
        datatype = d["datatype"]
        if type(datatype) is not str:
            raise TypeError(
                f"tensor {name!r}: datatype must be a string such as 'FP32', not {_brief(datatype)}"
            )
        try:
            dt = DataType.from_name(datatype)
        except ValueError as exc:
            raise ValueError(f"tensor {name!r}: {exc}") from None
        return cls(name, dt, check_shape(d["shape"], name))


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


def _count(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    """A count: an int (not a bool) of 0 or more."""
    if type(value) is not int:
        raise TypeError(
            f"ClientCounters.{attribute.name} must be an int, not {type(value).__name__} {value!r}"
        )
    if value < 0:
        raise ValueError(f"ClientCounters.{attribute.name} must be 0 or more, not {value}")


@attrs.frozen
class ClientCounters:
    """What a transport client did on its own to keep calls going, since it was made: a snapshot
    (``InferenceClient.counters()``, ``TransportClient.counters()``). Each count starts at 0 and
    only grows; a closed client keeps its counts. The shm transport's are spec 10.5's
    (docs/protocol/shm.md); a transport whose client never reconnects nor sends a request twice
    (``inproc``) counts nothing.

    ``reconnects``: connections the client made after its first: its server had died or stopped
    (shm: or its region was lost), and a restarted one took the client's next call. A connect that
    fails is not counted, nor more channels claimed on the same connection.

    ``resends``: calls (``infer``, ``ainfer``, ``metadata``, ``stats``) sent once more on a new
    connection because their server was found gone before a handler saw the request, each at
    most once. A call whose reconnect fails, or that fails "gone" because a handler may have run
    its request, is not counted: only a call that was answered, or failed on the new server, is."""

    reconnects: int = attrs.field(default=0, validator=_count)
    resends: int = attrs.field(default=0, validator=_count)
