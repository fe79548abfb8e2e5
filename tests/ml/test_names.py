"""Names every transport can carry: 1-63 UTF-8 bytes (versions 1-15), printable."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation_ml import parse_signature
from foundation_ml._names import MAX_NAME_BYTES, MAX_VERSION_BYTES, check_name

from .conftest import affine_model


@given(st.text(max_size=80) | st.text(alphabet=" ab\t", max_size=6))
def test_a_name_is_taken_exactly_when_it_fits_the_wire_prints_and_has_no_space_at_either_end(
    text: str,
) -> None:
    fits = 0 < len(text.encode()) <= MAX_NAME_BYTES and text.isprintable()
    if fits and text == text.strip(" "):
        assert check_name(text, "name") is text
    elif fits:
        with pytest.raises(ValueError, match=r"^name .* must not start or end with a space"):
            check_name(text, "name")
    else:
        with pytest.raises(ValueError, match=r"^name .* must be 1-63 UTF-8 bytes of printable characters"):
            check_name(text, "name")


@pytest.mark.parametrize("value", [" ", " m", "m ", "  "])
def test_a_name_with_a_space_at_either_end_is_refused_where_it_enters(runtime, value: str) -> None:
    """``"mnist "`` would be served apart from ``"mnist"``, and no listing shows the difference."""
    with pytest.raises(ValueError, match=r"the model name .* must not start or end with a space"):
        runtime.register_model(value, affine_model())
    with pytest.raises(ValueError, match=r"the version .* must not start or end with a space"):
        runtime.register_model("m", affine_model(), version=value)
    with pytest.raises(ValueError, match="must not start or end with a space"):
        parse_signature({value: "FP32[-1]"})
    assert runtime.registry.names() == []
    assert check_name("a model", "name") == "a model"  # a space within is printable text


def test_a_lone_surrogate_is_refused_like_any_unprintable_name() -> None:
    with pytest.raises(ValueError, match="must be 1-63 UTF-8 bytes of printable characters"):
        check_name("m\ud800", "name")  # from JSON's "\ud800": no UTF-8 encoding at all


def test_the_limit_counts_bytes_not_characters() -> None:
    assert check_name("é" * 31, "name")  # 62 bytes
    with pytest.raises(ValueError):
        check_name("é" * 32, "name")  # 64 bytes, 32 characters
    assert check_name("v" * MAX_VERSION_BYTES, "version", MAX_VERSION_BYTES)
    with pytest.raises(ValueError, match="must be 1-15 UTF-8 bytes"):
        check_name("v" * 16, "version", MAX_VERSION_BYTES)


@pytest.mark.parametrize("value", [5, None, b"m", ["m"]])
def test_a_name_that_is_not_a_str_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=f"^model name must be a str, not {type(value).__name__}"):
        check_name(value, "model name")


@pytest.mark.parametrize(
    ("call", "value", "error", "message"),
    [
        ("unload_model", None, TypeError, r"^unload_model: the model name must be a str, not NoneType"),
        ("unload_model", 1, TypeError, r"^unload_model: the model name must be a str, not int \(1\)"),
        ("unload_model", "", ValueError, r"^unload_model: the model name '' must be 1-63 UTF-8 bytes"),
        ("unload_model", "m ", ValueError, r"^unload_model: the model name 'm ' must not start or end"),
        ("versions", None, TypeError, r"^versions: the model name must be a str, not NoneType \(None\)"),
        ("versions", b"m", TypeError, r"^versions: the model name must be a str, not bytes \(b'm'\)"),
        ("metadata", 1, TypeError, r"^metadata: the model name must be a str, not int \(1\)"),
    ],
)
def test_a_model_name_that_no_model_could_have_is_refused_naming_the_argument(
    runtime, call: str, value: Any, error: type[Exception], message: str
) -> None:
    """They were ModelNotFound 'no such model (serving: m)', a model of the name given looked
    for: unload_model(None) read as if a model named None was not served."""
    runtime.register_model("m", affine_model())
    with pytest.raises(error, match=message):
        getattr(runtime, call)(value)
    assert runtime.versions("m") == ["1"]
