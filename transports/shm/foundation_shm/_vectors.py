"""The protocol's test vectors: each case built with the codec, written as ``NAME.bin`` + ``NAME.json``.

``python -m foundation_shm._vectors docs/protocol/vectors`` regenerates ``docs/protocol/vectors``;
the test suite checks the committed files are byte-identical to what this produces and that
they decode to their JSON. A ``.bin`` file is a whole area (request or response), header at 0,
but for the spaces that end an area over 64 KiB (``area_of`` puts them back).
The messages are built, and broken for the error cases, by ``_vector_messages``; the requests and
responses a decoder must refuse are in ``_vector_errors``.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from foundation_ml import DataType
from foundation_ml.errors import ErrorCode, InferenceError

from ._codec import DecodedRequest, DecodedResponse
from ._cuda_desc import U64_MAX, CudaIpcRef
from ._decoders import decode_request, decode_response
from ._layout import DESC_SIZE, MessageFlag, MessageKind
from ._vector_checks import CHECK_CASES
from ._vector_errors import _request_error_cases, _response_error_cases
from ._vector_messages import (
    _DESC0,
    _HANDLE,
    _X,
    Tensors,
    _cuda_message,
    _cuda_ref,
    _overflowing_shape,
    _poke,
    _request,
    _response,
    _zero_handle,
)

__all__ = ["CASES", "CUDA_CASES", "CUDA_DIR", "decoded_json", "generate", "main"]

Cases = dict[str, tuple[str, Callable[[], bytearray]]]  # name: (decode_as, build)


def _request_cases() -> Cases:
    """Well-formed requests: every kind, datatypes, an empty tensor, params, DATA_CRC."""
    multi: Tensors = {
        "ids": np.array([1, -2, 3, 1 << 40], dtype=np.int64),
        "pixels": np.arange(12, dtype=np.uint8).reshape(3, 2, 2),
        "mask": np.array([True, False, True, True, False]),
    }
    return {
        "request_fp32": ("request", lambda: _request({"x": _X}, request_id=1)),
        "request_multi": (
            "request",
            lambda: _request(
                multi,
                request_id=0x0102030405060708,
                model="classifier",
                version="2",
                deadline_ns=123_456_789_000,
                outputs=("probs",),
                params={"tag": "a", "temperature": 0.5},
            ),
        ),
        "request_data_crc": (
            "request",
            lambda: _request(
                {"h": np.array([1.5, -2.0], dtype=np.float16)}, request_id=3, flags=MessageFlag.DATA_CRC
            ),
        ),
        "request_scalar_bf16": (
            "request",
            lambda: _request({"bf": np.array(0x3F80, dtype=DataType.BF16.numpy)}, request_id=4),
        ),
        "request_empty_tensor": ("request", lambda: _request({"e": np.zeros((0, 4))}, request_id=5)),
        # [2^62, 0] UINT8: no elements, and 1 x 2^62 (itemsize x the nonzero dimensions) is within
        # 2^63 - 1, so any array library holds it (spec 8 step 7)
        "request_empty_tensor_wide": (
            "request",
            lambda: _request({"e": np.zeros((1 << 62, 0), np.uint8)}, request_id=47),
        ),
        "request_metadata": (
            "request",
            lambda: _request({}, request_id=6, kind=MessageKind.METADATA_REQUEST),
        ),
        "request_stats": (
            "request",
            lambda: _request({}, request_id=7, model="", kind=MessageKind.STATS_REQUEST),
        ),
        # the edges of spec 8 step 10 that a decoder must still take: the empty name, a non-ASCII
        # name, a surrogate pair (escaped as Python writes U+1F600), U+0000, the integers
        # +-(2^53 - 1), the largest double, -0.0
        "request_params_edges": (
            "request",
            lambda: _request(
                {},
                request_id=48,
                params={
                    "": "",
                    "\u00e9": "\U0001f600",
                    "nul": "\x00",
                    "max_int": (1 << 53) - 1,
                    "min_int": -((1 << 53) - 1),
                    "max_double": 1.7976931348623157e308,
                    "neg_zero": -0.0,
                },
            ),
        ),
    }


def _response_cases() -> Cases:
    """Well-formed responses: outputs, the error statuses, a metadata document."""
    return {
        "response_ok": (
            "response",
            lambda: _response(
                {"y": _X * 2, "n": np.array([6], dtype=np.int32)}, request_id=1, model="echo", version="1"
            ),
        ),
        "response_model_not_found": (
            "response",
            lambda: _response(
                {},
                request_id=8,
                status=ErrorCode.MODEL_NOT_FOUND,
                text="model 'nope' is not served (served: echo)",
            ),
        ),
        "response_too_large": (
            "response",
            lambda: _response(
                {},
                request_id=9,
                status=ErrorCode.TOO_LARGE,
                text="response needs 8388672 bytes",
                required_bytes=8388672,
            ),
        ),
        "response_handler_error": (
            "response",
            lambda: _response(
                {}, request_id=10, status=ErrorCode.HANDLER_ERROR, text="ValueError: boom", model="echo"
            ),
        ),
        "response_metadata": (
            "response",
            lambda: _response(
                {}, request_id=6, text='{"inputs":[],"name":"echo","outputs":[]}', model="echo"
            ),
        ),
    }


CASES = {
    **_request_cases(),
    **_response_cases(),
    **_request_error_cases(),
    **_response_error_cases(),
    **CHECK_CASES,
}

# --- section 15 (CUDA IPC): written to vectors/cuda_ipc/, for clients that implement it ----------------


def _cuda_cases() -> Cases:
    desc0 = _DESC0
    return {
        "request_cuda_ipc": (
            "request",
            lambda: _cuda_message(
                "request", [_cuda_ref(device=1), ("n", np.array([7, -7], dtype=np.int32))], request_id=30
            ),
        ),
        "response_cuda_ipc": (
            "response",
            lambda: _cuda_message(
                "response",
                [
                    ("n", np.array([1.5], dtype=np.float64)),
                    _cuda_ref(name="y", handle=_HANDLE[::-1], offset=0),
                ],
                request_id=31,
            ),
        ),
        "error_cuda_zero_handle": (
            "request",
            lambda: _zero_handle(_cuda_message("request", [_cuda_ref()], 32)),
        ),
        "error_cuda_negative_device": (
            "request",
            lambda: _poke(_cuda_message("request", [_cuda_ref()], 33), desc0 + 160, "<i", -1),
        ),
        "error_cuda_offset_overflow": (
            "request",
            lambda: _poke(_cuda_message("request", [_cuda_ref()], 34), desc0 + 232, "<Q", U64_MAX - 7),
        ),
        "error_cuda_data_offset": (
            "request",
            lambda: _poke(_cuda_message("request", [_cuda_ref()], 35), desc0 + 136, "<Q", 448),
        ),
        # shape [2^63, 2^63] FP32: the product overflows 64 bits, whatever data_size says (here
        # 2^64 - 1, a decoder's overflow sentinel must not pass for it)
        "error_cuda_shape_overflow": (
            "request",
            lambda: _overflowing_shape(_cuda_message("request", [_cuda_ref()], 36)),
        ),
        # two inputs of 2^63 bytes each: their total is 2^64, which a 64-bit sum wraps to 0; a
        # decoder must still refuse it as over max_request_bytes (section 12)
        "error_cuda_bytes_overflow": (
            "request",
            lambda: _cuda_message("request", [_huge_ref("a"), _huge_ref("b")], 37),
        ),
    }


def _huge_ref(name: str) -> CudaIpcRef:
    return _cuda_ref(name=name, dtype=DataType.UINT8, shape=(1 << 63,), offset=0, size=1 << 63)


CUDA_CASES = _cuda_cases()
CUDA_DIR = "cuda_ipc"


def _tensor_json(index: int, name: str, array: Any, area: bytes) -> dict[str, Any]:
    if type(array) is CudaIpcRef:
        return {
            "name": name,
            "datatype": array.dtype.name,
            "shape": list(array.shape),
            "location": "CUDA_IPC",
            "device": array.device,
            "ipc_handle_hex": array.handle.hex(),
            "ipc_offset": array.offset,
            "data_size": array.size,
        }
    # the datatype as the descriptor names it, once the decoded array's dtype is that datatype's:
    # a decoder reading FP16 as int16 does not pass, nor one reading BF16 (or BYTES) as a plain
    # uint16 (uint8), whose dtype equals the marked one (numpy's == ignores the metadata)
    dtype = DataType.from_code(struct.unpack_from("<I", area, _DESC0 + index * DESC_SIZE + 64)[0])
    same = array.dtype == dtype.numpy and array.dtype.metadata == dtype.numpy.metadata
    datatype = dtype.name if same else f"{dtype.name} decoded as {_dtype_said(array.dtype)}"
    iface = array.__array_interface__["data"][0]
    base = np.frombuffer(area, np.uint8).__array_interface__["data"][0]
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data_offset": iface - base,
        "data_size": array.nbytes,
        "data_hex": array.tobytes().hex(),
    }


def _dtype_said(dtype: np.dtype[Any]) -> str:
    """``dtype`` named with its datatype mark, if any (a BF16 read as UINT16 says so)."""
    mark = dtype.metadata.get("datatype") if dtype.metadata else None
    return f"{dtype} ({mark})" if mark else str(dtype)


def _status_name(status: int) -> str:
    """The status's name; a code this version does not define is INTERNAL (spec 9)."""
    return ErrorCode(status).name if status in ErrorCode._value2member_map_ else ErrorCode.INTERNAL.name


def decoded_json(kind: str, area: bytes) -> dict[str, Any]:
    """The expected decoding of ``area`` as JSON: the message's fields, or the error it must raise."""
    try:
        if kind == "request":
            req: DecodedRequest = decode_request(area)
            return {
                "kind": req.kind,
                "request_id": req.request_id,
                "flags": req.flags,
                "model": req.model,
                "version": req.version,
                "deadline_ns": req.deadline_ns,
                "inputs": [_tensor_json(i, n, a, area) for i, (n, a) in enumerate(req.inputs.items())],
                "outputs": list(req.outputs),
                "params": req.params,
            }
        resp: DecodedResponse = decode_response(area)
        return {
            "kind": MessageKind.RESPONSE.value,
            "request_id": resp.request_id,
            "flags": resp.flags,
            "status": resp.status,
            "status_name": _status_name(resp.status),
            "model": resp.model,
            "version": resp.version,
            "outputs": [_tensor_json(i, n, a, area) for i, (n, a) in enumerate(resp.outputs.items())],
            "text": resp.text,
            "params": resp.params,
            "required_bytes": resp.required_bytes,
        }
    except InferenceError as exc:
        return {"error": exc.code.name, "error_code": int(exc.code), "request_id": exc.request_id}


_STORED_WHOLE = 1 << 16  # an area up to 64 KiB is stored whole; a larger one stops at its spaces


def stored(area: bytes) -> bytes:
    """The bytes of ``area`` a ``.bin`` file holds (spec 14): all of it, or for an area over
    64 KiB all but the spaces that end it (``area_of`` puts them back)."""
    return area if len(area) <= _STORED_WHOLE else area.rstrip(b" ")


def area_of(file: bytes, size: int) -> bytes:
    """The area a ``.bin`` file of a vector of ``size`` bytes stands for: its bytes, then spaces
    up to ``size`` (spec 14). A file longer than ``size``, or shorter for an area of at most
    64 KiB or ending in a space (it stops before all the spaces), is a broken vector: ValueError."""
    if len(file) > size:
        raise ValueError(f"a vector file of {len(file)} bytes for an area of {size}")
    if len(file) < size and size <= _STORED_WHOLE:
        raise ValueError(
            f"a vector file of {len(file)} bytes for an area of {size} "
            "(only one over 64 KiB may leave out its spaces)"
        )
    if len(file) < size and file.endswith(b" "):
        raise ValueError(
            f"a vector file of {len(file)} bytes ending in a space "
            "(it stops before all the spaces ending the area)"
        )
    return file + b" " * (size - len(file))


def generate(directory: Path) -> list[str]:
    names = []
    for where, cases in ((directory, CASES), (directory / CUDA_DIR, CUDA_CASES)):
        where.mkdir(parents=True, exist_ok=True)
        for name, (kind, build) in cases.items():
            area = bytes(build())
            (where / f"{name}.bin").write_bytes(stored(area))
            doc = {"name": name, "decode_as": kind, "size": len(area), "expect": decoded_json(kind, area)}
            (where / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            names.append(name if where == directory else f"{CUDA_DIR}/{name}")
    return names


_USAGE = "usage: python -m foundation_shm._vectors [DIRECTORY]   (default docs/protocol/vectors)"


def main(argv: list[str] | None = None) -> int:
    """Write every vector (``.bin`` and its ``.json``) under DIRECTORY; print their paths."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(f"{_USAGE}\nunexpected argument(s): {' '.join(args)}", file=sys.stderr)
        return 2
    out = Path(args[0] if args else "docs/protocol/vectors")
    for name in generate(out):
        print(out / f"{name}.bin")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
