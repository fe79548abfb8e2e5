"""Test vectors a decoder must refuse, each for one reason; ``_vectors`` merges them into ``CASES``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from foundation_ml import DataType

from ._layout import DESC_SIZE, MessageFlag
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
    _response,
    _shaped,
)

__all__ = ["_request_error_cases", "_response_error_cases"]

Cases = dict[str, tuple[str, Callable[[], bytearray]]]  # name: (decode_as, build)


def _request_error_cases() -> Cases:
    """Requests a decoder must refuse, each for one reason."""
    return {
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
        **_params_error_cases(),
        **_shape_error_cases(),
    }


_PARAMS_SIZE_AT = 32 + 96  # params_size in the request body


def _params_error_cases() -> Cases:
    """Parameters a decoder must refuse: over 1 MiB (checked before payload_size is compared with
    the counts, so the area needs no MiB), and nested deeper than a recursive parser's stack."""
    return {
        "error_params_too_large": (
            "request",
            lambda: _poke(_request({"x": _X}, request_id=40), _PARAMS_SIZE_AT, "<I", (1 << 20) + 1),
        ),
        "error_params_deep_array": ("request", lambda: _raw_params(b"[" * 100_000, 41)),
        "error_params_deep_object": (
            "request",
            lambda: _raw_params(b'{"a":' * 3000 + b"1" + b"}" * 3000, 42),
        ),
        **_params_value_error_cases(),
    }


def _params_value_error_cases() -> Cases:
    """Parameters that are JSON but not I-JSON (spec 8 step 10): values that readers of doubles,
    of exact integers and of UTF-16 strings would each read differently, or not at all."""
    raw: dict[str, bytes] = {
        # numbers: finite as a double; an integer (no fraction, no exponent) within +-(2^53 - 1)
        "error_params_number_overflow": b'{"a":1e999}',
        "error_params_number_rounds_to_infinity": b'{"a":1.7976931348623159e308}',
        "error_params_integer_too_large": b'{"a":9007199254740992}',
        "error_params_integer_too_small": b'{"a":-9007199254740992}',
        "error_params_integer_400_digits": b'{"a":1' + b"0" * 400 + b"}",
        # strings (names too) are Unicode scalar values: no escaped lone surrogate
        "error_params_lone_surrogate": b'{"a":"\\ud800"}',
        "error_params_lone_low_surrogate_name": b'{"\\udc00":1}',
        # a backslash escapes only what JSON escapes: not a NUL byte
        "error_params_escaped_nul_byte": b'{"a":"\\\x00"}',
        # no name twice, compared once unescaped
        "error_params_duplicate_name": b'{"a":1,"a":2}',
        "error_params_duplicate_escaped_name": b'{"a":1,"\\u0061":2}',
    }
    return {n: ("request", _raw_params_builder(body, 50 + i)) for i, (n, body) in enumerate(raw.items())}


def _shape_error_cases() -> Cases:
    """Empty HOST tensors whose shapes no array library holds (spec 8 step 7)."""
    return {
        # the product overflows 64 bits before the 0 that would make it 0
        "error_shape_overflow_before_zero": (
            "request",
            lambda: _shaped(DataType.UINT8, (1 << 32, 1 << 32, 0), 43),
        ),
        # 4 (the itemsize) x 2^62 overflows 64 bits
        "error_shape_itemsize_overflow": ("request", lambda: _shaped(DataType.FP32, (1 << 62, 0), 44)),
        # 1 x 2^62 x 2 = 2^63: no overflow in unsigned 64 bits, but beyond 2^63 - 1
        "error_empty_tensor_too_large": (
            "request",
            lambda: _shaped(DataType.UINT8, (1 << 62, 2, 0), 45),
        ),
        # a dimension of 2^63 after the 0: the product stays 0, the dimension is still refused
        "error_dimension_after_zero": ("request", lambda: _shaped(DataType.UINT8, (0, 1 << 63), 46)),
    }


def _response_error_cases() -> Cases:
    """Responses a decoder must refuse, each for one reason."""
    return {
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
        # a response's params follow the rules of a request's (spec 8 step 10)
        "error_response_params_duplicate_name": (
            "response",
            lambda: _raw_response_params(b'{"a":true,"a":false}', 24),
        ),
    }
