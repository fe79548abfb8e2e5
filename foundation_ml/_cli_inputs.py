"""``foundation infer --input FILE``: a ``.npz``, ``.npy`` or ``.json`` file read as a request's
inputs, checked against the model's signature and this module's size limits before any of it is
sent."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np

    from ._datatypes import DataType
    from ._types import TensorSpec

__all__ = ["MAX_INPUT_BYTES", "MAX_JSON_BYTES", "load_inputs"]


def load_inputs(path: str | None, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inputs from ``.npz`` (one array per input), ``.npy`` (the only input) or ``.json``
    (``{"x": [[...]]}``, cast to the signature's dtypes); the example input without a file. A BF16
    input's JSON numbers and float arrays are values, rounded to bfloat16 (a uint16 array is its
    bit patterns). A file that cannot be read, or holds a value its input's datatype cannot, is a
    ``SystemExit`` naming it."""

    from ._signature import example_inputs, parse_signature

    specs = parse_signature(meta["inputs"])
    if path is None:
        try:
            return example_inputs(specs)
        except ValueError as exc:  # a signature whose example would be absurdly large
            raise SystemExit(f"foundation infer: no example input: {exc}; pass --input FILE") from None
    p = Path(path)
    if p.suffix not in (".npz", ".npy", ".json"):
        raise SystemExit(f"foundation infer: {p}: use a .npz, .npy or .json file")
    try:
        inputs = _read_inputs(p, specs)
    # JSONDecodeError is a ValueError; a huge int is an OverflowError, an object where numbers
    # belong a TypeError, arrays nested thousands deep a RecursionError: all are a bad file
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, *_BAD_JSON) as exc:
        raise SystemExit(f"foundation infer: cannot read inputs from {p}: {exc}") from None
    wanted = [s.name for s in specs]
    if p.suffix == ".npz" and inputs and all(re.fullmatch(r"arr_\d+", k) and k not in wanted for k in inputs):
        raise SystemExit(  # numpy.savez(file, x) names x arr_0: the server would say only "missing x"
            f"foundation infer: {p} holds {', '.join(inputs)}, the names numpy.savez gives arrays "
            f"passed unnamed; name each after its input: numpy.savez({p.name!r}, "
            f"{', '.join(f'{n}=...' for n in wanted)})"
        )
    return inputs


_BAD_JSON = (OverflowError, TypeError, RecursionError)


MAX_INPUT_BYTES = 1 << 30  # an --input file, and the data its arrays declare (the npz's unpacked)
MAX_JSON_BYTES = 64 << 20  # a .json one: its numbers take several times that as Python objects


def _read_inputs(p: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The inputs ``p`` holds, read no further than its size limit: a file over it, or an array
    declaring more data than its file holds (numpy would allocate it first), is a ValueError."""
    import numpy as np

    if p.suffix == ".npy" and len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise SystemExit(
            f"foundation infer: {p} holds one array; the model takes {len(specs)} inputs ({names}): "
            f"write a .npz of one array per input, numpy.savez('in.npz', "
            f"{', '.join(f'{s.name}=...' for s in specs)})"
        )
    limit = MAX_JSON_BYTES if p.suffix == ".json" else MAX_INPUT_BYTES
    with _open_regular(p) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ValueError(_too_large(f"it is {size} bytes", p.suffix, limit))
        if p.suffix == ".npz":
            _check_npz(f, limit)
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                return {k: _as_bf16(k, _native(z[k]), specs) for k in z.files}
        if p.suffix == ".npy":
            _check_npy(f, size, "the array")
            f.seek(0)
            return {specs[0].name: _as_bf16(specs[0].name, _native(np.load(f, allow_pickle=False)), specs)}
        text = f.read(limit + 1)  # the file may have grown since fstat
        if len(text) > limit:
            raise ValueError(_too_large("it grew while read", p.suffix, limit))
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite_float)
    if not isinstance(doc, dict):
        raise ValueError(f'expected an object of named inputs ({{"x": [[...]]}}), not a {type(doc).__name__}')
    types = {s.name: s.datatype for s in specs}
    return {k: _json_array(k, v, types.get(k)) for k, v in doc.items()}


def _finite_float(text: str) -> float:
    """A JSON number as a float; one past float64's range (``1e400``, which ``float`` would make an
    infinity without a word) is a ValueError naming it."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f'{text} is past the range of a number (write "Infinity" for an infinity)')
    return value


def _too_large(what: str, suffix: str, limit: int) -> str:
    return (
        f"{what}, more than a {suffix} --input may hold ({limit} bytes); "
        "send larger inputs with InferenceClient from Python"
    )


def _check_npz(f: BinaryIO, limit: int) -> None:
    """Refuse an .npz whose arrays would unpack to more than ``limit`` bytes (a small zip can
    declare gigabytes), a member that is not an .npy array (``np.load`` hands its raw bytes back)
    and an array named twice (one would silently win)."""
    with zipfile.ZipFile(f) as zf:
        members = zf.infolist()
        unpacked = sum(m.file_size for m in members)
        if unpacked > limit:
            raise ValueError(_too_large(f"its arrays unpack to {unpacked} bytes", ".npz", limit))
        seen: set[str] = set()
        for m in members:
            key = m.filename.removesuffix(".npy")  # as np.load names it
            if key in seen:
                raise ValueError(f"the array {key!r} is given twice")
            seen.add(key)
            try:
                with zf.open(m) as member:
                    _check_npy(member, m.file_size, f"{m.filename!r}")
            # zipfile's words for an encrypted member, an unknown compression, corrupt deflate
            # data (np.load would raise them too, untyped)
            except (RuntimeError, NotImplementedError, zlib.error) as exc:
                raise ValueError(f"{m.filename!r} cannot be unpacked: {exc}") from None


def _check_npy(f: IO[bytes], size: int, what: str) -> None:
    """Read ``f``'s .npy header (``size`` bytes in all) and refuse an array declaring more data
    than follows it: numpy allocates the declared size before it reads (a 128-byte file declaring
    4 TiB was a MemoryError with a traceback, and one declaring 8 GB was allocated)."""
    import numpy as np
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(f)
    except ValueError:
        raise ValueError(f"{what} is not an .npy array") from None
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(f)
    else:  # 3.0 is only written for field names no protocol datatype has
        raise ValueError(f"{what}: .npy format version {version[0]}.{version[1]} is not read")
    declared = math.prod(shape) * np.dtype(dtype).itemsize
    held = size - f.tell()
    if declared > held:
        raise ValueError(
            f"{what} declares shape {list(shape)} of {np.dtype(dtype).str} ({declared} bytes) "
            f"but holds {held} bytes of data"
        )


def _open_regular(p: Path) -> BinaryIO:
    """``p`` opened for reading if it is a regular file; a FIFO, a device or a socket is a
    ValueError (opening a FIFO without a writer would block forever), a directory an OSError.
    Opened non-blocking and checked with ``fstat``: no window to swap in a FIFO after a check."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(p))
        if not stat.S_ISREG(mode):
            raise ValueError("not a regular file (a FIFO, a device or a socket)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` in this machine's byte order (a big-endian ``>f4`` file is FP32 all the same;
    the protocol carries native-order data only)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _as_bf16(name: str, array: np.ndarray, specs: Sequence[TensorSpec]) -> np.ndarray:
    """``array`` as a BF16 input if ``name`` is one: floats as their bfloat16 bit patterns (rounded
    as JSON numbers are), uint16 as bit patterns already; anything else, or another input, as
    it is (the server names a datatype it does not take)."""
    from ._datatypes import DataType

    if not any(s.name == name and s.datatype is DataType.BF16 for s in specs):
        return array
    if array.dtype.kind == "f":
        try:
            return _bf16(array)
        except OverflowError as exc:
            raise ValueError(f"input {name}: {exc}") from None
    return array.view(DataType.BF16.numpy) if array.dtype == DataType.UINT16.numpy else array


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's ``dict``; a name given twice is a ValueError (``json`` keeps the last)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"{key!r} is given twice")
        seen.add(key)
    return dict(pairs)


def _json_array(name: str, value: Any, datatype: DataType | None) -> np.ndarray:
    """A JSON input as an array of its datatype; a ValueError naming the input for a value the
    datatype cannot hold: out of its range (1e40 for FP32, 300 for INT8), a fraction for an
    integer input or other than 0 and 1 for BOOL (numpy would truncate 1.5 to 1, make 2 True),
    a string but for a float or BF16 input (``"NaN"``, ``"Infinity"``: as ``--json`` writes them), or a
    null (numpy would make it NaN). A BF16 input's numbers are its values, rounded to bfloat16."""
    import numpy as np

    from ._datatypes import DataType

    try:
        given = np.asarray(value)  # the values as JSON gave them; ragged nesting fails here
        if given.dtype == object and any(x is None for x in given.flat):
            raise ValueError("null is not a number")
        if datatype is None:  # not in the signature: the server names it
            return given
        if given.dtype.kind in "UO":  # a string somewhere (numpy made every number text too):
            _check_strings(value, datatype)  # numpy would read "1e3" as 1000, "0" as True for BOOL
        if datatype is DataType.BF16:  # numbers are values (not bit patterns), strings as for FP
            return _bf16(value)
        array = _cast(value, datatype)
        if array.dtype.kind in "iub" and given.dtype.kind in "fiub" and not np.array_equal(array, given):
            bad = given[array != given].flat[0]
            raise ValueError(f"{bad.item()!r} is not a value of {datatype.name}")
    except (ValueError, TypeError, ArithmeticError) as exc:  # an OverflowError is one
        raise ValueError(f"input {name}: {exc}") from None
    return array


#: The strings a float or BF16 input takes: JSON has no number for them (``--json`` writes them).
_NON_NUMBERS = frozenset({"NaN", "Infinity", "-Infinity"})


def _check_strings(value: Any, datatype: DataType) -> None:
    """A ValueError for the first string in ``value`` (JSON's nested lists) that is not one of
    ``_NON_NUMBERS`` for a float or BF16 input, or for any string for another: numpy would parse
    any numeric text (``"1e3"``, ``" 5 "``, ``"1_0"``, ``"inf"``) as Python's ``float`` does."""
    from ._datatypes import DataType

    floats = datatype is DataType.BF16 or datatype.numpy.kind == "f"
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str) and not (floats and item in _NON_NUMBERS):
            but = ' but "NaN", "Infinity" or "-Infinity"' if floats else ""
            raise ValueError(f"a string is not a value of {datatype.name}{but}: {item!r}")


def _cast(value: Any, datatype: DataType) -> np.ndarray:
    import numpy as np

    dtype = datatype.numpy
    try:
        with np.errstate(over="raise", invalid="raise"):
            return np.asarray(value, dtype=dtype)
    except (FloatingPointError, OverflowError) as exc:
        info: Any = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype) if dtype.kind in "iu" else None
        if info is None:
            raise
        span = f"out of range for {datatype.name} ({info.min!s} to {info.max!s})"
        number = float if dtype.kind == "f" else int
        bad = _first_outside(value, number(info.min), number(info.max))
        what = "a value" if bad is None else _abridged(bad)
        raise OverflowError(f"{what} is {span}") from exc


def _abridged(number: float) -> str:
    """A number for a message: an integer of hundreds of digits cut to its first and its length."""
    text = str(number)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text.lstrip('-'))} digits)"


def _first_outside(value: Any, low: Any, high: Any) -> Any:
    """The first number in ``value`` (JSON's nested lists) outside ``low``..``high``; None if none
    is (an infinity is in range for a float datatype)."""
    if isinstance(value, list):
        for item in value:
            bad = _first_outside(item, low, high)
            if bad is not None:
                return bad
        return None
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, (int, float)) and not low <= value <= high:
        return value
    return None


def _bf16(values: Any) -> np.ndarray:
    """A float array, or JSON values (numbers, and strings numpy reads as floats: ``"NaN"``,
    ``"Infinity"``), as bfloat16 bit patterns rounded from float32 to nearest even, as torch
    does; a finite value that rounds past bfloat16's range is an OverflowError naming it."""
    import numpy as np

    from ._bfloat16 import bf16_bits, bf16_values

    top = bf16_values(np.array(0x7F7F, np.uint16))[()]  # the largest finite bfloat16
    span = f"for BF16 ({-top!s} to {top!s})"
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        wide = values
    else:
        try:
            wide = np.asarray(values, dtype=np.float64)
        except OverflowError:  # an int past float64's range
            raise OverflowError(f"a value is out of range {span}") from None
    with np.errstate(over="ignore"):  # past float32's range: infinite, refused below
        bits = bf16_bits(wide)
    lost = np.isinf(bf16_values(bits)) & np.isfinite(wide)
    if lost.any():
        raise OverflowError(f"{wide[lost].flat[0]!s} is out of range {span}")
    return bits
