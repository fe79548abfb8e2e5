"""``built_beside``: a tree built under a hidden name, renamed when complete, removed on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation_core import _files
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


@pytest.mark.parametrize("kind", ["dir", "file", "symlink"])
def test_a_target_appearing_after_every_check_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The target checked absent, then renamed over: an empty directory or a file made in between
    was silently replaced. The rename itself now refuses (renameat2 RENAME_NOREPLACE)."""
    target = tmp_path / "out"
    monkeypatch.setattr(Path, "exists", lambda self: False)  # every check says absent

    def build(partial: Path) -> None:
        partial.mkdir()
        (partial / "new.txt").write_text("new")
        if kind == "dir":
            target.mkdir()  # another process, just now: empty, which rename(2) would replace
        elif kind == "file":
            target.write_text("theirs")
        else:
            target.symlink_to(tmp_path / "elsewhere")

    def attempt() -> None:
        with built_beside(target) as partial:
            build(partial)

    with pytest.raises(FileExistsError):
        attempt()
    monkeypatch.undo()
    if kind == "dir":
        assert target.is_dir() and list(target.iterdir()) == []
    elif kind == "file":
        assert target.read_text() == "theirs"
    else:
        assert target.is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the partial tree was removed


def test_rename_no_replace_without_renameat2_checks_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "_renameat2", None)
    (tmp_path / "a").write_text("a")
    _files.rename_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "a"
    (tmp_path / "c").write_text("c")
    with pytest.raises(FileExistsError):
        _files.rename_no_replace(tmp_path / "c", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "a"
