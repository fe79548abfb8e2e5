"""``serve``'s metrics file: replaced whole, readable as a plain file would be, nothing left beside it."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from foundation_ml._metrics_file import write_atomic


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_a_new_metrics_file_gets_the_permissions_a_plain_open_gives(tmp_path: Path, mask: int) -> None:
    """It was always 0o600 (mkstemp's): a node-exporter running as another user could not read it."""
    os.umask(mask)
    write_atomic(str(tmp_path / "m.prom"), "x 1\n")
    assert mode(tmp_path / "m.prom") == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["m.prom"]


@pytest.mark.usefixtures("umask")
def test_a_rewritten_metrics_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    path.chmod(0o640)
    write_atomic(str(path), "x 2\n")
    assert path.read_text() == "x 2\n"
    assert mode(path) == 0o640
    assert os.listdir(tmp_path) == ["m.prom"]


def test_a_reader_sees_one_whole_version_or_another_never_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    versions = ["a" * 200_000 + "\n", "b" * 300_000 + "\n"]
    write_atomic(str(path), versions[0])
    done = threading.Event()
    seen: set[str] = set()

    def read() -> None:
        while not done.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            write_atomic(str(path), versions[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen <= set(versions)
    assert os.listdir(tmp_path) == ["m.prom"]


def test_a_failed_write_leaves_the_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(str(path), "\udc80")  # a lone surrogate cannot be written
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["m.prom"]


def test_a_symlink_stays_and_the_file_it_names_is_rewritten(tmp_path: Path) -> None:
    """The link itself was replaced by a regular file; the file it named never changed again."""
    real = tmp_path / "real.prom"
    real.write_text("old\n")
    link = tmp_path / "m.prom"
    link.symlink_to(real)
    write_atomic(str(link), "x 3\n")
    assert link.is_symlink() and real.read_text() == "x 3\n"
    assert sorted(os.listdir(tmp_path)) == ["m.prom", "real.prom"]


@pytest.mark.parametrize("through_a_link", [False, True], ids=["fifo", "link-to-fifo"])
def test_a_fifo_or_device_is_never_renamed_over(tmp_path: Path, through_a_link: bool) -> None:
    """Renaming over it replaced it: ``--metrics-file /dev/null``, run as root, replaced /dev/null."""
    fifo = tmp_path / "fifo.prom"
    os.mkfifo(fifo)
    path = tmp_path / "m.prom" if through_a_link else fifo
    if through_a_link:
        path.symlink_to(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        write_atomic(str(path), "x 1\n")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(os.listdir(tmp_path)) == sorted({"fifo.prom", path.name})


def test_serve_refuses_a_metrics_file_that_is_no_regular_file_before_anything_loads(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    fifo = tmp_path / "m.prom"
    os.mkfifo(fifo)
    assert main(["serve", "--transport", "shm", "--name", name, "--metrics-file", str(fifo)]) == 2
    captured = capsys.readouterr()
    assert f"foundation serve: error: --metrics-file {fifo}: not a regular file" in captured.err
    assert "loaded" not in captured.out
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_metrics_file_written_again_after_a_failure_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed write was a warning and the writes that succeeded once the directory was back said
    nothing: the last line an operator read about the file said it could not be written."""
    from foundation_ml._metrics_file import MetricsWriter

    where = tmp_path / "d"
    writer = MetricsWriter(str(where / "m.prom"), lambda: "x 1\n")
    with caplog.at_level("INFO", logger="foundation_ml"):
        writer()  # no directory
        writer()
        where.mkdir()
        writer()
        writer()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"could not write the metrics file {where / 'm.prom'}",
        f"the metrics file {where / 'm.prom'} is written again (it was not",
    ]
    assert caplog.records[1].getMessage().endswith("(it was not: No such file or directory)")
    assert (where / "m.prom").read_text() == "x 1\n"
