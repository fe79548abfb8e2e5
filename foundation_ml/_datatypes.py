"""The tensor datatype table: Open Inference Protocol names, wire codes, numpy dtypes.

One table, used by every transport and backend. Wire codes are those of the shm protocol
(docs/protocol/shm.md); names are KServe v2 / Triton ``datatype`` strings.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["DataType"]


class DataType(enum.Enum):
    """``DataType.FP32.code == 12``, ``.itemsize == 4``, ``.numpy == np.dtype('float32')``."""

    BOOL = (1, 1, "bool")
    UINT8 = (2, 1, "uint8")
    UINT16 = (3, 2, "uint16")
    UINT32 = (4, 4, "uint32")
    UINT64 = (5, 8, "uint64")
    INT8 = (6, 1, "int8")
    INT16 = (7, 2, "int16")
    INT32 = (8, 4, "int32")
    INT64 = (9, 8, "int64")
    FP16 = (10, 2, "float16")
    BF16 = (11, 2, "uint16")  # numpy has no bfloat16: the raw 16-bit patterns travel as uint16
    FP32 = (12, 4, "float32")
    FP64 = (13, 8, "float64")
    BYTES = (14, 1, "uint8")  # opaque bytes; shape counts bytes

    def __init__(self, code: int, itemsize: int, numpy_name: str) -> None:
        self.code = code
        self.itemsize = itemsize
        self.numpy = np.dtype(numpy_name)

    @classmethod
    def from_code(cls, code: int) -> DataType:
        try:
            return _BY_CODE[code]
        except KeyError:
            raise ValueError(f"unknown datatype code {code} (known: 1..{len(_BY_CODE)})") from None

    @classmethod
    def from_name(cls, name: str) -> DataType:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown datatype {name!r} (known: {', '.join(cls.__members__)})") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DataType:
        try:
            return _BY_NUMPY[np.dtype(dtype)]
        except KeyError:
            raise ValueError(f"numpy dtype {np.dtype(dtype)} has no protocol datatype") from None

    @classmethod
    def from_torch(cls, dtype: object) -> DataType | None:
        """The datatype of a torch dtype (``torch.float32`` or ``"torch.float32"``), None if it has
        none. Works on the dtype's name: torch is not imported."""
        return _BY_TORCH.get(str(dtype).removeprefix("torch."))


_BY_CODE = {d.code: d for d in DataType}
# uint16 maps to UINT16 (not BF16) and uint8 to UINT8 (not BYTES): the natural reading of numpy.
_BY_NUMPY = {d.numpy: d for d in reversed(list(DataType)) if d not in (DataType.BF16, DataType.BYTES)}
# torch dtype names: numpy's, except BF16 (torch.bfloat16; numpy carries its bits as uint16).
_TORCH_NAMES: dict[DataType, str] = {
    d: ("bfloat16" if d is DataType.BF16 else d.numpy.name) for d in DataType if d is not DataType.BYTES
}
_BY_TORCH: dict[str, DataType] = {n: d for d, n in _TORCH_NAMES.items()}
