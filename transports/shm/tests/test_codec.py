"""Encoding and decoding: round trips (hypothesis), typed errors, bounds checks."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from foundation_shm._codec import (
    Limits,
    cut_message,
    encode_params,
    layout,
    request_payload_size,
    response_payload_size,
    write_request,
    write_response,
)
from foundation_shm._decoders import decode_request, decode_response
from foundation_shm._layout import MessageFlag
from foundation_shm._vector_messages import _reseal
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml import DataType
from foundation_ml.errors import BadChecksum, BadMagic, BadVersion, InvalidInput, TooLarge

_DTYPES = list(DataType)
_names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=20)
_tensor = st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 4), min_size=0, max_size=8).map(tuple))


def _encode_request(inputs: dict[str, np.ndarray], **kw: object) -> bytearray:
    specs = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in inputs.items()]
    params = kw.pop("params", b"")
    assert isinstance(params, bytes)
    n_out = len(kw.get("outputs", ()))  # type: ignore[arg-type]
    refs, end = layout(specs, request_payload_size(len(specs), n_out, len(params)))
    buf = bytearray(end)
    for ref, a in zip(refs, inputs.values(), strict=True):
        buf[ref.offset : ref.offset + ref.size] = a.tobytes()
    write_request(buf, inputs=refs, params=params, **kw)  # type: ignore[arg-type]
    return buf


@settings(max_examples=150, deadline=None)
@given(
    tensors=st.dictionaries(_names, _tensor, max_size=5),
    request_id=st.integers(0, 2**64 - 1),
    deadline=st.integers(0, 2**63),
    model=_names,
    outputs=st.lists(_names, max_size=3, unique=True),
    data_crc=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_request_round_trip(
    tensors: dict[str, tuple[DataType, tuple[int, ...]]],
    request_id: int,
    deadline: int,
    model: str,
    outputs: list[str],
    data_crc: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    inputs = {
        n: rng.integers(0, 255, size=int(np.prod(shape)) * d.itemsize, dtype=np.uint8)
        .view(d.numpy)
        .reshape(shape)
        for n, (d, shape) in tensors.items()
    }
    buf = _encode_request(
        inputs,
        request_id=request_id,
        model=model,
        deadline_ns=deadline,
        outputs=tuple(outputs),
        params=b'{"k":1}',
        flags=MessageFlag.DATA_CRC if data_crc else 0,
    )
    got = decode_request(bytes(buf))
    assert (got.request_id, got.model, got.deadline_ns, got.outputs) == (
        request_id,
        model,
        deadline,
        tuple(outputs),
    )
    assert got.params == {"k": 1}
    assert list(got.inputs) == list(inputs)
    for name, array in inputs.items():
        assert got.inputs[name].dtype == array.dtype
        assert DataType.from_numpy(got.inputs[name].dtype) is tensors[name][0]  # BF16, BYTES too
        assert got.inputs[name].shape == array.shape
        assert got.inputs[name].tobytes() == array.tobytes()


@settings(max_examples=100, deadline=None)
@given(buf=st.binary(min_size=0, max_size=2048))
def test_decoding_garbage_raises_typed_errors_only(buf: bytes) -> None:
    from foundation_ml.errors import InferenceError

    for decode in (decode_request, decode_response):
        try:
            decode(buf)
        except InferenceError:
            pass


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 32 + 112 + 256 - 1), value=st.integers(0, 255))
def test_any_single_byte_change_of_header_or_descriptors_is_caught(position: int, value: int) -> None:
    """The CRC covers every header and descriptor byte: a flipped byte never decodes silently."""
    buf = _encode_request({"x": np.arange(6, dtype=np.float32)}, request_id=9, model="m")
    if buf[position] == value:
        return
    buf[position] = value
    with pytest.raises((BadChecksum, BadMagic, BadVersion, InvalidInput, TooLarge)) as info:
        decode_request(bytes(buf))
    assert info.value.code != 0


def test_response_round_trip_with_text_and_error() -> None:
    out = np.arange(4, dtype=np.int16)
    refs, end = layout([("y", DataType.INT16, (4,))], response_payload_size(1, 5, 0))
    buf = bytearray(end)
    buf[refs[0].offset : refs[0].offset + 8] = out.tobytes()
    write_response(buf, request_id=5, status=9, outputs=refs, text=b"boom!", model="m", required_bytes=7)
    got = decode_response(bytes(buf))
    assert (got.request_id, got.status, got.text, got.required_bytes, got.model) == (5, 9, "boom!", 7, "m")
    np.testing.assert_array_equal(got.outputs["y"], out)


def test_caps_on_tensor_count_and_bytes() -> None:
    buf = _encode_request({f"t{i}": np.zeros(2, np.uint8) for i in range(3)}, request_id=1, model="m")
    with pytest.raises(TooLarge, match="at most 2"):
        decode_request(bytes(buf), limits=Limits(max_tensors=2))
    with pytest.raises(TooLarge, match="at most 5"):
        decode_request(bytes(buf), limits=Limits(max_bytes=5))


def test_data_offset_overflowing_the_area_is_rejected_not_wrapped() -> None:
    buf = _encode_request({"x": np.zeros(4, np.float32)}, request_id=1, model="m")
    struct.pack_into("<Q", buf, 32 + 112 + 136, 2**64 - 8)
    from foundation_shm._vector_messages import _reseal

    with pytest.raises(InvalidInput, match="outside the area"):
        decode_request(bytes(_reseal(buf)))


def test_names_too_long_are_refused_at_encoding() -> None:
    with pytest.raises(InvalidInput, match="at most 63"):
        _encode_request({"x" * 64: np.zeros(1, np.uint8)}, request_id=1, model="m")


@pytest.mark.parametrize("field", ["model", "tensor"])
def test_a_fixed_text_field_without_its_nul_is_invalid_input(field: str) -> None:
    buf = _encode_request({"x": np.zeros(2, np.float32)}, request_id=1, model="m")
    at = 32 if field == "model" else 32 + 112  # the model name, or the first descriptor's name
    buf[at : at + 64] = b"a" * 64
    _reseal(buf)
    with pytest.raises(InvalidInput, match="name has no NUL within its 64 bytes"):
        decode_request(bytes(buf))


@pytest.mark.parametrize(
    "raw", ['{"a":1}'.encode("utf-16"), b'{"a":NaN}', b'{"a":Infinity}', b'\xef\xbb\xbf{"a":1}']
)
def test_params_must_be_strict_utf8_json(raw: bytes) -> None:
    buf = bytearray(512)
    payload = write_request(buf, request_id=1, model="m", params=raw)
    assert payload
    with pytest.raises(InvalidInput, match="params are not valid UTF-8 JSON"):
        decode_request(bytes(buf))


def test_nan_parameters_are_refused_before_they_are_sent() -> None:
    with pytest.raises(InvalidInput, match="parameters cannot be sent as JSON"):
        encode_params({"t": float("nan")})


def _decode_params(raw: bytes) -> dict[str, object]:
    buf = bytearray(512 + len(raw))
    write_request(buf, request_id=1, model="m", params=raw)
    return decode_request(bytes(buf)).params


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"seed": 1 << 53}, "'seed' is the integer 9007199254740992, outside"),
        ({"seed": -(1 << 53)}, "'seed' is the integer -9007199254740992, outside"),
        ({"seed": 10**400}, "'seed' is the integer 1000"),
        ({"t": float("inf")}, "'t' is inf, not a finite number"),
        ({"t": float("-inf")}, "'t' is -inf, not a finite number"),
        ({"s": "a\ud800"}, "'s' is a string holding a lone surrogate"),
        ({"\udc00": 1}, "'\\\\udc00' has a name holding a lone surrogate"),
        ({"l": [1]}, "'l' is of type list, not a string, number or boolean"),
        ({"d": {}}, "'d' is of type dict"),
        ({"n": None}, "'n' is of type NoneType"),
        ({"x": np.int64(3)}, "'x' is of type int64"),
        ({1: "a"}, "1 has a name of type int"),
    ],
)
def test_the_encoder_refuses_what_a_decoder_refuses_naming_the_parameter(
    params: dict[object, object], why: str
) -> None:
    """Spec 8 step 10: I-JSON; the message names the parameter (InvalidInput is a ValueError)."""
    with pytest.raises(InvalidInput, match=f"parameters cannot be sent as JSON: parameter {why}"):
        encode_params(params)  # type: ignore[arg-type]


def test_the_edges_of_i_json_round_trip() -> None:
    edges = {
        "": "",
        "\u00e9": "\U0001f600\x00",
        "max": (1 << 53) - 1,
        "min": -((1 << 53) - 1),
        "big": 1.7976931348623157e308,
        "tiny": 5e-324,
        "neg0": -0.0,
        "f": np.float64(0.5),
        "b": True,
    }
    assert _decode_params(encode_params(edges)) == edges


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"a":9007199254740992}', "'a' is the integer 9007199254740992, outside"),
        (b'{"a":1' + b"0" * 5000 + b"}", "an integer of 5001 characters is outside"),
        (b'{"a":1e999}', "'a' is inf, not a finite number"),
        (b'{"a":"\\udc00\\ud800"}', "'a' is a string holding a lone surrogate"),
        (b'{"a":1,"\\u0061":2}', "params name 'a' twice"),
        (b'{"a":[1]}', "'a' is of type list"),
    ],
)
def test_the_decoder_says_why_params_are_not_i_json(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        _decode_params(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b' \t\r\n{ "a" : 1 ,\n"b" : true }\n', {"a": 1, "b": True}),
        (b'{"a":-0,"b":1e-400,"c":9007199254740993.0}', {"a": 0, "b": 0.0, "c": 9007199254740992.0}),
        ('{"é":1,"\\u00e8":2,"":3}'.encode(), {"é": 1, "è": 2, "": 3}),
    ],
)
def test_the_decoder_takes_any_i_json_not_only_what_the_encoder_writes(
    raw: bytes, value: dict[str, object]
) -> None:
    assert _decode_params(raw) == value


def test_a_response_naming_an_output_twice_is_invalid_input() -> None:
    refs, end = layout(
        [("y", DataType.FP32, (1,)), ("y", DataType.FP32, (1,))], response_payload_size(2, 0, 0)
    )
    buf = bytearray(end)
    write_response(buf, request_id=1, outputs=refs)
    with pytest.raises(InvalidInput, match="output 'y' appears twice"):
        decode_response(bytes(buf))


def test_a_dimension_beyond_2_63_is_invalid_input_even_in_an_empty_tensor() -> None:
    """[2^63, 3, 0] has no elements, but no array library can hold such a dimension; the C, Rust
    and Go decoders refuse it (the product overflows 64 bits before the 0): so does this one."""
    from foundation_shm._vector_messages import _DESC0, _request

    buf = _request({"x": np.zeros((1, 3, 0), np.float32)}, request_id=5)
    struct.pack_into("<Q", buf, _DESC0 + 72, 1 << 63)
    with pytest.raises(InvalidInput, match="a dimension of 9223372036854775808 is beyond 2\\^63 - 1"):
        decode_request(bytes(_reseal(buf)))


# --- parameters: nesting and size (spec 8 steps 3 and 10, section 11) ---------------------------


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 3000 + b"1" + b"}" * 3000],
    ids=["open-arrays", "closed-arrays", "objects"],
)
@pytest.mark.parametrize("kind", ["request", "response"])
def test_params_nested_beyond_the_recursion_limit_are_invalid_input(raw: bytes, kind: str) -> None:
    """json.loads raises RecursionError (not ValueError) on these: still INVALID_INPUT, not INTERNAL."""
    buf = bytearray(256 + len(raw))
    if kind == "request":
        write_request(buf, request_id=7, model="m", params=raw)
        with pytest.raises(InvalidInput, match="params") as info:
            decode_request(bytes(buf))
    else:
        write_response(buf, request_id=7, params=raw)
        with pytest.raises(InvalidInput, match="params") as info:
            decode_response(bytes(buf))
    assert info.value.request_id == 7


def _params_of(size: int) -> bytes:
    raw = b'{"p":"' + b"x" * (size - 8) + b'"}'
    assert len(raw) == size
    return raw


def test_params_of_1_mib_decode_and_one_byte_more_is_too_large_before_the_crc_is_read() -> None:
    from foundation_shm._codec import _MAX_PARAMS

    assert _MAX_PARAMS == 1 << 20
    buf = _encode_request({}, request_id=8, model="m", params=_params_of(1 << 20))
    assert decode_request(bytes(buf)).params == {"p": "x" * ((1 << 20) - 8)}
    buf = _encode_request({}, request_id=9, model="m", params=_params_of((1 << 20) + 1))
    buf[28] ^= 0xFF  # a CRC that does not match: the cap comes first (step 3, before step 4)
    with pytest.raises(TooLarge, match="params_size 1048577 bytes \\(at most 1048576\\)") as info:
        decode_request(bytes(buf))
    assert info.value.request_id == 9


def test_a_response_text_of_1_mib_decodes_and_one_byte_more_is_invalid_input_naming_text_size() -> None:
    """A response whose text_size was over 1 MiB (spec 8, 11), its payload_size matching the
    counts, was refused as "payload_size ... does not match the counts in the body", though it
    matched them; the error names text_size and its cap."""
    for size in (1 << 20, (1 << 20) + 1):
        text = b"e" * size
        buf = bytearray(32 + response_payload_size(0, size, 0))
        write_response(buf, request_id=4, status=9, text=text)
        if size == 1 << 20:
            assert decode_response(bytes(buf)).text == text.decode()
            continue
        with pytest.raises(InvalidInput, match=r"^text_size 1048577 bytes \(at most 1048576\)$") as info:
            decode_response(bytes(buf))
        assert info.value.request_id == 4


# --- shapes numpy cannot hold: empty tensors with wide dimensions (spec 8 step 7) ------------------


def _with_shape(kind: str, dtype: DataType, shape: tuple[int, ...]) -> bytes:
    """A one-tensor request or response whose descriptor says ``shape`` of ``dtype``, data_size 0."""
    if kind == "request":
        buf = _encode_request({"e": np.zeros(0, np.uint8)}, request_id=5, model="m")
    else:
        refs, end = layout([("e", DataType.UINT8, (0,))], response_payload_size(1, 0, 0))
        buf = bytearray(end)
        write_response(buf, request_id=5, outputs=refs)
    struct.pack_into("<II", buf, 32 + 112 + 64, dtype.code, len(shape))
    struct.pack_into(f"<{len(shape)}Q", buf, 32 + 112 + 72, *shape)
    return bytes(_reseal(buf))


def _decode(kind: str, area: bytes) -> dict[str, np.ndarray]:
    return decode_request(area).inputs if kind == "request" else decode_response(area).outputs


@pytest.mark.parametrize("kind", ["request", "response"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (DataType.UINT8, (1 << 32, 1 << 32, 0)),  # overflows 64 bits before the 0
        (DataType.FP32, (1 << 62, 0)),  # 4 x 2^62 overflows 64 bits
        (DataType.UINT8, (1 << 62, 2, 0)),  # 2^63: fits unsigned 64 bits, not numpy's signed size
        (DataType.FP16, (0, 1 << 62)),  # the same after the 0
        (DataType.UINT8, (0, 1 << 63)),  # a dimension of 2^63 after the 0
        (DataType.UINT8, (0, 3, 3074457345618258603)),  # 9223372036854775809 = 2^63 + 1
    ],
)
def test_an_empty_tensor_numpy_cannot_hold_is_invalid_input_naming_it(
    kind: str, dtype: DataType, shape: tuple[int, ...]
) -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'e': .*beyond 2\^63 - 1") as info:
        _decode(kind, _with_shape(kind, dtype, shape))
    assert info.value.request_id == 5


@pytest.mark.parametrize("kind", ["request", "response"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (DataType.UINT8, ((1 << 63) - 1, 0)),  # exactly 2^63 - 1 bytes over the nonzero dimensions
        (DataType.UINT8, (0, 7 * 7 * 73 * 127, 337 * 92737 * 649657)),  # 2^63 - 1 as a product
        (DataType.FP32, (0, (1 << 61) - 1)),
        (DataType.FP64, (2, 0, 1 << 56, 3)),
    ],
)
def test_an_empty_tensor_within_2_63_bytes_decodes_with_its_shape(
    kind: str, dtype: DataType, shape: tuple[int, ...]
) -> None:
    array = _decode(kind, _with_shape(kind, dtype, shape))["e"]
    assert array.shape == shape and array.dtype == dtype.numpy and array.size == 0


def test_whatever_numpy_refuses_is_invalid_input_not_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the spec's check (lifted here), numpy's own ValueError still comes back typed."""
    import foundation_shm._decoders as decoders

    monkeypatch.setattr(decoders, "_MAX_NBYTES", 1 << 70)
    with pytest.raises(InvalidInput, match=r"tensor 'e': (?!.*2\^63)"):  # numpy's words
        _decode("response", _with_shape("response", DataType.UINT8, (1 << 62, 2, 0)))


def test_sendable_params_refuses_over_1_mib_before_sending() -> None:
    """What both client paths (host and CUDA IPC) send: the server's cap, refused the same way."""
    from foundation_shm._codec import _MAX_PARAMS, sendable_params

    from foundation_ml.errors import TooLarge

    fits = {"p": "x" * (_MAX_PARAMS - 8)}  # {"p":"..."} is 8 bytes of JSON around the value
    assert len(sendable_params(fits, 3)) == _MAX_PARAMS
    with pytest.raises(TooLarge, match="at most 1048576") as info:
        sendable_params({"p": "x" * (_MAX_PARAMS - 7)}, 3)
    assert info.value.request_id == 3


@settings(max_examples=300)
@given(message=st.text(), room=st.integers(0, 300))
def test_a_cut_message_fits_its_room_is_whole_utf8_and_says_it_was_cut(message: str, room: int) -> None:
    whole = message.encode("utf-8", "replace")
    cut = cut_message(message, room)
    assert len(cut) <= room
    text = cut.decode("utf-8")  # never a broken character, whatever the cut
    if len(whole) <= room:
        assert cut == whole
        return
    note = f" ... [cut: {len(whole)} bytes]"
    if room >= len(note.encode()):  # room for the note: the message's head, then the note
        assert text.endswith(note)
        assert whole.startswith(text[: -len(note)].encode())
        assert len(cut) > room - len(note.encode()) - 4  # at most one character's bytes lost
