"""``built_beside``: a tree built under a hidden name, renamed when complete, removed on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation_core._files import built_beside


def test_the_tree_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out"
    with built_beside(target) as partial:
        partial.mkdir()
        (partial / "a.txt").write_text("a")
        assert not target.exists() and partial.name.startswith(".out.partial-")
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in target.parent.iterdir()] == ["out"]


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_failure_leaves_nothing(tmp_path: Path, kind: str) -> None:
    def build(partial: Path) -> None:
        if kind == "dir":
            partial.mkdir()
            (partial / "a.txt").write_text("a")
        else:
            partial.write_bytes(b"half")
        raise RuntimeError("disk full")

    def attempt() -> None:
        with built_beside(tmp_path / "out") as partial:
            build(partial)

    with pytest.raises(RuntimeError, match="disk full"):
        attempt()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_or_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError), built_beside(tmp_path / "out"):
        pass
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="file"), built_beside(tmp_path / "file" / "x" / "out"):
        pass
