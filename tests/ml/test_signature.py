"""Signatures: every way of declaring a tensor (spec strings, OIP dicts, TensorSpec) is checked alike."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from foundation_ml import DataType, TensorSpec, example_inputs, parse_signature, parse_tensor_spec

BAD_SHAPES = [
    ([-5, 4], ValueError, r"^tensor 'x': dimension -5 is neither a size >= 0 nor -1 \(variable\)"),
    ([-1.7, 784.9], TypeError, r"^tensor 'x': dimension -1\.7 is a float, not an integer"),
    ([True, 4], TypeError, r"^tensor 'x': dimension True is a bool, not an integer"),
    (["4"], TypeError, r"^tensor 'x': dimension '4' is a str, not an integer"),
    ("10", TypeError, r"^tensor 'x': shape must be a list of integers, not str \('10'\)"),
    (None, TypeError, r"^tensor 'x': shape must be a list of integers, not NoneType \(None\)"),
    ([1] * 9, ValueError, r"^tensor 'x': shape has 9 dimensions \(at most 8\)"),
    ([[1] * 100_000], TypeError, r"^tensor 'x': dimension \[\.\.\.\] is a list, not an integer"),
    ({"a": 1}, TypeError, r"^tensor 'x': shape must be a list of integers, not dict \(\{\.\.\.\}\)"),
    ([2**63], ValueError, r"^tensor 'x': dimension 9223372036854775808 is larger than 2\*\*63 - 1"),
]


@pytest.mark.parametrize(("shape", "error", "message"), BAD_SHAPES, ids=[m for _, _, m in BAD_SHAPES])
def test_an_oip_dict_with_a_bad_shape_is_refused_naming_the_tensor_and_value(
    shape: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        TensorSpec.from_dict({"name": "x", "datatype": "FP32", "shape": shape})
    with pytest.raises(error, match=message):  # a list of dicts: the manifest's and metadata's form
        parse_signature([{"name": "x", "datatype": "FP32", "shape": shape}])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FP32[-5, 4]", r"^tensor 'x': dimension -5 is neither a size >= 0 nor -1"),
        ("FP32[1, 1, 1, 1, 1, 1, 1, 1, 4]", r"^tensor 'x': shape has 9 dimensions \(at most 8\)"),
        ("FP32[1-2]", r"^tensor spec 'FP32\[1-2\]' for 'x': dimensions are sizes or -1"),
        ("FP32[1,,784]", r"^tensor spec 'FP32\[1,,784\]' for 'x': dimensions are sizes or -1"),
        ("FP32[-1, 784,]", r"^tensor spec 'FP32\[-1, 784,\]' for 'x': dimensions are sizes or -1"),
        ("FP32[,]", r"^tensor spec 'FP32\[,\]' for 'x': dimensions are sizes or -1"),
    ],
)
def test_a_spec_string_with_a_bad_shape_is_refused_alike(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tensor_spec("x", text)
    with pytest.raises(ValueError, match=message):
        parse_signature({"x": text})


@pytest.mark.parametrize(
    ("sig", "error", "message"),
    [
        ({1: "FP32[-1]"}, TypeError, r"^tensor name must be a str, not int \(1\)"),
        ({None: "FP32[-1]"}, TypeError, r"^tensor name must be a str, not NoneType"),
        (
            {"x": 5},
            TypeError,
            r"^tensor 'x': a spec is a string such as 'FP32\[-1, 784\]' or a TensorSpec, not int",
        ),
        ({"x": None}, TypeError, r"^tensor 'x': a spec is a string .* not NoneType"),
        (
            {"x": TensorSpec("y", DataType.FP32, (-1,))},
            ValueError,
            r"^tensor 'x' is given a TensorSpec named 'y'",
        ),
    ],
)
def test_the_mapping_form_is_taken_as_written_not_coerced(
    sig: Any, error: type[Exception], message: str
) -> None:
    """A key that is no name, or a spec that is no spec string, is an error naming it: not
    str()-ed into a tensor called '1' or 'None', nor a TensorSpec served under another name."""
    with pytest.raises(error, match=message):
        parse_signature(sig)
    spec = TensorSpec("x", DataType.FP32, (-1,))
    assert parse_signature({"x": spec, "y": "FP32[]"}) == (spec, TensorSpec("y", DataType.FP32, ()))


@pytest.mark.parametrize("shape", [(-5,), (1,) * 9, [1, 2]])
def test_a_tensor_spec_built_directly_is_checked_too(shape: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"^tensor 'x': "):
        TensorSpec("x", DataType.FP32, shape)


def test_a_shape_is_described_as_declared() -> None:
    spec = parse_tensor_spec("x", "FP32[-1, 0, 784]")
    assert spec.describe() == "x: FP32[-1, 0, 784]"
    assert parse_tensor_spec("x", spec.describe().split(": ", 1)[1]) == spec


@pytest.mark.parametrize(
    ("d", "error", "message"),
    [
        ({"name": 5, "datatype": "FP32", "shape": [1]}, TypeError, r"^tensor name must be a str, not int"),
        ({"name": "x", "datatype": None, "shape": [1]}, TypeError, r"^tensor 'x': datatype must be a string"),
        (
            {"name": "x", "datatype": "FP33", "shape": [1]},
            ValueError,
            r"^tensor 'x': unknown datatype 'FP33'",
        ),
        ({"name": "x", "shape": [1]}, ValueError, r"lacks datatype"),
        ([1], TypeError, r"^a tensor is an object with name, datatype and shape, not list"),
    ],
)
def test_an_oip_dict_is_taken_as_written_not_coerced(d: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TensorSpec.from_dict(d)


def test_the_dimension_limit_is_the_shm_protocols() -> None:
    from foundation_ml._types import MAX_NDIM

    layout = pytest.importorskip("foundation_shm._layout")
    assert MAX_NDIM == layout.MAX_NDIM
    assert parse_tensor_spec("x", f"FP32[{', '.join(['1'] * MAX_NDIM)}]").shape == (1,) * MAX_NDIM


def test_an_example_that_would_be_absurdly_large_is_refused_not_allocated() -> None:
    from foundation_ml._signature import MAX_EXAMPLE_BYTES, example_shape

    huge = parse_signature({"x": "FP32[-1, 1000000000000000]"})
    with pytest.raises(
        ValueError, match=r"^tensor x: FP32\[-1, 1000000000000000\]: its example .* would take"
    ):
        example_inputs(huge)
    half = MAX_EXAMPLE_BYTES // 2
    assert example_shape(parse_tensor_spec("x", f"UINT8[-1, {half}]"), batch=2) == (2, half)
    with pytest.raises(ValueError, match=rf"would take {MAX_EXAMPLE_BYTES + 2} bytes \(at most"):
        example_shape(parse_tensor_spec("x", f"UINT8[-1, {half + 1}]"), batch=2)
    assert example_inputs(parse_signature({"x": "FP32[-1, 4]"}), batch=3)["x"].shape == (3, 4)


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, b"ab", "x", {"a": 1}])
def test_a_value_that_is_no_array_is_invalid_input_naming_it(runtime: Any, value: Any) -> None:
    """A request handing the runtime a list (or bytes, a float) for an input was answered
    InternalError "AttributeError: 'list' object has no attribute 'ndim'": the check, not the
    caller, was blamed, and nothing said which input or what was expected."""
    from foundation_ml import FunctionModel, InferenceRequest
    from foundation_ml._signature import validate_inputs
    from foundation_ml.errors import InvalidInput

    specs = parse_signature({"w": "FP32[-1]", "x": "FP32[-1]"})
    good = np.zeros(2, np.float32)
    message = (
        rf"^model 'm': input x is {type(value).__name__}, not an array "
        r"\(expected inputs: w: FP32\[-1\], x: FP32\[-1\]\)$"
    )
    with pytest.raises(InvalidInput, match=message):
        validate_inputs("m", specs, {"w": good, "x": value})
    runtime.register_model("m", FunctionModel(lambda w, x: x, inputs=specs, outputs={"y": "FP32[-1]"}))
    got: list[object] = []
    runtime(InferenceRequest("m", {"w": good, "x": value}, id=3), got.append)
    assert isinstance(got[0], InvalidInput) and got[0].request_id == 3
    assert re.match(message, str(got[0]))
