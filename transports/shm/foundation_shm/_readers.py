"""The cached readers: a message whose payload repeats the previous one on the same area (the
common case: the same model, tensors and offsets) re-uses that one's checked decoding, after the
header and CRC checks, instead of decoding the descriptors again. Anything else goes to
``_decoders.decode_request`` / ``decode_response``."""

from __future__ import annotations

import zlib
from typing import Any

from foundation_ml.errors import BadChecksum

from ._accel import hot
from ._codec import (
    _DATA_CRC,
    _RESPONSE,
    _U32,
    DEFAULT_LIMITS,
    DecodedRequest,
    DecodedResponse,
    Limits,
)
from ._cuda_desc import has_cuda_refs
from ._decoders import _REQUEST_KINDS, decode_request_copy, decode_response_copy
from ._layout import CRC_OFFSET, MSG_HEADER, MSG_HEADER_SIZE, MSG_MAGIC, PROTOCOL_VERSION

__all__ = ["RequestReader", "ResponseReader"]

_make_request = DecodedRequest._make  # tuple.__new__: a third of the keyword constructor's cost
_make_response = DecodedResponse._make


class _Reader:
    """Decodes the messages of one area; a message whose payload bytes equal the previous one's
    (same model, tensors, offsets: the common case) re-uses its checked result, after the header
    and CRC checks, instead of decoding the descriptors again."""

    __slots__ = ("area", "last", "limits", "payload", "size")
    _SKIP = (0, 0)  # bytes of the payload that may differ from the cached one (the deadline)

    def __init__(self, area: Any, size: int, limits: Limits = DEFAULT_LIMITS) -> None:
        self.area = area
        self.size = size
        self.limits = limits
        self.payload = b""
        self.last: tuple[Any, ...] | None = None

    def _hit(self) -> tuple[int, int, int, int] | None:
        """(kind, request_id, flags, deadline) when the message repeats the cached payload (the
        deadline: the request's, from its body; 0 for a response)."""
        if self.last is None:
            return None
        area = self.area
        if hot is not None:  # the same checks in C, without copying the payload out
            got = hot.repeat(area, self.size, self.payload, *self._SKIP)
            if got is None:
                return None
            if got == -1:
                rid, crc = int.from_bytes(area[8:16], "little"), _U32.unpack_from(area, CRC_OFFSET)[0]
                raise BadChecksum(f"CRC32 does not match 0x{crc:08X} in the header", request_id=rid)
            return got  # type: ignore[no-any-return]
        magic, version, kind, rid, payload, flags, _, crc = MSG_HEADER.unpack_from(area, 0)
        if (
            magic != MSG_MAGIC
            or version != PROTOCOL_VERSION
            or flags & _DATA_CRC
            or payload != len(self.payload)
        ):
            return None
        raw = bytes(area[MSG_HEADER_SIZE : MSG_HEADER_SIZE + payload])
        if raw != self.payload and not self._same_but_deadline(raw):
            return None
        if zlib.crc32(raw, zlib.crc32(area[:CRC_OFFSET])) != crc:
            raise BadChecksum(f"CRC32 does not match 0x{crc:08X} in the header", request_id=rid)
        lo, hi = self._SKIP
        return kind, rid, flags, int.from_bytes(raw[lo:hi], "little") if hi - lo == 8 else 0

    def _same_but_deadline(self, raw: bytes) -> bool:
        return False


class RequestReader(_Reader):
    __slots__ = ()
    _SKIP = (80, 88)  # deadline_ns in the request body

    def _same_but_deadline(self, raw: bytes) -> bool:
        # a client with a timeout sends a new deadline every call; everything else may repeat
        last = self.payload
        return raw[:80] == last[:80] and raw[88:] == last[88:]

    def read(self) -> DecodedRequest:
        hit = self._hit()
        if hit is not None and hit[0] in _REQUEST_KINDS:
            model, version, _, inputs, outputs, params = self.last  # type: ignore[misc]
            kind, rid, flags, deadline = hit
            return _make_request((kind, rid, flags, model, version, deadline, dict(inputs), outputs, params))
        # the payload remembered is the copy decoded (spec 13): read again from the area, it was
        # the bytes of whatever the client wrote meanwhile, and a later request of those bytes
        # was answered with this decoding, another message's
        dec, msg = decode_request_copy(self.area, self.size, self.limits)
        if not dec.flags & _DATA_CRC and not dec.params:
            self.payload = msg[MSG_HEADER_SIZE:]
            self.last = (dec.model, dec.version, dec.deadline_ns, dict(dec.inputs), dec.outputs, {})
        return dec


class ResponseReader(_Reader):
    """``cuda``: whether the last response read holds CUDA_IPC outputs (never a remembered one)."""

    __slots__ = ("cuda",)

    def read(self) -> DecodedResponse:
        hit = self._hit()
        if hit is not None and hit[0] == _RESPONSE:
            self.cuda = False
            status, model, version, outputs, text, params, required = self.last  # type: ignore[misc]
            return _make_response(
                (hit[1], hit[2], status, model, version, dict(outputs), text, params, required)
            )
        # as a request's (RequestReader.read): the payload remembered is the copy decoded; read
        # again from the area, with its payload_size, it was whatever the server wrote meanwhile,
        # and a later response of those bytes was read as this decoding, another message's
        dec, msg = decode_response_copy(self.area, self.size, self.limits)
        self.cuda = has_cuda_refs(dec.outputs)
        if not dec.flags & _DATA_CRC and not dec.params and not dec.status and not self.cuda:
            self.payload = msg[MSG_HEADER_SIZE:]
            self.last = (0, dec.model, dec.version, dict(dec.outputs), dec.text, {}, dec.required_bytes)
        return dec
