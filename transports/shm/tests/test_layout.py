"""The struct formats match the offsets and sizes the spec (docs/protocol/shm.md) gives."""

from __future__ import annotations

import struct

import pytest
from foundation_shm import _layout as L


def test_struct_sizes_are_those_of_the_spec() -> None:
    assert (L.MSG_HEADER.size, L.REQ_BODY.size, L.RESP_BODY.size) == (32, 112, 112)
    assert (L.DESC.size, L.REGION.size, L.CHANNEL.size) == (256, 256, 256)
    assert L.HEADER_AND_BODY.size == L.HEADER_AND_RESP.size == 32 + 112


def _offsets(fmt: str) -> list[int]:
    """Offsets of each field of a little-endian struct format (no padding in these formats)."""
    out, at = [], 0
    for count, code in __import__("re").findall(r"(\d*)([a-zA-Z])", fmt.lstrip("<")):
        n = int(count or 1)
        if code == "x":
            at += n
            continue
        if code == "s":
            out.append(at)
            at += n
            continue
        for _ in range(n):
            out.append(at)
            at += struct.calcsize("<" + code)
    return out


def test_region_field_offsets_match_the_struct() -> None:
    offsets = _offsets(L.REGION.format)
    for field in L.RegionField:
        if field is not L.RegionField.CONTROL_TEXT_MAX:
            assert field.value in offsets, field


def test_channel_halves_are_in_separate_cache_lines() -> None:
    assert L.ChannelField.SERVER_SEQ >= 128 > L.ChannelField.DATA_NAME
    assert _offsets(L.CHANNEL.format)[:7] == [0, 8, 12, 16, 24, 32, 40]


@pytest.mark.parametrize("bad", ["", "a-b", "a.b", "x" * 49, "sp ace", "../x"])
def test_server_names_are_restricted(bad: str) -> None:
    with pytest.raises(ValueError, match="must be 1-48"):
        L.validate_name(bad)
