"""The datatype table's marks: numpy has no bfloat16 and no opaque-bytes type, so BF16 data is uint16
bit patterns and BYTES uint8, whose dtype carries a mark (``DataType.BF16.numpy``,
``DataType.BYTES.numpy``); plain uint16 and uint8 stay UINT16 and UINT8."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation_ml import DataType
from foundation_ml._tensors import from_host, to_host

torch = pytest.importorskip("torch")


def test_bf16_is_uint16_to_numpy_and_bf16_to_the_protocol() -> None:
    assert DataType.BF16.numpy == np.uint16 and DataType.BF16.numpy.itemsize == 2
    assert DataType.from_numpy(DataType.BF16.numpy) is DataType.BF16
    assert DataType.from_numpy(np.uint16) is DataType.UINT16
    assert DataType.from_numpy(np.dtype("uint16", metadata={"datatype": "BF16", "other": 1})) is DataType.BF16
    assert DataType.from_numpy(np.dtype("uint16", metadata={"other": 1})) is DataType.UINT16


def test_bytes_is_uint8_to_numpy_and_bytes_to_the_protocol() -> None:
    assert DataType.BYTES.numpy == np.uint8
    assert DataType.from_numpy(DataType.BYTES.numpy) is DataType.BYTES
    assert DataType.from_numpy(np.uint8) is DataType.UINT8
    text = np.frombuffer("héllo".encode(), np.uint8).view(DataType.BYTES.numpy)
    assert DataType.from_numpy(text.dtype) is DataType.BYTES and text.tobytes().decode() == "héllo"


def test_a_mark_on_another_dtype_is_ignored() -> None:
    """The mark names the datatype of the bits only where the base dtype is that datatype's."""
    assert DataType.from_numpy(np.dtype(np.float32, metadata={"datatype": "BF16"})) is DataType.FP32
    assert DataType.from_numpy(np.dtype(np.uint16, metadata={"datatype": "BYTES"})) is DataType.UINT16
    assert DataType.from_numpy(np.dtype(np.uint8, metadata={"datatype": "FP32"})) is DataType.UINT8


def test_a_datatype_takes_its_own_dtype_and_bf16_or_bytes_plain_bits_too() -> None:
    bf16_bits, bytes_ = DataType.BF16.numpy, DataType.BYTES.numpy
    assert DataType.BF16.takes(bf16_bits) and DataType.BF16.takes(np.uint16)  # plain: unmarked bits
    assert DataType.UINT16.takes(np.uint16) and not DataType.UINT16.takes(bf16_bits)
    assert DataType.BYTES.takes(bytes_) and DataType.BYTES.takes(np.uint8)
    assert DataType.UINT8.takes(np.uint8) and not DataType.UINT8.takes(bytes_)
    assert not DataType.BF16.takes(bytes_) and not DataType.BF16.takes(np.float32)
    assert DataType.FP32.takes(np.float32) and not DataType.FP32.takes(np.dtype("U3"))


def test_the_mark_survives_what_numpy_does_to_an_array() -> None:
    bits = np.arange(12, dtype=np.uint16).view(DataType.BF16.numpy)
    for a in (bits.copy(), bits.reshape(3, 4), bits[2:7], np.ascontiguousarray(bits[::2]),
              pickle.loads(pickle.dumps(bits))):  # fmt: skip
        assert DataType.from_numpy(a.dtype) is DataType.BF16
    assert DataType.from_numpy(bits.astype(np.uint16).dtype) is DataType.UINT16  # a conversion drops it


@given(st.lists(st.integers(0, 0xFFFF), max_size=64))
def test_bfloat16_tensors_and_bf16_bits_convert_both_ways_exactly(values: list[int]) -> None:
    bits = np.array(values, dtype=np.uint16).view(DataType.BF16.numpy)
    t = from_host(bits)
    assert t.dtype == torch.bfloat16 and t.numel() == len(values)
    back = to_host(t)
    assert DataType.from_numpy(back.dtype) is DataType.BF16
    assert back.tobytes() == bits.tobytes()  # NaN payloads and signed zeros too: bits, not values


def test_a_bfloat16_tensor_becomes_bf16_bits_and_other_arrays_pass_as_they_are() -> None:
    t = torch.tensor([1.0, -2.5, 0.0], dtype=torch.bfloat16)
    bits = to_host(t)
    assert DataType.from_numpy(bits.dtype) is DataType.BF16
    assert bits.tolist() == t.view(torch.int16).numpy().view(np.uint16).tolist()
    plain = np.arange(3, dtype=np.uint16)
    assert DataType.from_numpy(to_host(plain).dtype) is DataType.UINT16
    assert from_host(plain).dtype == torch.uint16
    assert torch.equal(from_host(np.arange(4.0)), torch.arange(4.0, dtype=torch.float64))
