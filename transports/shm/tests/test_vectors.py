"""The committed test vectors are exactly what the encoder produces and decode to their JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from foundation_shm._vectors import CASES, area_of, decoded_json, generate

VECTORS = Path(__file__).resolve().parents[3] / "docs" / "protocol" / "vectors"


def test_every_case_has_committed_files() -> None:
    committed = {p.stem for p in VECTORS.glob("*.bin")}
    assert committed == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_committed_vector_is_byte_identical_to_the_encoder(name: str, tmp_path: Path) -> None:
    generate(tmp_path)
    assert (VECTORS / f"{name}.bin").read_bytes() == (tmp_path / f"{name}.bin").read_bytes()
    assert (VECTORS / f"{name}.json").read_text() == (tmp_path / f"{name}.json").read_text()


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
