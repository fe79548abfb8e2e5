"""The cached readers (re-using the previous message's checked descriptors) decode exactly like the
full decoders, whatever sequence of messages and corruptions they see."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from foundation_shm._codec import (
    layout,
    request_payload_size,
    response_payload_size,
    write_request,
    write_response,
)
from foundation_shm._decoders import decode_request, decode_response
from foundation_shm._readers import RequestReader, ResponseReader
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml import DataType
from foundation_ml.errors import InferenceError

AREA = 8192
_messages = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # model
        st.sampled_from([(), (3,), (2, 2), (5,)]),  # shape of input x
        st.sampled_from([DataType.FP32, DataType.INT64]),
        st.integers(1, 2**64 - 1),  # request id
        st.sampled_from([0, 5, 10**12]),  # deadline
        st.one_of(st.none(), st.tuples(st.integers(0, 600), st.integers(0, 255))),  # corruption
    ),
    min_size=1,
    max_size=12,
)


def _normal(result: Any) -> Any:
    if isinstance(result, InferenceError):
        return type(result).__name__
    fields = result._asdict()
    for key in ("inputs", "outputs"):
        if isinstance(fields.get(key), dict):
            fields[key] = {n: (a.dtype.str, a.shape, a.tobytes()) for n, a in fields[key].items()}
    return fields


def _outcome(decode: Any) -> Any:
    try:
        return _normal(decode())
    except InferenceError as exc:
        return _normal(exc)


@settings(max_examples=150, deadline=None)
@given(messages=_messages)
def test_request_reader_matches_full_decoding(messages: list[tuple[Any, ...]]) -> None:
    buf = bytearray(AREA)
    reader = RequestReader(memoryview(buf).toreadonly(), AREA)
    for model, shape, dtype, rid, deadline, corruption in messages:
        x = np.arange(int(np.prod(shape)), dtype=dtype.numpy).reshape(shape) + rid % 7
        refs, _ = layout([("x", dtype, shape)], request_payload_size(1, 0, 0))
        buf[refs[0].offset : refs[0].offset + refs[0].size] = x.tobytes()
        write_request(buf, request_id=rid, model=model, inputs=refs, deadline_ns=deadline)
        if corruption is not None:
            buf[corruption[0]] = corruption[1]
        assert _outcome(reader.read) == _outcome(lambda: decode_request(bytes(buf), AREA))


@settings(max_examples=150, deadline=None)
@given(messages=_messages)
def test_response_reader_matches_full_decoding(messages: list[tuple[Any, ...]]) -> None:
    buf = bytearray(AREA)
    reader = ResponseReader(memoryview(buf).toreadonly(), AREA)
    for model, shape, dtype, rid, status, corruption in messages:
        y = np.full(shape, rid % 11, dtype=dtype.numpy)
        refs, _ = layout([("y", dtype, shape)], response_payload_size(1, 0, 0))
        buf[refs[0].offset : refs[0].offset + refs[0].size] = y.tobytes()
        write_response(buf, request_id=rid, model=model, outputs=refs, status=status % 3)
        if corruption is not None:
            buf[corruption[0]] = corruption[1]
        assert _outcome(reader.read) == _outcome(lambda: decode_response(bytes(buf), AREA))


@pytest.mark.parametrize("kind", ["request", "response"])
def test_a_message_rewritten_as_it_is_decoded_is_not_remembered_with_the_bytes_written_after(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec 13: a check and its use read the same bytes. The reader decoded message A, then read
    the payload to remember (and, for a response, its payload_size) from the area again: a peer
    that wrote message B in between (a client its next request, a server its next response) had
    B's bytes remembered with A's decoding, and B, published again as it is, was read as A (model
    "echo" for a message naming "fail"). What is remembered is the copy that was decoded, and the
    decoding is that copy's."""
    from foundation_shm import _decoders, _vector_messages

    encode = _vector_messages._request if kind == "request" else _vector_messages._response
    reader_class = RequestReader if kind == "request" else ResponseReader
    x = {"x": np.arange(6, dtype=np.float32)}
    a = encode(x, request_id=7, model="echo")
    b = encode(x, request_id=8, model="fail")
    assert len(a) == len(b)
    area = bytearray(a)
    reader = reader_class(memoryview(area).toreadonly(), len(area))
    params = _decoders._params

    def then_b(raw: bytes, rid: int) -> dict[str, Any]:  # the decode's last read of the area
        value = params(raw, rid)
        area[:] = b  # the peer's write lands right after it
        return value

    monkeypatch.setattr(_decoders, "_params", then_b)
    first = reader.read()
    assert (first.model, first.request_id) == ("echo", 7)  # A, as it was when read
    monkeypatch.undo()
    got = reader.read()  # B, published as it is
    assert (got.model, got.request_id) == ("fail", 8)
    if kind == "response":
        assert _outcome(reader.read) == _outcome(lambda: decode_response(bytes(area), len(area)))
