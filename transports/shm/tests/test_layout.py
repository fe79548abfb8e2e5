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


@pytest.mark.parametrize("bad", ["", "a-b", "a.b", "x" * 33, "x" * 48, "sp ace", "../x"])
def test_server_names_are_restricted(bad: str) -> None:
    with pytest.raises(ValueError, match=r"must be 1-32 characters of \[A-Za-z0-9_\]"):
        L.validate_name(bad)


def test_the_longest_server_name_is_allowed() -> None:
    assert L.validate_name("x" * L.SERVER_NAME_MAX) == "x" * 32


def test_the_longest_data_name_fits_the_channel_block_with_its_nul() -> None:
    """The longest server name, the highest channel index, a 7-digit pid (pid_max 4194304) and an
    11-digit generation: 63 bytes, which data_name holds with its NUL."""
    name = L.data_name("x" * L.SERVER_NAME_MAX, L.MAX_CHANNELS - 1, 4_194_304, 10**11 - 1)
    assert name == "/fdn-" + "x" * 32 + "-d4095-4194304-99999999999"
    assert len(name.encode()) == L.DATA_NAME_SIZE - 1 == 63
    raw = name.encode()
    block = L.CHANNEL.pack(0, 0, 0, 0, 0, 0, 0, raw, 0, 0, 0, 0)
    assert block[L.ChannelField.DATA_NAME :][:64] == raw + b"\0"


@pytest.mark.parametrize(
    ("name", "index", "pid", "gen"),
    [("x" * 48, 10, 12_345, 1), ("x" * 48, 0, 4_194_304, 1), ("x" * 32, 4095, 4_194_304, 10**11)],
    ids=["48-chars-channel-10", "48-chars-7-digit-pid", "longest-name-12-digit-gen"],
)
def test_a_data_name_that_would_not_fit_is_refused(name: str, index: int, pid: int, gen: int) -> None:
    with pytest.raises(ValueError, match="data_name holds at most 63"):
        L.data_name(name, index, pid, gen)
