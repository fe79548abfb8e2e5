"""BF16 in numpy: float32 rounds to bfloat16 bit patterns as torch rounds it, and the bit patterns
read back as exactly the values they are."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml import DataType
from foundation_ml._bfloat16 import bf16_bits, bf16_values

# any pattern, and patterns whose dropped half is a tie or next to one (1 in 2**16 of any)
_PATTERN = st.one_of(
    st.integers(0, 2**32 - 1),
    st.builds(
        lambda high, low: high << 16 | low,
        st.integers(0, 2**16 - 1),
        st.sampled_from([0x7FFF, 0x8000, 0x8001]),
    ),
)
_FLOAT32_PATTERNS = st.lists(_PATTERN, min_size=1, max_size=64)


@settings(max_examples=500, deadline=None)
@given(_FLOAT32_PATTERNS)
def test_float32_rounds_to_bf16_as_torch_rounds_it(patterns: list[int]) -> None:
    """Any float32 (denormals, ties, infinities, values rounding past bfloat16's range) gives
    torch's bit pattern; a NaN gives a NaN (torch's pattern for one differs between its paths)."""
    torch = pytest.importorskip("torch")
    x = np.array(patterns, dtype=np.uint32).view(np.float32)
    ours = bf16_bits(x)
    theirs = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(bf16_values(ours)), nan)
    assert ours[~nan].tolist() == theirs[~nan].tolist()
    assert DataType.from_numpy(ours.dtype) is DataType.BF16


def test_every_bf16_pattern_reads_back_as_torchs_value() -> None:
    torch = pytest.importorskip("torch")
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    ours = bf16_values(bits)
    theirs = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    nan = np.isnan(theirs)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours.view(np.uint32)[~nan], theirs.view(np.uint32)[~nan])  # -0.0 too
    assert np.array_equal(bf16_bits(ours)[~nan], bits[~nan])  # a bfloat16 value rounds to itself


def test_round_to_nearest_even_and_the_shape_kept() -> None:
    one, next_up = 0x3F800000, 0x3F810000  # 1.0 and the bfloat16 after it
    ties = np.array([one + 0x8000, next_up + 0x8000, one + 0x8001], np.uint32).view(np.float32)
    assert bf16_bits(ties).tolist() == [0x3F80, 0x3F82, 0x3F81]  # to even, to even, up
    assert bf16_bits(np.float32(np.nan)).tolist() == 0x7FC0  # a quiet NaN; a scalar stays one
    assert bf16_bits(np.zeros((2, 0, 3))).shape == (2, 0, 3)
