"""Input signature checking, as properties: a request is accepted iff it matches the signature, and
the error on a mismatch names each input at fault and states the expected signature.

The reference here is written from the rules (docs/serving.md, ``DataType``): the same names, and
per input the datatype (BF16 and BYTES also take plain uint16 and uint8 bits, never bits marked as
another datatype; a torch tensor by its torch dtype), the rank, and every fixed dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml import DataType, TensorSpec, parse_signature
from foundation_ml._names import MAX_NAME_BYTES
from foundation_ml._signature import compile_validator, describe, validate_inputs
from foundation_ml.errors import InvalidInput

torch = pytest.importorskip("torch")

MARKED = {DataType.BF16: DataType.UINT16, DataType.BYTES: DataType.UINT8}
# numpy dtypes as the protocol reads them, written out (not DataType.from_numpy: the reference)
PLAIN = {
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
    "float32": DataType.FP32,
    "float64": DataType.FP64,
}
TORCH = {d: getattr(torch, "bfloat16" if d is DataType.BF16 else d.numpy.name) for d in DataType}
del TORCH[DataType.BYTES]  # torch has no such dtype

names = st.text(
    st.sampled_from([*"xyz_.:-é"]) | st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
    min_size=1,
    max_size=8,
).filter(lambda s: s.isprintable() and s.strip() == s and len(s.encode()) <= MAX_NAME_BYTES)
dims = st.sampled_from([-1, -1, 0, 1, 2, 3])


@st.composite
def signatures(draw: st.DrawFn) -> tuple[TensorSpec, ...]:
    tensor_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    return tuple(
        TensorSpec(n, draw(st.sampled_from(list(DataType))), tuple(draw(st.lists(dims, max_size=4))))
        for n in tensor_names
    )


def _as_numpy(datatype: DataType, shape: tuple[int, ...], marked: bool = True) -> np.ndarray:
    a = np.zeros(shape, datatype.numpy)
    return a if marked else a.view(np.dtype(a.dtype.str))  # the same bits, unmarked


@st.composite
def values(draw: st.DrawFn, spec: TensorSpec) -> Any:
    """A value for ``spec``: matching it, or off in one way (datatype, rank, a dimension, the
    byte order, the mark, not an array at all), numpy or a torch tensor."""
    shape = tuple(draw(st.integers(0, 3)) if d == -1 else d for d in spec.shape)
    datatype = spec.datatype
    how = draw(
        st.sampled_from(
            ["match", "match", "match", "datatype", "rank", "dimension", "plain", "swapped", "torch", "junk"]
        )
    )
    if how == "datatype":
        datatype = draw(st.sampled_from(list(DataType)))
    elif how == "rank":
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=5)))
    elif how == "dimension" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape = (*shape[:i], draw(st.integers(0, 4)), *shape[i + 1 :])
    elif how == "plain":  # BF16 or BYTES bits a numpy caller could not mark; other types unchanged
        return _as_numpy(datatype, shape, marked=False)
    elif how == "swapped" and datatype.itemsize > 1:
        return _as_numpy(datatype, shape).astype(datatype.numpy.newbyteorder())
    elif how == "torch":
        datatype = draw(
            st.sampled_from([datatype, *TORCH]) if datatype in TORCH else st.sampled_from(list(TORCH))
        )
        return torch.zeros(shape, dtype=TORCH[datatype])
    elif how == "junk":
        return draw(st.sampled_from([[1.0, 2.0], 3.0, b"abc", "x", None, {"a": 1}, np.float32(1.0)]))
    return _as_numpy(datatype, shape)


def _datatype_of(value: Any) -> DataType | None:
    """The datatype ``value`` holds, by the rules; None for no datatype (not an array, another
    byte order, an unknown dtype)."""
    if isinstance(value, torch.Tensor):
        return next((d for d, t in TORCH.items() if t == value.dtype), None)
    if not isinstance(value, np.ndarray | np.generic):
        return None
    dtype = value.dtype
    if not dtype.isnative and dtype.itemsize > 1:  # marked or not
        return None
    mark = (dtype.metadata or {}).get("datatype")
    if mark is not None:
        return {"BF16": DataType.BF16, "BYTES": DataType.BYTES}[mark]
    return PLAIN.get(dtype.name)


def _fits(spec: TensorSpec, value: Any) -> bool:
    got = _datatype_of(value)
    if got is None:
        return False
    if got is not spec.datatype and not (
        not isinstance(value, torch.Tensor) and MARKED.get(spec.datatype) is got
    ):
        return False
    shape = tuple(value.shape)
    return len(shape) == len(spec.shape) and all(d in (-1, s) for d, s in zip(spec.shape, shape, strict=True))


@st.composite
def requests(draw: st.DrawFn, specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    inputs = {s.name: draw(values(s)) for s in specs}
    if draw(st.integers(0, 5)) == 0 and inputs:  # an input left out
        del inputs[draw(st.sampled_from(sorted(inputs)))]
    if draw(st.integers(0, 5)) == 0:  # one the signature does not name
        extra = draw(names.filter(lambda n: n not in inputs and all(n != s.name for s in specs)))
        inputs[extra] = np.zeros(1, np.float32)
    return inputs


@settings(max_examples=300, deadline=None)
@given(data=st.data(), specs=signatures())
def test_a_request_is_accepted_iff_it_matches_and_a_mismatch_names_the_input_and_the_signature(
    data: st.DataObject, specs: tuple[TensorSpec, ...]
) -> None:
    inputs = data.draw(requests(specs), label="inputs")
    want = {s.name: s for s in specs}
    at_fault = sorted(
        [n for n in want if n not in inputs]
        + [n for n in inputs if n not in want]
        + [n for n, v in inputs.items() if n in want and not _fits(want[n], v)]
    )
    assert compile_validator(specs)(inputs) is (not at_fault)
    if not at_fault:
        validate_inputs("m", specs, inputs, request_id=7)
        return
    with pytest.raises(InvalidInput) as info:
        validate_inputs("m", specs, inputs, request_id=7)
    error = info.value
    assert (error.model, error.request_id) == ("m", 7)
    assert error.message.endswith(f"(expected inputs: {describe(specs)})")
    said = error.message[: -len(f" (expected inputs: {describe(specs)})")]
    for name in at_fault:
        assert name in said, f"the error does not name input {name!r}: {error.message}"


@settings(max_examples=100, deadline=None)
@given(specs=signatures())
def test_a_signature_reads_back_from_its_description_and_its_oip_dicts(specs: tuple[TensorSpec, ...]) -> None:
    assert parse_signature([s.as_dict() for s in specs]) == specs
    for spec in specs:
        assert parse_signature({spec.name: spec.describe().split(": ", 1)[1]}) == (spec,)


def test_every_spec_accepts_what_the_validator_accepts() -> None:
    """The runtime's fast check and ``TensorSpec.accepts`` (which the error is built from) agree
    on the cases the property draws most rarely."""
    spec = TensorSpec("x", DataType.BF16, (-1, 2))
    for value, ok in [
        (np.zeros((1, 2), np.uint16), True),
        (np.zeros((1, 2), DataType.BF16.numpy), True),
        (np.zeros((1, 2), DataType.BYTES.numpy), False),
        (torch.zeros((1, 2), dtype=torch.bfloat16), True),
        (torch.zeros((1, 2), dtype=torch.uint16), False),
    ]:
        assert compile_validator((spec,))({"x": value}) is ok is spec.accepts(value) is _fits(spec, value)
