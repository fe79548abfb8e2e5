"""``foundation infer``'s input files: what it reads, and what it refuses naming the file and the
input; and BF16, values both ways."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml import DataType, MLRuntime
from foundation_ml import _cli_inputs as cli_inputs
from foundation_ml._cli_inputs import MAX_INPUT_BYTES, MAX_JSON_BYTES, load_inputs

if TYPE_CHECKING:
    from collections.abc import Iterator

    from foundation_core import Hub


def meta(datatype: str = "FP32") -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": [-1, -1]}]}


def refused(path: Path, datatype: str = "FP32") -> str:
    with pytest.raises(SystemExit) as info:
        load_inputs(str(path), meta(datatype))
    message = str(info.value)
    assert message.startswith(f"foundation infer: cannot read inputs from {path}: ")
    return message.split(f"{path}: ", 1)[1]


@pytest.mark.parametrize("suffix", [".json", ".npy", ".npz"])
def test_a_fifo_as_input_is_refused_not_waited_on_forever(tmp_path: Path, suffix: str) -> None:
    """Opening a FIFO no one writes to blocked ``infer`` for good."""
    fifo = tmp_path / f"in{suffix}"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(refused(fifo)), daemon=True)
    reader.start()
    reader.join(30)  # a bound only to end a test that hangs: the refusal needs no waiting
    if reader.is_alive():  # blocked in open(): give it a writer, so that the thread ends
        with open(fifo, "wb"):
            pass
        reader.join()
        pytest.fail("load_inputs blocked opening a FIFO")
    assert outcome == ["not a regular file (a FIFO, a device or a socket)"]


def test_a_device_or_a_directory_as_input_is_named(tmp_path: Path) -> None:
    device = tmp_path / "in.json"
    device.symlink_to(os.devnull)
    assert refused(device) == "not a regular file (a FIFO, a device or a socket)"
    directory = tmp_path / "dir.npz"
    directory.mkdir()
    assert "Is a directory" in refused(directory)


@pytest.mark.parametrize(
    ("content", "datatype", "reason"),
    [
        ('{"x": [[1.0, null]]}', "FP32", "input x: null is not a number"),
        ('{"x": [[1, 1.5]]}', "INT32", "input x: 1.5 is not a value of INT32"),
        ('{"x": [[0, 2]]}', "BOOL", "input x: 2 is not a value of BOOL"),
        ('{"x": [["0", "1"]]}', "BOOL", "input x: a string is not a value of BOOL: '0'"),
        ('{"x": [[1]], "x": [[2]]}', "FP32", "'x' is given twice"),
        ('{"x": [[1, 2], [3]]}', "FP32", "input x: setting an array element with a sequence"),
        ('{"x": [[1.0, 1e40]]}', "FP32", "input x: 1e+40 is out of range for FP32"),
        ('{"x": [[1, 300]]}', "INT8", "input x: 300 is out of range for INT8 (-128 to 127)"),
        ('{"x": [[-1' + "0" * 400 + "]]}", "FP32", "input x: -10000000000... (401 digits) is out of range"),
        ('{"x": [[1.0, 1e400]]}', "FP64", '1e400 is past the range of a number (write "Infinity"'),
    ],
    ids=[
        "null",
        "fraction-for-int",
        "two-for-bool",
        "string-for-bool",
        "duplicate-name",
        "ragged",
        "past-fp32",
        "past-int8",
        "past-fp32-huge-int",
        "past-float64",
    ],
)
def test_json_values_the_datatype_cannot_hold_are_refused_naming_the_input(
    tmp_path: Path, content: str, datatype: str, reason: str
) -> None:
    """numpy made null NaN, truncated 1.5 to 1, made 2 and "0" True, and json kept the last of
    two "x": each was sent as if the file had said so."""
    path = tmp_path / "in.json"
    path.write_text(content)
    assert refused(path, datatype).startswith(reason)


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "FP64", "BF16"])
@pytest.mark.parametrize("text", ["1e3", " 5 ", "1_0", "nan", "inf", "+Infinity", "1e40"])
def test_a_json_string_for_a_float_input_is_only_one_of_the_three_non_numbers(
    tmp_path: Path, datatype: str, text: str
) -> None:
    """Python's float() read any numeric text: "1e3" was sent as 1000, " 5 " as 5, "1_0" as 10,
    "nan" and "inf" as NaN and an infinity (cli.md: a string only as "NaN", "Infinity" or
    "-Infinity", what --json writes), and "1e40" was 'a value is out of range', not named."""
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"x": [[1.0, text]]}))
    assert refused(path, datatype) == (
        f'input x: a string is not a value of {datatype} but "NaN", "Infinity" or "-Infinity": {text!r}'
    )


@pytest.mark.parametrize("datatype", ["INT32", "UINT8", "BOOL", "BYTES"])
@pytest.mark.parametrize("text", ["a", "5", "NaN"])
def test_a_json_string_for_an_input_not_of_floats_is_refused_naming_that_string(
    tmp_path: Path, datatype: str, text: str
) -> None:
    """numpy makes every number of a list holding a string text too: the message named the
    list's first element, a number (x: [[1, "a"]] for INT32 was "a string ...: '1'")."""
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"x": [[1, text]]}))
    assert refused(path, datatype) == f"input x: a string is not a value of {datatype}: {text!r}"


_INTEGERS = {"INT8": (-128, 127), "UINT8": (0, 255), "INT32": (-(2**31), 2**31 - 1), "BOOL": (0, 1)}
_values = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(allow_nan=False, width=32), st.booleans(), st.none()
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["FP32", "FP64", *_INTEGERS]), st.lists(_values, min_size=1, max_size=6))
def test_json_values_are_sent_exactly_or_refused(datatype: str, values: list[object]) -> None:
    """Whatever a JSON input holds, ``infer`` sends each value as the file gives it (a float
    rounded to the input's precision), or refuses the file naming it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.json"
        path.write_text(json.dumps({"x": [values]}))
        outcome: list[str] = []
        try:
            x = load_inputs(str(path), meta(datatype))["x"]
        except SystemExit as exc:
            outcome.append(str(exc))
    if outcome:
        assert outcome[0].startswith(f"foundation infer: cannot read inputs from {path}: input x: ")
        return
    assert None not in values
    assert x.shape == (1, len(values))
    precision = np.float32 if datatype == "FP32" else np.float64
    assert x[0].astype(np.float64).tolist() == [float(precision(v)) for v in values]  # type: ignore[arg-type]
    if datatype in _INTEGERS:
        low, high = _INTEGERS[datatype]
        assert all(low <= v <= high for v in values)  # type: ignore[operator]


def test_a_big_endian_npy_is_read_as_its_values(tmp_path: Path) -> None:
    """A ``>f4`` file was sent as is, and refused: "numpy dtype >f4 has no protocol datatype"."""
    x = np.array([[1.5, -2.0, 3.25]], dtype=">f4")
    np.save(tmp_path / "in.npy", x)
    np.savez(tmp_path / "in.npz", x=x)
    for file in ("in.npy", "in.npz"):
        got = load_inputs(str(tmp_path / file), meta())["x"]
        assert got.dtype == np.float32 and got.dtype.isnative
        assert got.tolist() == [[1.5, -2.0, 3.25]]


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "in.npz", x=np.array([{"a": 1}], dtype=object))
    for file in ("in.npy", "in.npz"):
        assert refused(tmp_path / file) == "Object arrays cannot be loaded when allow_pickle=False"


def npy_bytes(shape: tuple[int, ...], data: bytes = b"", dtype: str = "<f4") -> bytes:
    """An .npy file's bytes: a header declaring ``shape`` followed by ``data`` (as much as given)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue() + data


@pytest.mark.parametrize("suffix", [".json", ".npy", ".npz"])
def test_an_input_file_over_its_limit_is_refused_by_its_size_unread(tmp_path: Path, suffix: str) -> None:
    """It was read whole (a JSON file parsed into Python objects) before anything bounded it."""
    limit = MAX_JSON_BYTES if suffix == ".json" else MAX_INPUT_BYTES
    path = tmp_path / f"in{suffix}"
    with open(path, "wb") as f:  # sparse: no disk, and a read of it would be of zeros
        f.truncate(limit + 1)
    assert refused(path) == (
        f"it is {limit + 1} bytes, more than a {suffix} --input may hold ({limit} bytes); "
        "send larger inputs with InferenceClient from Python"
    )


def test_a_json_input_under_a_lower_limit_is_refused_by_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_inputs, "MAX_JSON_BYTES", 100)
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"x": [[0.5] * 40]}))
    assert refused(path).startswith(
        f"it is {path.stat().st_size} bytes, more than a .json --input may hold (100"
    )


def test_an_npz_that_unpacks_past_the_limit_is_refused_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small zip of zeros declares gigabytes: it was inflated whole into memory."""
    monkeypatch.setattr(cli_inputs, "MAX_INPUT_BYTES", 100_000)
    path = tmp_path / "in.npz"
    np.savez_compressed(path, x=np.zeros((1, 200_000), np.float32))
    assert path.stat().st_size < 100_000
    assert refused(path).startswith(
        "its arrays unpack to 800128 bytes, more than a .npz --input may hold (100000"
    )


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("shape", [(10**12,), (10**9, 2)])
def test_an_array_declaring_more_data_than_it_holds_is_refused_unallocated(
    tmp_path: Path, packed: bool, shape: tuple[int, ...]
) -> None:
    """numpy allocates what the header declares before it reads: 4 TB was a MemoryError
    traceback, 8 GB was allocated (then 'Failed to read all data')."""
    data = npy_bytes(shape, b"\0" * 64)
    if packed:
        path = tmp_path / "in.npz"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", data)
    else:
        path = tmp_path / "in.npy"
        path.write_bytes(data)
    what = "'x.npy'" if packed else "the array"
    declared = 4 * 10**12 if shape == (10**12,) else 8 * 10**9
    assert refused(path) == (
        f"{what} declares shape {list(shape)} of <f4 ({declared} bytes) but holds 64 bytes of data"
    )


ONE = npy_bytes((1, 1), b"\0" * 4)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"x": b"hello"}, "'x' is not an .npy array"),
        ({"x.npy": b"hello"}, "'x.npy' is not an .npy array"),
        (
            {"x.npy": npy_bytes((1, 1), b"\0" * 4), "x": npy_bytes((1, 1), b"\0" * 4)},
            "the array 'x' is given twice",
        ),
    ],
    ids=["raw", "raw-named-npy", "twice"],
)
def test_an_npz_member_that_is_no_array_or_named_twice_is_refused(
    tmp_path: Path, members: dict[str, bytes], reason: str
) -> None:
    """np.load handed a member that is no .npy back as bytes ('bytes' object has no attribute
    'dtype', a traceback), and of two members naming one input kept the last."""
    path = tmp_path / "in.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert refused(path) == reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([".npy", ".npz"]))
def test_any_array_file_is_read_or_refused_naming_it(data: bytes, suffix: str) -> None:
    """Whatever bytes follow an .npy header (or make a zip), ``infer`` reads them or refuses the
    file with a message, never a traceback."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"in{suffix}"
        if suffix == ".npz":
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("x.npy", npy_bytes((2, 3)) + data)
        else:
            path.write_bytes(npy_bytes((2, 3)) + data)
        outcome: list[str] = []
        try:
            x = load_inputs(str(path), meta())["x"]
        except SystemExit as exc:
            outcome.append(str(exc))
    if outcome:
        assert outcome[0].startswith(f"foundation infer: cannot read inputs from {path}: ")
    else:
        assert x.shape == (2, 3)


def _npz_patched(path: Path, method: int = 0, flags: int = 0, corrupt: bool = False) -> None:
    """An .npz of one array whose member says ``method`` (compression) and ``flags``, its data
    made garbage if ``corrupt``: as a damaged or hand-made file may."""
    import struct

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", npy_bytes((64, 64), b"\0" * 4 * 64 * 64))
    data = bytearray(buf.getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    for at, flag_at, method_at in ((local, 6, 8), (central, 8, 10)):
        data[at + flag_at] |= flags
        if method:
            data[at + method_at : at + method_at + 2] = struct.pack("<H", method)
    if corrupt:
        start = local + 30 + struct.unpack("<H", data[local + 26 : local + 28])[0]
        for k in range(start, start + 16):
            data[k] ^= 0xFF
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"flags": 1}, "is encrypted, password required"),
        ({"method": 99}, "That compression method is not supported"),
        ({"corrupt": True}, "while decompressing data"),
    ],
    ids=["encrypted", "unknown-compression", "corrupt-deflate"],
)
def test_an_npz_member_that_cannot_be_unpacked_is_refused_naming_it(
    tmp_path: Path, patch: dict[str, object], reason: str
) -> None:
    """An encrypted member, one of a compression zipfile has not, or corrupt deflate data raised
    zipfile's RuntimeError, NotImplementedError or zlib.error: a traceback, not a message."""
    path = tmp_path / "in.npz"
    _npz_patched(path, **patch)  # type: ignore[arg-type]
    message = refused(path)
    assert message.startswith("'x.npy' cannot be unpacked: ") and reason in message


def bf16(*values: float) -> list[int]:
    """The bfloat16 bit patterns of ``values``, each exactly a bfloat16."""
    return (np.array(values, np.float32).view(np.uint32) >> 16).astype(np.uint16).tolist()


def test_json_numbers_for_a_bf16_input_are_its_values(tmp_path: Path) -> None:
    """They were cast to uint16 as bit patterns: 1.5 was refused, 1 sent as 0x0001 (a denormal)."""
    path = tmp_path / "in.json"
    path.write_text('{"x": [[1.5, -2.0, 1, 0.1, true], ["NaN", "Infinity", "-Infinity", 3.39e38, -0.0]]}')
    x = load_inputs(str(path), meta("BF16"))["x"]
    assert DataType.from_numpy(x.dtype) is DataType.BF16 and x.shape == (2, 5)
    assert x[0].tolist() == bf16(1.5, -2.0, 1.0, 0.10009765625, 1.0)  # 0.1 rounded to nearest
    assert x[1].tolist() == [0x7FC0, *bf16(np.inf, -np.inf, 3.3895314e38, -0.0)]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"x": [[1.0, 1e39]]}', "input x: 1e+39 is out of range for BF16 (-3.3895314e+38 to 3.3895314e+38)"),
        ('{"x": [[-3.4e38]]}', "input x: -3.4e+38 is out of range for BF16"),
        ('{"x": [["one"]]}', 'input x: a string is not a value of BF16 but "NaN", "Infinity" or'),
        ('{"x": [[1.0, null]]}', "input x: null is not a number"),
        ('{"x": [[1.0, 1' + "0" * 400 + "]]}", "input x: a value is out of range for BF16 (-3.3895314e+38"),
        ('{"x": [[1.0, -1e400]]}', '-1e400 is past the range of a number (write "Infinity"'),
    ],
    ids=["past-float32", "past-bfloat16", "a-word", "null", "past-float64", "past-float64-float"],
)
def test_json_values_a_bf16_input_cannot_hold_are_refused_naming_them(
    tmp_path: Path, content: str, reason: str
) -> None:
    """-3.4e38 is a float32 but rounds past bfloat16's largest, to an infinity."""
    path = tmp_path / "in.json"
    path.write_text(content)
    assert refused(path, "BF16").startswith(reason)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_array_for_a_bf16_input_is_values_if_float_and_bit_patterns_if_uint16(
    tmp_path: Path, suffix: str
) -> None:
    """A float array was sent as FP32 (refused by the server: "expected BF16"), a uint16 one as
    UINT16."""
    arrays = {
        "f4": np.array([[1.5, -2.0, 0.1]], np.float32),
        "f8": np.array([[1.5, -2.0, 0.1]], np.float64),
        "f2": np.array([[1.5, -2.0, 0.1]], np.float16),
        "u2": np.array([[0x3FC0, 0xC000, 0x3DCD]], np.uint16),
    }
    for kind, array in arrays.items():
        path = tmp_path / f"{kind}{suffix}"
        if suffix == ".npy":
            np.save(path, array)
        else:
            np.savez(path, x=array)
        x = load_inputs(str(path), meta("BF16"))["x"]
        assert DataType.from_numpy(x.dtype) is DataType.BF16, kind
        assert x.tolist() == [[0x3FC0, 0xC000, 0x3DCD]], kind  # 1.5, -2.0, 0.1 rounded


def test_an_array_for_a_bf16_input_past_its_range_is_refused_naming_it(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.array([[1.0, 3.4e38]], np.float32))
    assert refused(tmp_path / "in.npy", "BF16") == (
        "input x: 3.4e+38 is out of range for BF16 (-3.3895314e+38 to 3.3895314e+38)"
    )


def test_an_array_for_another_input_is_left_as_it_is(tmp_path: Path) -> None:
    """Only a BF16 input's arrays are converted: a uint16 array for a UINT16 input stays plain."""
    np.savez(tmp_path / "in.npz", x=np.array([[1, 2]], np.uint16), y=np.array([[1.5]], np.float32))
    two = {"inputs": [{"name": "x", "datatype": "UINT16", "shape": [-1, -1]}, meta("BF16")["inputs"][0]]}
    two["inputs"][1]["name"] = "y"  # type: ignore[index]
    got = load_inputs(str(tmp_path / "in.npz"), two)
    assert DataType.from_numpy(got["x"].dtype) is DataType.UINT16 and got["x"].tolist() == [[1, 2]]
    assert DataType.from_numpy(got["y"].dtype) is DataType.BF16 and got["y"].tolist() == [bf16(1.5)]


@pytest.mark.parametrize("as_json", [True, False])
def test_infer_sends_and_shows_bf16_as_its_values(
    shm_hub: Hub, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """A served BF16 model, end to end: the JSON input's values reach the model as their bit
    patterns, and its BF16 output is shown as values (it was uint16 integers, "dtype": "uint16")."""
    from foundation_core._cli import main
    from foundation_ml import FunctionModel

    seen: list[tuple[DataType, list[int]]] = []

    def twice(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append((DataType.from_numpy(x.dtype), x.tolist()))
        doubled = (x.astype(np.uint32) << 16).view(np.float32) * 2  # exact: an exponent up
        return {"y": (doubled.view(np.uint32) >> 16).astype(np.uint16).view(DataType.BF16.numpy)}

    (tmp_path / "in.json").write_text('{"x": [1.5, -2.0, "Infinity", 0.1]}')
    argv = [
        "infer",
        "--transport",
        "shm",  # not inproc, which `foundation infer` refuses: its server is in another process
        "--name",
        name,
        "--model",
        "twice",
        "--input",
        str(tmp_path / "in.json"),
    ]
    with MLRuntime(shm_hub) as runtime:  # closed before ``name`` checks /dev/shm
        model = FunctionModel(twice, inputs={"x": "BF16[-1]"}, outputs={"y": "BF16[-1]"})
        runtime.register_model("twice", model)
        runtime.start("shm", name)
        assert main([*argv, "--json"] if as_json else argv) == 0
    assert seen[-1] == (DataType.BF16, bf16(1.5, -2.0, np.inf, 0.10009765625))
    out = capsys.readouterr().out
    if as_json:
        y = json.loads(out)["outputs"]["y"]
        assert y == {
            "shape": [4],
            "dtype": "bfloat16",
            "datatype": "BF16",
            "data": [3.0, -4.0, "Infinity", 0.2001953125],
        }
    else:
        assert out.startswith("y: bfloat16[4]\n[") and out.split("\n")[1].split() == [
            "[",
            "3.",
            "-4.",
            "inf",
            "0.2002]",
        ]


def test_an_input_file_not_naming_its_inputs_says_how_to_name_them(tmp_path: Path) -> None:
    """An .npy for a model of two inputs said only "holds one array; the model takes 2 inputs";
    an .npz written as numpy.savez(file, x) (its array named arr_0) was sent, and the server
    answered "missing input(s) x; unexpected input(s) arr_0". Both now name the inputs and the
    numpy.savez call that names them."""
    two = {"inputs": [{"name": n, "datatype": "FP32", "shape": [-1, 4]} for n in ("a", "b")]}
    np.save(tmp_path / "in.npy", np.ones((1, 4), np.float32))
    with pytest.raises(SystemExit) as info:
        load_inputs(str(tmp_path / "in.npy"), two)
    assert str(info.value) == (
        f"foundation infer: {tmp_path / 'in.npy'} holds one array; the model takes 2 inputs (a, b): "
        "write a .npz of one array per input, numpy.savez('in.npz', a=..., b=...)"
    )
    np.savez(tmp_path / "in.npz", np.ones((1, 4), np.float32), np.ones((1, 4), np.float32))
    with pytest.raises(SystemExit) as info:
        load_inputs(str(tmp_path / "in.npz"), two)
    assert str(info.value) == (
        f"foundation infer: {tmp_path / 'in.npz'} holds arr_0, arr_1, the names numpy.savez gives "
        "arrays passed unnamed; name each after its input: numpy.savez('in.npz', a=..., b=...)"
    )
    one = {"inputs": [{"name": "arr_0", "datatype": "FP32", "shape": [-1, 4]}]}  # an input so named
    assert list(load_inputs(str(tmp_path / "in.npz"), one)) == ["arr_0", "arr_1"]


@contextlib.contextmanager
def _served_over_shm_and_inproc(hub: Hub, name: str, version: str | None = None) -> Iterator[None]:
    """Model ``m`` (an FP32[-1, 4] echo) served under ``name`` over shm and inproc; the runtime is
    closed on leaving, before ``name`` checks /dev/shm."""
    from foundation_ml import FunctionModel

    with MLRuntime(hub) as runtime:
        model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        runtime.register_model("m", model, version=version)
        runtime.start("shm", name)
        runtime.start("inproc", name)
        yield


def test_a_version_too_long_to_serve_is_the_same_invalid_input_from_infer_and_the_client(
    shm_hub: Hub, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version of 16 bytes: `foundation infer --version` answered ModelNotFound ("no version
    ..."), InferenceClient.infer InvalidInput over shm (its fixed field) and ModelNotFound over
    inproc. Each now says the version is past the limit, naming it."""
    from foundation_core._cli import main
    from foundation_ml import InferenceClient
    from foundation_ml.errors import InvalidInput

    long = "v" * 16
    said = (
        f"model 'm': version '{long}' is 16 UTF-8 bytes: a version is at most 15, "
        "so no model is served under it"
    )
    argv = ["infer", "--transport", "shm", "--name", name, "--model", "m", "--version", long]
    with _served_over_shm_and_inproc(shm_hub, name):
        assert main(argv) == 1
        assert capsys.readouterr().err == f"foundation infer: InvalidInput: {said}\n"
        for transport in ("shm", "inproc"):
            with InferenceClient(name, transport=transport, hub=shm_hub) as client:
                with pytest.raises(InvalidInput) as info:
                    client.infer("m", {"x": np.zeros((1, 4), np.float32)}, version=long)
                assert str(info.value) == said, transport
                with pytest.raises(InvalidInput, match="is 16 UTF-8 bytes"):  # 8 two-byte characters
                    client.infer("m", {"x": np.zeros((1, 4), np.float32)}, version="é" * 8)


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("a\0b", "holds the unprintable character '\\x00': a version is printable text"),
        ("v\n", "holds the unprintable character '\\n': a version is printable text"),
        ("\ud800", "holds the unprintable character '\\ud800': a version is printable text"),
        (" 2", "starts or ends with a space, as no version does"),
        ("2 ", "starts or ends with a space, as no version does"),
    ],
)
def test_a_version_no_model_can_be_served_under_is_the_same_invalid_input_everywhere(
    shm_hub: Hub, name: str, capsys: pytest.CaptureFixture[str], version: str, why: str
) -> None:
    """A version with a NUL was InvalidInput over shm (its fixed field) but ModelNotFound over
    inproc and from `foundation infer`; a newline or a space at either end ModelNotFound over
    both; a lone surrogate (argv's escape of a byte not UTF-8) a UnicodeEncodeError. Each is now
    the InvalidInput register_model's rule gives, before anything is sent."""
    from foundation_core._cli import main
    from foundation_ml import InferenceClient
    from foundation_ml.errors import InvalidInput

    said = f"model 'm': version {version!r} {why}, so no model is served under it"
    argv = ["infer", "--transport", "shm", "--name", name, "--model", "m", "--version", version]
    x = np.zeros((1, 4), np.float32)
    with _served_over_shm_and_inproc(shm_hub, name, version="2"):
        assert main(argv) == 1
        assert capsys.readouterr().err == f"foundation infer: InvalidInput: {said}\n"
        for transport in ("shm", "inproc"):
            with InferenceClient(name, transport=transport, hub=shm_hub) as client:
                with pytest.raises(InvalidInput) as info:
                    client.infer("m", {"x": x}, version=version)
                assert str(info.value) == said, transport
                for _ in range(2):  # a good version, checked once, is served as before
                    assert client.infer_response("m", {"x": x}, version="2").version == "2"
