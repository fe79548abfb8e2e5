"""Model signatures: parse ``"FP32[-1, 784]"`` specs, validate inputs (numpy or torch), make examples."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ._datatypes import DataType
from ._names import check_name
from ._tensors import is_tensor
from ._types import TensorSpec, check_shape
from .errors import InvalidInput

__all__ = [
    "MAX_EXAMPLE_BYTES",
    "SignatureLike",
    "compile_validator",
    "example_inputs",
    "example_shape",
    "parse_signature",
    "parse_tensor_spec",
    "validate_inputs",
]

#: What a caller may pass as a signature: ``{"x": "FP32[-1, 784]"}``, a list of ``TensorSpec``,
#: or a list of OIP dicts (``{"name": "x", "datatype": "FP32", "shape": [-1, 784]}``).
SignatureLike = Mapping[str, "str | TensorSpec"] | Iterable["TensorSpec | Mapping[str, Any]"]

_SPEC = re.compile(r"^\s*([A-Za-z0-9]+)\s*\[\s*([-\d,\s]*)\]\s*$")
_DIM = re.compile(r"^-?\d+$")

#: The largest example tensor (warm-up, ``foundation infer`` without ``--input``): a signature
#: whose example would be larger is refused rather than allocated.
MAX_EXAMPLE_BYTES = 1 << 30


def parse_tensor_spec(name: str, text: str) -> TensorSpec:
    """``parse_tensor_spec("x", "FP32[-1, 784]")``; the format ``TensorSpec.describe()`` writes."""
    m = _SPEC.match(text)
    if m is None:
        raise ValueError(f"tensor spec {text!r} for {name!r} is not of the form 'FP32[-1, 784]'")
    dims = m.group(2).replace(" ", "")
    tokens = dims.split(",") if dims else []  # "FP32[]": a scalar; "FP32[1,,2]" is no shape
    if not all(_DIM.match(t) for t in tokens):
        raise ValueError(f"tensor spec {text!r} for {name!r}: dimensions are sizes or -1 (variable)")
    return TensorSpec(name, DataType.from_name(m.group(1)), check_shape([int(t) for t in tokens], name))


def parse_signature(sig: SignatureLike | None) -> tuple[TensorSpec, ...]:
    """Normalise any accepted signature form to a tuple of ``TensorSpec``."""
    if sig is None:
        return ()
    if isinstance(sig, Mapping):
        return tuple(_mapped_spec(k, v) for k, v in sig.items())
    out = []
    for item in sig:
        out.append(item if isinstance(item, TensorSpec) else TensorSpec.from_dict(item))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"signature names tensors more than once: {names}")
    return tuple(out)


def _mapped_spec(name: Any, spec: Any) -> TensorSpec:
    """One entry of the mapping form, ``{"x": "FP32[-1, 784]"}``: taken as written, not coerced."""
    check_name(name, "tensor name")
    if isinstance(spec, TensorSpec):
        if spec.name != name:
            raise ValueError(f"tensor {name!r} is given a TensorSpec named {spec.name!r}")
        return spec
    if type(spec) is not str:
        raise TypeError(
            f"tensor {name!r}: a spec is a string such as 'FP32[-1, 784]' or a TensorSpec, "
            f"not {type(spec).__name__}"
        )
    return parse_tensor_spec(name, spec)


def describe(specs: Iterable[TensorSpec]) -> str:
    return ", ".join(s.describe() for s in specs)


def validate_inputs(
    model: str, specs: tuple[TensorSpec, ...], inputs: Mapping[str, np.ndarray], request_id: int = 0
) -> None:
    """Raise ``InvalidInput`` stating the expected signature unless ``inputs`` match ``specs``."""
    if not compile_validator(specs)(inputs):
        raise InvalidInput(mismatch(specs, inputs), model=model, request_id=request_id)


def compile_validator(specs: tuple[TensorSpec, ...]) -> Callable[[Mapping[str, np.ndarray]], bool]:
    """A fast check of ``inputs`` against ``specs`` (names, dtypes, ranks, fixed dimensions), built
    once per model so the hot path does no lookups beyond the arrays' own attributes."""
    shared = (DataType.UINT8, DataType.UINT16, DataType.BF16, DataType.BYTES)  # told apart by a mark
    checks = [
        (
            s.name,
            s.datatype.numpy,
            s.datatype,
            len(s.shape),
            tuple((i, d) for i, d in enumerate(s.shape) if d >= 0),
            s.datatype in shared,
        )
        for s in specs
    ]
    count = len(checks)
    from_torch = DataType.from_torch

    def valid(inputs: Mapping[str, np.ndarray]) -> bool:
        if len(inputs) != count:
            return False
        try:
            for name, dtype, datatype, ndim, fixed, marked in checks:
                array: Any = inputs.get(name)
                if array.ndim != ndim:  # (missing: None has no ndim)
                    return False
                if array.dtype != dtype and not (is_tensor(array) and from_torch(array.dtype) is datatype):
                    return False  # a torch tensor's dtype is compared through the datatype table
                if (
                    marked
                    and type(array) is np.ndarray
                    and array.dtype.metadata
                    and not datatype.takes(array.dtype)
                ):
                    return False  # BF16 bits for a UINT16 (or BYTES for UINT8): equal numpy dtypes
                shape = array.shape
                for i, d in fixed:
                    if shape[i] != d:
                        return False
        except AttributeError:  # missing, or no array at all (a list, bytes): ``mismatch`` says which
            return False
        return True

    return valid


def problems(specs: tuple[TensorSpec, ...], values: Mapping[str, Any], *, side: str = "input") -> list[str]:
    """Each way ``values`` break ``specs`` (empty: none): a model's inputs (``side="input"``) or its
    answer (``side="output"``, whose values may be anything a model returns)."""
    role, stray = ("expected", "unexpected") if side == "input" else ("declared", "undeclared")
    want = {s.name: s for s in specs}
    found = []
    missing = [n for n in want if n not in values]
    extra = [str(n) for n in values if n not in want]
    if missing:
        found.append(f"missing {side}(s) {', '.join(missing)}")
    if extra:
        found.append(f"{stray} {side}(s) {', '.join(extra)}")
    for name, value in values.items():
        spec = want.get(name)
        if spec is None:
            continue
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            found.append(f"{side} {name} is {type(value).__name__}, not an array")
        elif not spec.accepts(value):
            got = _describe_value(value)
            found.append(f"{side} {name} is {got}, {role} {spec.describe().split(': ', 1)[1]}")
    return found


def mismatch(specs: tuple[TensorSpec, ...], values: Mapping[str, Any], *, side: str = "input") -> str:
    """:func:`problems` in one line, with the signature: ``missing input(s) x (expected inputs: ...)``."""
    role = "expected" if side == "input" else "declared"
    return f"{'; '.join(problems(specs, values, side=side))} ({role} {side}s: {describe(specs)})"


def _describe_value(array: Any) -> str:
    """``FP32[2, 3]``; a torch tensor also names where it lies (``FP32[2, 3] (torch, cuda:0)``)."""
    if is_tensor(array):
        dt = DataType.from_torch(array.dtype)
        kind = dt.name if dt is not None else f"torch {array.dtype}"
        return f"{kind}{list(array.shape)} (torch, {array.device})"
    try:
        return f"{DataType.from_numpy(array.dtype).name}{list(array.shape)}"
    except ValueError:
        return f"numpy {array.dtype}{list(array.shape)}"


def example_shape(spec: TensorSpec, batch: int = 1) -> tuple[int, ...]:
    """The shape of ``spec``'s example (``-1`` dimensions become ``batch``); a ``ValueError`` naming
    the tensor when that example would take more than ``MAX_EXAMPLE_BYTES``."""
    shape = tuple(batch if d < 0 else d for d in spec.shape)
    size = math.prod(shape) * spec.datatype.numpy.itemsize
    if size > MAX_EXAMPLE_BYTES:
        shown = str(size) if size < 10**30 else f"about 10**{len(str(size)) - 1}"
        raise ValueError(
            f"tensor {spec.describe()}: its example (variable dimensions as {batch}) "
            f"would take {shown} bytes (at most {MAX_EXAMPLE_BYTES})"
        )
    return shape


def example_inputs(specs: Iterable[TensorSpec], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs matching ``specs`` (``-1`` dimensions become ``batch``); a ``ValueError``
    when one would take more than ``MAX_EXAMPLE_BYTES`` (``example_shape``)."""
    shaped = [(spec, example_shape(spec, batch)) for spec in specs]  # all checked before any is made
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec, shape in shaped:
        kind = spec.datatype.numpy.kind
        if spec.datatype is DataType.BF16 or spec.datatype is DataType.BYTES:
            array = np.zeros(shape, spec.datatype.numpy)
        elif kind == "f":
            array = rng.standard_normal(shape).astype(spec.datatype.numpy)
        elif kind == "b":
            array = rng.integers(0, 2, shape).astype(bool)
        else:
            array = rng.integers(0, 10, shape).astype(spec.datatype.numpy)
        out[spec.name] = array
    return out
