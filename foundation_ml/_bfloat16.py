"""BF16 values and their bit patterns in numpy, which has no bfloat16 (torch is not imported)."""

from __future__ import annotations

import numpy as np

from ._datatypes import DataType

__all__ = ["bf16_bits", "bf16_values"]


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """``values`` (as float32) rounded to bfloat16, as bit patterns of dtype ``DataType.BF16.numpy``:
    round to nearest, ties to even, as torch converts float32 to bfloat16. A NaN is the quiet NaN
    0x7FC0; a finite value past bfloat16's largest (about 3.39e38) rounds to an infinity."""
    x = np.asarray(values, dtype=np.float32)
    u = x.view(np.uint32)
    # adding 0x7FFF, plus 1 when the kept part is odd, carries into it exactly when the dropped
    # half is over a half, or a half with the kept part odd (uint32 arithmetic wraps: no overflow
    # but for NaNs, whose patterns are replaced)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    bits = np.where(np.isnan(x), np.uint16(0x7FC0), rounded).astype(np.uint16)
    return bits.view(DataType.BF16.numpy)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """BF16 bit patterns (uint16) as the float32 values they are, exactly (the high half of a
    float32 is a bfloat16)."""
    wide = np.asarray(bits).view(np.uint16).astype(np.uint32) << 16
    return wide.view(np.float32)
