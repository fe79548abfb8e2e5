"""The tensor datatype table: Open Inference Protocol names, wire codes, numpy dtypes.

One table, used by every transport and backend. Wire codes are those of the shm protocol
(docs/protocol/shm.md); names are KServe v2 / Triton ``datatype`` strings.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["DataType"]

# Two datatypes have no numpy dtype of their own: BF16 (numpy has no bfloat16) is its 16-bit
# patterns as uint16, BYTES (opaque bytes) is uint8. Their arrays carry a mark in the dtype's
# metadata (equal to uint16 / uint8 for numpy, BF16 / BYTES for the protocol): decoders give such
# tensors the marked dtype, so they travel on as what they are, and ``a.view(DataType.BF16.numpy)``
# makes plain bits BF16. Plain uint16 and uint8 are UINT16 and UINT8.
_MARK = "datatype"
_MARKED: dict[int, np.dtype] = {
    11: np.dtype(np.uint16, metadata={_MARK: "BF16"}),
    14: np.dtype(np.uint8, metadata={_MARK: "BYTES"}),
}


class DataType(enum.Enum):
    """``DataType.FP32.code == 12``, ``.itemsize == 4``, ``.numpy == np.dtype('float32')``.

    ``DataType.BF16.numpy`` is uint16 marked BF16 (numpy has no bfloat16), ``DataType.BYTES.numpy``
    uint8 marked BYTES: ``from_numpy`` reads arrays of those dtypes as BF16 and BYTES, and plain
    uint16 and uint8 as UINT16 and UINT8."""

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
    BF16 = (11, 2, "uint16")  # the 16-bit patterns, as uint16 marked BF16 (_MARKED)
    FP32 = (12, 4, "float32")
    FP64 = (13, 8, "float64")
    BYTES = (14, 1, "uint8")  # opaque bytes, as uint8 marked BYTES; shape counts bytes

    def __init__(self, code: int, itemsize: int, numpy_name: str) -> None:
        self.code = code
        self.itemsize = itemsize
        self.numpy: np.dtype = _MARKED[code] if code in _MARKED else np.dtype(numpy_name)

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
        dt = np.dtype(dtype)
        try:
            if dt.metadata is not None:
                marked = _BY_MARK.get(str(dt.metadata.get(_MARK)))
                if marked is not None and marked.numpy == dt:  # (a float32 marked BF16 is FP32)
                    return marked
            return _BY_NUMPY[dt]
        except KeyError:
            raise ValueError(f"numpy dtype {np.dtype(dtype)} has no protocol datatype") from None

    def takes(self, dtype: np.dtype | type) -> bool:
        """Whether arrays of numpy ``dtype`` hold this datatype: its own dtype; for BF16 and BYTES
        also plain uint16 and uint8 (bits a numpy caller could not mark). A dtype marked as
        another datatype does not: BF16 bits are no UINT16."""
        try:
            got = DataType.from_numpy(dtype)
        except ValueError:
            return False
        return got is self or _PLAIN.get(self) is got

    @classmethod
    def from_torch(cls, dtype: object) -> DataType | None:
        """The datatype of a torch dtype (``torch.float32`` or ``"torch.float32"``), None if it has
        none. Works on the dtype's name: torch is not imported."""
        return _BY_TORCH.get(str(dtype).removeprefix("torch."))


_BY_CODE = {d.code: d for d in DataType}
# uint16 maps to UINT16 and uint8 to UINT8 (BF16 and BYTES only when marked): numpy's reading.
_BY_NUMPY = {d.numpy: d for d in reversed(list(DataType)) if d not in (DataType.BF16, DataType.BYTES)}
_BY_MARK: dict[str, DataType] = {"BF16": DataType.BF16, "BYTES": DataType.BYTES}
_PLAIN: dict[DataType, DataType] = {DataType.BF16: DataType.UINT16, DataType.BYTES: DataType.UINT8}
# torch dtype names: numpy's, except BF16 (torch.bfloat16; numpy carries its bits as marked uint16).
_TORCH_NAMES: dict[DataType, str] = {
    d: ("bfloat16" if d is DataType.BF16 else d.numpy.name) for d in DataType if d is not DataType.BYTES
}
_BY_TORCH: dict[str, DataType] = {n: d for d, n in _TORCH_NAMES.items()}
