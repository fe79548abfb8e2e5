"""The committed test vectors are exactly what the encoder produces and decode to their JSON."""

from __future__ import annotations

import json
from pathlib import Path

import foundation_shm._decoders as decoders
import numpy as np
import pytest
from foundation_shm._vectors import CASES, area_of, decoded_json, generate

from foundation_ml import DataType

VECTORS = Path(__file__).resolve().parents[3] / "docs" / "protocol" / "vectors"


def test_every_case_has_committed_files() -> None:
    committed = {p.stem for p in VECTORS.glob("*.bin")}
    assert committed == set(CASES)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every vector as the encoder writes it now, once for the module (not once per case)."""
    out = tmp_path_factory.mktemp("vectors")
    generate(out)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_committed_vector_is_byte_identical_to_the_encoder(name: str, generated: Path) -> None:
    assert (VECTORS / f"{name}.bin").read_bytes() == (generated / f"{name}.bin").read_bytes()
    assert (VECTORS / f"{name}.json").read_text() == (generated / f"{name}.json").read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_committed_vector_decodes_to_its_json(name: str) -> None:
    doc = json.loads((VECTORS / f"{name}.json").read_text())
    area = area_of((VECTORS / f"{name}.bin").read_bytes(), doc["size"])
    assert decoded_json(doc["decode_as"], area) == doc["expect"]


def test_only_areas_over_64_kib_are_stored_without_their_closing_spaces() -> None:
    for name in CASES:
        size = json.loads((VECTORS / f"{name}.json").read_text())["size"]
        assert (VECTORS / f"{name}.bin").stat().st_size == size or size > 1 << 16, name


def test_error_vectors_decode_to_errors_and_the_rest_do_not() -> None:
    for name in CASES:
        expect = json.loads((VECTORS / f"{name}.json").read_text())["expect"]
        assert ("error" in expect) == name.startswith("error_"), name


def test_a_vector_file_not_stored_as_spec_14_says_is_refused_not_padded() -> None:
    """Only the file of an area over 64 KiB is shorter than ``size``, and it stops before all the
    spaces that end it: a truncated copy of a smaller area, or a file that ends in a space, is a
    broken vector, not an area ending in spaces."""
    big = 1 << 16
    assert area_of(b"ab", big + 2) == b"ab" + b" " * big
    assert area_of(b"x" * 64, 64) == b"x" * 64
    for file, size in ((b"x" * 65, 64), (b"x" * 63, 64), (b"x" * 10, big), (b"ab ", big + 1)):
        with pytest.raises(ValueError, match="a vector file of"):
            area_of(file, size)


def test_a_decoder_reading_bf16_as_a_plain_uint16_fails_the_bf16_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BF16 decodes to uint16 bit patterns marked BF16 (the dtype's metadata), UINT16 to plain
    uint16; numpy's == ignores the mark, so the harness compares it too: a decoder that loses it
    (a server's model then sees UINT16) does not pass."""
    doc = json.loads((VECTORS / "request_scalar_bf16.json").read_text())
    area = area_of((VECTORS / "request_scalar_bf16.bin").read_bytes(), doc["size"])
    bf16 = DataType.BF16
    monkeypatch.setitem(decoders._DTYPES, bf16.code, (bf16, np.dtype(np.uint16), bf16.itemsize))
    got = decoded_json(doc["decode_as"], area)
    assert got["inputs"][0]["datatype"] == "BF16 decoded as uint16"
    assert got != doc["expect"]
