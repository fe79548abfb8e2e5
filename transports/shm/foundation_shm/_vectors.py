"""The protocol's test vectors: each case built with the codec, written as ``NAME.bin`` + ``NAME.json``.

``python -m foundation_shm._vectors docs/protocol/vectors`` regenerates ``docs/protocol/vectors``;
the test suite checks the committed files are byte-identical to what this produces and that
they decode to their JSON. A ``.bin`` file is a whole area (request or response), header at 0.
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

from ._codec import (
    DecodedRequest,
    DecodedResponse,
    encode_params,
    layout,
    request_payload_size,
    response_payload_size,
    write_request,
    write_response,
)
from ._cuda_desc import FLAG_CUDA_IPC, U64_MAX, CudaIpcRef, write_mixed_request, write_mixed_response
from ._decoders import decode_request, decode_response
from ._layout import BODY_SIZE, CRC_OFFSET, DESC_SIZE, MSG_HEADER_SIZE, MessageFlag, MessageKind

__all__ = ["CASES", "decoded_json", "generate", "main"]

Tensors = dict[str, np.ndarray]
_BF16_NAMES = {"bf": DataType.BF16}  # numpy has no bfloat16: these uint16 inputs travel as BF16


def _request(
    inputs: Tensors,
    *,
    request_id: int,
    model: str = "echo",
    kind: int = MessageKind.INFER_REQUEST,
    version: str = "",
    deadline_ns: int = 0,
    outputs: tuple[str, ...] = (),
    params: dict[str, Any] | None = None,
    flags: int = 0,
) -> bytearray:
    raw_params = encode_params(params or {})
    specs = [(n, _BF16_NAMES.get(n) or DataType.from_numpy(a.dtype), a.shape) for n, a in inputs.items()]
    refs, end = layout(specs, request_payload_size(len(inputs), len(outputs), len(raw_params)))
    buf = bytearray(end)
    for ref, array in zip(refs, inputs.values(), strict=True):
        buf[ref.offset : ref.offset + ref.size] = array.tobytes()
    write_request(
        buf,
        request_id=request_id,
        model=model,
        inputs=refs,
        kind=kind,
        version=version,
        deadline_ns=deadline_ns,
        outputs=outputs,
        params=raw_params,
        flags=flags,
    )
    return buf


def _response(
    outputs: Tensors, *, request_id: int, status: int = 0, text: str = "", required_bytes: int = 0, **kw: Any
) -> bytearray:
    raw_text = text.encode()
    specs = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in outputs.items()]
    refs, end = layout(specs, response_payload_size(len(outputs), len(raw_text), 0))
    buf = bytearray(end)
    for ref, array in zip(refs, outputs.values(), strict=True):
        buf[ref.offset : ref.offset + ref.size] = array.tobytes()
    write_response(
        buf,
        request_id=request_id,
        status=status,
        outputs=refs,
        text=raw_text,
        required_bytes=required_bytes,
        **kw,
    )
    return buf


def _reseal(buf: bytearray) -> bytearray:
    """Recompute the CRC after a deliberate corruption, so the intended check is the one that fails."""
    import zlib

    payload = struct.unpack_from("<I", buf, 16)[0]
    end = min(len(buf), MSG_HEADER_SIZE + payload)
    crc = zlib.crc32(bytes(buf[MSG_HEADER_SIZE:end]), zlib.crc32(bytes(buf[:CRC_OFFSET])))
    struct.pack_into("<I", buf, CRC_OFFSET, crc)
    return buf


def _poke(buf: bytearray, offset: int, fmt: str, value: int, reseal: bool = True) -> bytearray:
    struct.pack_into(fmt, buf, offset, value)
    return _reseal(buf) if reseal else buf


_X = np.arange(6, dtype=np.float32).reshape(2, 3)
_DESC0 = MSG_HEADER_SIZE + BODY_SIZE  # first descriptor
_DATA0 = 448  # align64(32 + 112 + 256): the data of a request with one input and no params


def _cases() -> dict[str, tuple[str, Callable[[], bytearray]]]:
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
            lambda: _request({"bf": np.array(0x3F80, dtype=np.uint16)}, request_id=4),
        ),
        "request_empty_tensor": ("request", lambda: _request({"e": np.zeros((0, 4))}, request_id=5)),
        "request_metadata": (
            "request",
            lambda: _request({}, request_id=6, kind=MessageKind.METADATA_REQUEST),
        ),
        "request_stats": (
            "request",
            lambda: _request({}, request_id=7, model="", kind=MessageKind.STATS_REQUEST),
        ),
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
        "error_bad_magic": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=11), 0, "<I", 0xDEADBEEF, False),
        ),
        "error_bad_version": ("request", lambda: _poke(_request({"x": _X}, request_id=12), 4, "<H", 2)),
        "error_bad_checksum": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=13), _DESC0, "<B", 0x79, False),
        ),
        "error_bad_dtype": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=14), _DESC0 + 64, "<I", 99),
        ),
        "error_ndim_too_large": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=15), _DESC0 + 68, "<I", 9),
        ),
        "error_offset_out_of_bounds": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=16), _DESC0 + 136, "<Q", 1 << 40),
        ),
        "error_size_mismatch": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=17), _DESC0 + 144, "<Q", 25),
        ),
        "error_too_many_tensors": (
            "request",
            lambda: _request({f"t{i}": np.zeros(1, np.uint8) for i in range(65)}, request_id=18),
        ),
        "error_data_crc_mismatch": (
            "request",
            lambda: _corrupt_data(
                _request({"x": _X}, request_id=19, flags=MessageFlag.DATA_CRC),
            ),
        ),
        "error_payload_out_of_bounds": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=20), 16, "<I", 1 << 30),
        ),
        "error_response_bad_magic": (
            "response",
            lambda: _poke(_response({}, request_id=21), 0, "<I", 0x1234F0C0, False),
        ),
        "error_response_duplicate_output": (  # the second output renamed "y" too, CRC resealed
            "response",
            lambda: _rename(
                _response({"y": np.ones(2, np.float32), "z": np.zeros(2, np.float32)}, request_id=22),
                _DESC0 + DESC_SIZE,
                "y",
            ),
        ),
        "error_response_name_without_nul": (  # an output name filling its 64 bytes: no NUL (spec 8)
            "response",
            lambda: _rename(_response({"y": np.ones(2, np.float32)}, request_id=23), _DESC0, "y" * 64),
        ),
    }


def _rename(buf: bytearray, desc: int, name: str) -> bytearray:
    """Overwrite the name of the descriptor at ``desc`` and reseal the CRC."""
    raw = name.encode()
    buf[desc : desc + 64] = raw + bytes(64 - len(raw))
    return _reseal(buf)


def _corrupt_data(buf: bytearray) -> bytearray:
    buf[_DATA0] ^= 0xFF  # the first data byte of the only tensor
    return buf


CASES = _cases()

# --- section 15 (CUDA IPC): written to vectors/cuda_ipc/, for clients that implement it ----------------

_HANDLE = bytes(range(1, 65))


def _cuda_message(kind: str, tensors: list[Any], request_id: int) -> bytearray:
    host = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in (t for t in tensors if type(t) is tuple)]
    count = len(tensors)
    payload = request_payload_size(count, 0, 0) if kind == "request" else response_payload_size(count, 0, 0)
    refs, end = layout(host, payload)
    buf = bytearray(end)
    it = iter(refs)
    placed: list[Any] = []
    for t in tensors:
        if type(t) is tuple:
            ref = next(it)
            buf[ref.offset : ref.offset + ref.size] = t[1].tobytes()
            placed.append(ref)
        else:
            placed.append(t)
    if kind == "request":
        write_mixed_request(buf, tensors=placed, request_id=request_id, model="echo", flags=FLAG_CUDA_IPC)
    else:
        write_mixed_response(buf, tensors=placed, request_id=request_id, model="echo")
    return buf


def _cuda_ref(**kw: Any) -> CudaIpcRef:
    fields: dict[str, Any] = dict(
        name="x", dtype=DataType.FP32, shape=(2, 3), device=0, handle=_HANDLE, offset=4096, size=24
    )
    fields.update(kw)
    return CudaIpcRef(**fields)


def _zero_handle(buf: bytearray) -> bytearray:
    buf[_DESC0 + 168 : _DESC0 + 232] = bytes(64)  # ipc_handle of the first descriptor
    return _reseal(buf)


def _cuda_cases() -> dict[str, tuple[str, Callable[[], bytearray]]]:
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
    }


def _overflowing_shape(buf: bytearray) -> bytearray:
    struct.pack_into("<I", buf, _DESC0 + 68, 2)  # ndim
    struct.pack_into("<QQ", buf, _DESC0 + 72, 1 << 63, 1 << 63)
    struct.pack_into("<Q", buf, _DESC0 + 144, U64_MAX)  # data_size
    struct.pack_into("<Q", buf, _DESC0 + 232, 0)  # ipc_offset 0: only the shape check can catch it
    return _reseal(buf)


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
    code = struct.unpack_from("<I", area, _DESC0 + index * DESC_SIZE + 64)[0]
    iface = array.__array_interface__["data"][0]
    base = np.frombuffer(area, np.uint8).__array_interface__["data"][0]
    return {
        "name": name,
        "datatype": DataType.from_code(code).name,
        "shape": list(array.shape),
        "data_offset": iface - base,
        "data_size": array.nbytes,
        "data_hex": array.tobytes().hex(),
    }


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
            "status_name": ErrorCode(resp.status).name,
            "model": resp.model,
            "version": resp.version,
            "outputs": [_tensor_json(i, n, a, area) for i, (n, a) in enumerate(resp.outputs.items())],
            "text": resp.text,
            "params": resp.params,
            "required_bytes": resp.required_bytes,
        }
    except InferenceError as exc:
        return {"error": exc.code.name, "error_code": int(exc.code), "request_id": exc.request_id}


def generate(directory: Path) -> list[str]:
    names = []
    for where, cases in ((directory, CASES), (directory / CUDA_DIR, CUDA_CASES)):
        where.mkdir(parents=True, exist_ok=True)
        for name, (kind, build) in cases.items():
            area = bytes(build())
            (where / f"{name}.bin").write_bytes(area)
            doc = {"name": name, "decode_as": kind, "size": len(area), "expect": decoded_json(kind, area)}
            (where / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            names.append(name if where == directory else f"{CUDA_DIR}/{name}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/protocol/vectors")
    for name in generate(out):
        print(out / f"{name}.bin")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
