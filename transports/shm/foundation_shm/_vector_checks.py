"""Test vectors for what the first set leaves out: each status a response carries, and each check
of spec section 8 (in its order) that no other vector reaches.

A decoder written from the spec alone meets every one of these: a status it must name (an unknown
one is INTERNAL, spec 9), a request kind in the response area, a name that is not UTF-8, an offset
below the header, parameters that are JSON but no object. The ``*_before_*`` cases break two
checks at once and expect the one section 8 puts first. ``_vectors`` merges them into ``CASES``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from foundation_ml.errors import ErrorCode

from ._layout import BODY_SIZE, DESC_SIZE, MSG_HEADER_SIZE, MessageFlag, MessageKind
from ._vector_messages import (
    _DESC0,
    _X,
    _corrupt_data,
    _poke,
    _raw_params,
    _raw_params_builder,
    _raw_response_params,
    _rename,
    _request,
    _reseal,
    _response,
)

__all__ = ["CHECK_CASES"]

Cases = dict[str, tuple[str, Callable[[], bytearray]]]  # name: (decode_as, build)

_BODY = 32  # the body, after the 32-byte header
_MODEL_AT = _BODY  # a request's model name (64 bytes)
_VERSION_AT = _BODY + 64  # a request's model version (16 bytes)
_STATUS_AT = _BODY  # a response's status
_INPUT_COUNT_AT = _BODY + 88  # a request's input_count
_OUTPUT_COUNT_AT = _BODY + 4  # a response's output_count


def _status_cases() -> Cases:
    """One response for each error status a server sends that no other vector carries, and one
    with a status this version does not define (decoded as it is, named INTERNAL, spec 9)."""
    texts = {
        ErrorCode.BAD_MAGIC: "bad magic 0xDEADBEEF (want 0xF0C01234)",
        ErrorCode.BAD_VERSION: "protocol version 2 (this side speaks 1)",
        ErrorCode.BAD_CHECKSUM: "CRC32 0x00000000 != 0x12345678 in the header",
        ErrorCode.INVALID_INPUT: "tensor 'x': unknown dtype code 99 (known: 1..14)",
        ErrorCode.DEADLINE_EXCEEDED: "deadline passed before the handler ran",
        ErrorCode.OVERLOADED: "queue full",
        ErrorCode.SHUTTING_DOWN: "server 'demo' is stopping",
        ErrorCode.CUDA_UNAVAILABLE: "CUDA IPC requested but no CUDA device",
        ErrorCode.INTERNAL: "internal error",
    }
    cases: Cases = {
        f"response_{code.name.lower()}": ("response", _status_builder(code, text, 60 + i))
        for i, (code, text) in enumerate(texts.items())
    }
    cases["response_unknown_status"] = (
        "response",
        lambda: _poke(
            _response({}, request_id=69, status=ErrorCode.INTERNAL, text="from 1.9"), _STATUS_AT, "<I", 99
        ),
    )
    return cases


def _status_builder(code: ErrorCode, text: str, request_id: int) -> Callable[[], bytearray]:
    return lambda: _response({}, request_id=request_id, status=code, text=text)


def _header_cases() -> Cases:
    """Steps 2-6 of section 8, in a request or a response area."""
    one_input = {"x": _X}
    return {
        # step 2 comes before step 4: a version 2 message whose CRC is also wrong is BAD_VERSION
        "error_bad_version_before_checksum": (
            "request",
            lambda: _poke(_request(one_input, request_id=70), 4, "<H", 2, False),
        ),
        # step 3: the payload holds at least the body
        "error_payload_below_body": (
            "request",
            lambda: _poke(_request(one_input, request_id=71), 16, "<I", 111),
        ),
        # step 3: payload_size is the size the counts give (here 64 bytes more, within the area)
        "error_payload_size_mismatch": (
            "request",
            lambda: _poke(_request(one_input, request_id=72), 16, "<I", 112 + DESC_SIZE + 64),
        ),
        # step 3: the size the counts give is computed without overflow: 112 + 256 x 2^24 is
        # 2^32 + 112, which 32 bits would wrap to the 112 of payload_size (then step 6's TOO_LARGE)
        "error_payload_count_wraps": (
            "request",
            lambda: _poke(_request({}, request_id=86), _INPUT_COUNT_AT, "<I", 1 << 24),
        ),
        "error_response_payload_count_wraps": (
            "response",
            lambda: _poke(_response({}, request_id=87), _OUTPUT_COUNT_AT, "<I", 1 << 24),
        ),
        # step 4 comes before step 5: a RESPONSE kind in the request area with a wrong CRC
        "error_checksum_before_kind": (
            "request",
            lambda: _poke(_request(one_input, request_id=73), 6, "<H", MessageKind.RESPONSE, False),
        ),
        # step 5: the request area holds a request kind (1, 3 or 4), the response area a RESPONSE
        "error_kind_not_request": (
            "request",
            lambda: _poke(_request(one_input, request_id=74), 6, "<H", MessageKind.RESPONSE),
        ),
        "error_kind_unknown": ("request", lambda: _poke(_request(one_input, request_id=75), 6, "<H", 9)),
        "error_response_kind_not_response": (
            "response",
            lambda: _poke(_response({}, request_id=76), 6, "<H", MessageKind.INFER_REQUEST),
        ),
        # step 6: requested outputs are capped as inputs are (65 names)
        "error_too_many_outputs": (
            "request",
            lambda: _request({}, request_id=77, outputs=tuple(f"y{i}" for i in range(65))),
        ),
        "error_response_bad_checksum": (
            "response",
            lambda: _poke(_response({}, request_id=78, text="ok"), 32 + 112, "<B", ord("O"), False),
        ),
        "error_response_bad_version": (
            "response",
            lambda: _poke(_response({}, request_id=79), 4, "<H", 0),
        ),
    }


def _descriptor_cases() -> Cases:
    """Step 7 of section 8: each check of a HOST descriptor the first set does not reach."""
    one_input = {"x": _X}  # FP32 [2, 3] at 448 in an area of 512 bytes
    return {
        "error_unknown_location": (
            "request",
            lambda: _poke(_request(one_input, request_id=80), _DESC0 + 152, "<I", 2),
        ),
        "error_name_not_utf8": (
            "request",
            lambda: _rename_raw(_request(one_input, request_id=81), _DESC0, b"x\xff"),
        ),
        # an offset inside the header (aligned to the itemsize, inside the area)
        "error_offset_in_header": (
            "request",
            lambda: _poke(_request(one_input, request_id=82), _DESC0 + 136, "<Q", 16),
        ),
        "error_offset_not_aligned": (
            "request",
            lambda: _poke(_request(one_input, request_id=83), _DESC0 + 136, "<Q", 450),
        ),
        # data_offset + data_size wraps 64 bits to a small number: computed without overflow
        "error_offset_wraps": (
            "request",
            lambda: _poke(_request(one_input, request_id=84), _DESC0 + 136, "<Q", (1 << 64) - 8),
        ),
        "error_duplicate_input": (
            "request",
            lambda: _rename(
                _request({"x": _X, "z": np.zeros(2, np.float32)}, request_id=85), _DESC0 + DESC_SIZE, "x"
            ),
        ),
    }


def _rename_raw(buf: bytearray, desc: int, raw: bytes) -> bytearray:
    """Overwrite the 64-byte name at ``desc`` with ``raw`` (NUL-padded) and reseal the CRC."""
    return _fill(buf, desc, raw + bytes(64 - len(raw)))


def _fill(buf: bytearray, at: int, raw: bytes) -> bytearray:
    """Overwrite ``len(raw)`` bytes at ``at`` and reseal the CRC (of the header and payload)."""
    buf[at : at + len(raw)] = raw
    return _reseal(buf)


def _text_field_cases() -> Cases:
    """Fixed strings (section 8, after the steps): UTF-8 ended by a NUL within the field."""
    return {
        # the model name is checked between steps 6 and 7, the version and the output names
        # between steps 9 and 10: with the data's CRC wrong too, the first is INVALID_INPUT, the
        # second BAD_CHECKSUM; with 65 inputs too, the model name is TOO_LARGE
        "error_model_before_data_crc": (
            "request",
            lambda: _corrupt_data(
                _rename(_request({"x": _X}, request_id=93, flags=MessageFlag.DATA_CRC), _MODEL_AT, "m" * 64)
            ),
        ),
        "error_data_crc_before_version": (
            "request",
            lambda: _corrupt_data(
                _fill(_request({"x": _X}, request_id=94, flags=MessageFlag.DATA_CRC), _VERSION_AT, b"v" * 16)
            ),
        ),
        "error_too_many_before_model": (
            "request",
            lambda: _rename(
                _request({f"t{i}": np.zeros(1, np.uint8) for i in range(65)}, request_id=95),
                _MODEL_AT,
                "m" * 64,
            ),
        ),
        "error_model_without_nul": (
            "request",
            lambda: _rename(_request({"x": _X}, request_id=90), _MODEL_AT, "m" * 64),
        ),
        "error_model_not_utf8": (
            "request",
            lambda: _rename_raw(_request({"x": _X}, request_id=91), _MODEL_AT, b"\xc3("),
        ),
        "error_output_name_not_utf8": (
            "request",
            lambda: _rename_raw(_request({}, request_id=92, outputs=("y",)), 32 + 112, b"\xe2\x82"),
        ),
    }


def _params_cases() -> Cases:
    """Step 10 of section 8: parameters that are no JSON object of strings, numbers and booleans."""
    raw = {
        "error_params_not_object": b"[1]",
        "error_params_null_value": b'{"a":null}',
        "error_params_array_value": b'{"a":[1]}',
        "error_params_not_utf8": b'{"a":"\xff"}',
        "error_params_bom": b'\xef\xbb\xbf{"a":1}',
        "error_params_nan": b'{"a":NaN}',
        "error_params_trailing_bytes": b'{"a":1}x',
    }
    return {n: ("request", _raw_params_builder(body, 100 + i)) for i, (n, body) in enumerate(raw.items())}


def _ignored_desc(buf: bytearray, desc: int, ndim: int) -> None:
    """Set every byte of the descriptor at ``desc`` that a HOST tensor's decoder ignores (spec 5)."""
    for i in range(ndim, 8):
        struct.pack_into("<Q", buf, desc + 72 + 8 * i, 7 + i)  # shape[ndim..7]
    struct.pack_into("<IiI", buf, desc + 156, 0xA5A5, 3, 0xBEEF)  # flags, device, reserved0
    buf[desc + 168 : desc + 232] = bytes(range(1, 65))  # ipc_handle
    struct.pack_into("<Q", buf, desc + 232, 4096)  # ipc_offset
    buf[desc + 240 : desc + 256] = b"\xff" * 16  # reserved
    buf[desc + 2 : desc + 7] = b"\x00junk"  # after the name's NUL ("x", "y")


def _ignored_header(buf: bytearray) -> None:
    struct.pack_into("<I", buf, 20, struct.unpack_from("<I", buf, 20)[0] | 1 << 9)  # an undefined flag
    struct.pack_into("<I", buf, 24, 0xDEADBEEF)  # the header's reserved


def _ignored_request() -> bytearray:
    buf = _request({"x": _X}, request_id=110)
    _ignored_header(buf)
    struct.pack_into("<IQ", buf, _BODY + 100, 0x12345678, 0x1122334455667788)  # reserved0, reserved1
    buf[_MODEL_AT + 4 : _MODEL_AT + 7] = b"\x00zz"  # after the model name's NUL ("echo")
    _ignored_desc(buf, _DESC0, _X.ndim)
    return _reseal(buf)


def _ignored_response() -> bytearray:
    buf = _response({"y": _X}, request_id=111, model="echo")
    _ignored_header(buf)
    struct.pack_into("<Q", buf, _BODY + 104, 0x1122334455667788)  # reserved
    buf[_BODY + 24 + 4 : _BODY + 24 + 7] = b"\x00zz"  # after the model name's NUL
    _ignored_desc(buf, _DESC0, _X.ndim)
    return _reseal(buf)


def _ignored_cases() -> Cases:
    """Messages with every field a decoder ignores set (spec 5, "Fields a decoder ignores"): they
    decode as the same message with those fields 0 (the undefined flag bit still shows in
    ``flags``). Named ``decode_*``: an encoder writes those fields 0, so these are not re-encoded."""
    return {
        "decode_request_ignored_fields": ("request", _ignored_request),
        "decode_response_ignored_fields": ("response", _ignored_response),
    }


_MIB = 1 << 20
_TEXT_SIZE_AT = _BODY + 8  # a response's text_size


def _spaced(buf: bytearray, used: int) -> bytearray:
    """Spaces (JSON whitespace) from ``used`` to the end of the area: the stored file stops at
    ``used`` and a harness fills the rest of the area with spaces (spec 14)."""
    buf[used:] = b" " * (len(buf) - used)
    return _reseal(buf)


def _params_of(size: int, request_id: int, response: bool) -> bytearray:
    """A message with no tensors whose parameters are ``{"a":1}`` followed by spaces up to
    ``size`` bytes (JSON whitespace may follow the object)."""
    raw = b'{"a":1}' + b" " * (size - 7)
    buf = _raw_response_params(raw, request_id) if response else _raw_params(raw, request_id)
    return _spaced(buf, MSG_HEADER_SIZE + BODY_SIZE + 7)


def _params_closed_last(size: int, request_id: int, response: bool) -> bytearray:
    """A message with no tensors whose ``size`` bytes of parameters are ``{"a":1``, spaces, then
    the ``}`` that closes the object as their last byte: a decoder that reads fewer bytes than
    ``params_size`` (a cap below it, a narrower size field) finds no object. Stored whole: no
    spaces end the area, so a harness pads nothing."""
    raw = b'{"a":1' + b" " * (size - 7) + b"}"
    return _raw_response_params(raw, request_id) if response else _raw_params(raw, request_id)


def _text_over_cap() -> bytearray:
    """A response whose error text is 1 MiB + 1 bytes (spaces; a text is not checked)."""
    buf = bytearray(_response({}, request_id=122, status=ErrorCode.INTERNAL))
    payload = BODY_SIZE + _MIB + 1
    buf.extend(bytes(-(-(MSG_HEADER_SIZE + payload) // 64) * 64 - len(buf)))
    struct.pack_into("<I", buf, 16, payload)
    struct.pack_into("<I", buf, _TEXT_SIZE_AT, _MIB + 1)
    return _spaced(buf, MSG_HEADER_SIZE + BODY_SIZE)


def _limit_cases() -> Cases:
    """The limits of section 11 that a decoder checks: a request's parameters of exactly 1 MiB
    pass (one byte more is ``error_params_too_large``), a response's parameters have no cap, a
    response's text does (1 MiB, INVALID_INPUT), a response's outputs are capped as a request's
    tensors are (65: TOO_LARGE), and a name or version filling its fixed field is refused. The
    MiB are spaces the stored file leaves out, but in the ``*_closed_last`` cases, whose last
    byte closes the object (their files hold all of it)."""
    return {
        "decode_request_params_1mib": ("request", lambda: _params_of(_MIB, 120, response=False)),
        "decode_response_params_over_1mib": ("response", lambda: _params_of(_MIB + 1, 121, response=True)),
        # the same sizes, the object closed by their last byte: every byte of them is read
        "decode_request_params_1mib_closed_last": (
            "request",
            lambda: _params_closed_last(_MIB, 128, response=False),
        ),
        "decode_response_params_over_1mib_closed_last": (
            "response",
            lambda: _params_closed_last(_MIB + 1, 129, response=True),
        ),
        "error_response_text_too_large": ("response", _text_over_cap),
        "error_response_too_many_outputs": (
            "response",
            lambda: _response({f"y{i}": np.zeros(1, np.uint8) for i in range(65)}, request_id=123),
        ),
        # names of 63 bytes, versions of 15 (section 11): a field filled to its end has no NUL
        "error_name_without_nul": (
            "request",
            lambda: _rename(_request({"x": _X}, request_id=124), _DESC0, "x" * 64),
        ),
        "error_version_without_nul": (
            "request",
            lambda: _fill(_request({"x": _X}, request_id=125), _VERSION_AT, b"v" * 16),
        ),
        "error_response_model_without_nul": (
            "response",
            lambda: _rename(_response({}, request_id=126), _BODY + 24, "m" * 64),
        ),
        "error_response_version_without_nul": (
            "response",
            lambda: _fill(_response({}, request_id=127), _BODY + 88, b"v" * 16),
        ),
    }


CHECK_CASES: Cases = {
    **_status_cases(),
    **_header_cases(),
    **_descriptor_cases(),
    **_text_field_cases(),
    **_params_cases(),
    **_ignored_cases(),
    **_limit_cases(),
}
