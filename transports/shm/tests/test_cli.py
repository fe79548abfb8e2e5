"""``foundation shm ls`` tells live from dead servers; ``clean`` removes only the dead ones' objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from foundation_shm import _accel, _start_lock
from foundation_shm._objects import objects_of

from foundation_core._cli import main

from .conftest import EchoProcess, dying

pytestmark = pytest.mark.slow


def _ls(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    assert main(["shm", "ls", "--json"]) == 0
    return {s["name"]: s for s in json.loads(capsys.readouterr().out)["servers"]}


def test_ls_and_clean_tell_live_from_dead(
    echo_server: EchoProcess, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = _ls(capsys)[name]
    assert listed["alive"] is True and listed["pid"] == echo_server.pid and listed["state"] == "ready"
    assert main(["shm", "clean", name]) == 1  # a live server is left alone
    assert "left alone" in capsys.readouterr().out
    assert objects_of(name)
    echo_server.kill()
    assert _ls(capsys)[name]["alive"] is False
    assert main(["shm", "clean", "--dry-run", name]) == 0
    assert "would remove" in capsys.readouterr().out and objects_of(name)
    assert main(["shm", "clean", name]) == 0
    assert "removed" in capsys.readouterr().out
    assert objects_of(name) == []
    assert name not in _ls(capsys)


def test_clean_refuses_a_name_that_is_no_server_name_and_removes_nothing(
    echo_server: EchoProcess, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    echo_server.kill()  # a dead server's objects: what clean would remove
    assert main(["shm", "clean", name, "../etc"]) == 2
    err = capsys.readouterr().err
    assert "shm server name '../etc' must be 1-32 characters of [A-Za-z0-9_]" in err
    assert objects_of(name)  # the good name's objects were not touched either
    assert main(["shm", "clean", name]) == 0
    assert objects_of(name) == []


def test_clean_counts_the_objects_it_found_not_the_lock_it_made(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Clean takes the name's lock (creating its lock file) while removing: that file counts
    only when it was there before, one of the dead server's objects."""
    segment = f"/dev/shm/fdn-{name}"
    with open(segment, "wb") as f:  # a stale segment that is no region: a server long gone
        f.write(bytes(8))
    assert main(["shm", "clean", name]) == 0
    assert capsys.readouterr().out == f"{name}: removed 1 objects\n"
    with open(segment, "wb") as f:
        f.write(bytes(8))
    os.close(os.open(f"/dev/shm/fdn-{name}.lock", os.O_CREAT | os.O_WRONLY, 0o600))  # a stale lock
    assert main(["shm", "clean", name]) == 0
    assert capsys.readouterr().out == f"{name}: removed 2 objects\n"
    assert objects_of(name) == []


_LS_OF_A_SHRINKING_REGION = """
import os, sys
from foundation_shm import _region
opened = _region.Segment.open
def open_then_shrink(*args, **kwargs):
    segment = opened(*args, **kwargs)
    os.truncate("/dev/shm/fdn-" + sys.argv[1], 0)  # between ls's mapping and its reads
    return segment
_region.Segment.open = open_then_shrink
print("region:", _region.read_region(sys.argv[1]))
"""


@pytest.mark.skipif(_accel.hot is None, reason="the SIGBUS guard is the C hot path's")
def test_ls_of_a_region_shrunk_while_read_is_no_region_not_a_sigbus(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """``shm ls`` (``read_region``) read a control segment truncated under it past the file's
    end: SIGBUS, the end of the ``foundation`` process. Its mapping is now guarded."""
    echo_process()
    argv = [sys.executable, "-c", _LS_OF_A_SHRINKING_REGION, name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "region: {}"


@pytest.mark.parametrize("argv", [["shm", "ls"], ["shm", "clean"]])
def test_ls_and_clean_where_dev_shm_cannot_be_listed_say_so(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A confined process (a snap, a container profile) may not list /dev/shm: ls and clean
    ended in a PermissionError traceback; they say what they could not do, exit 1."""

    def denied(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "listdir", denied)
    assert main(argv) == 1
    assert (
        capsys.readouterr().err == f"foundation {' '.join(argv)}: cannot list /dev/shm: Permission denied\n"
    )


def test_ls_tells_a_server_in_its_exit_window_from_a_live_one(
    echo_server: EchoProcess, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right after a SIGKILL the server's pid is a zombie of its start time whose other threads
    still exit with its lock file held (``dying``): ls said "alive"; it is dead, exiting."""
    with dying(echo_server) as let_go:
        listed = _ls(capsys)[name]
        assert (listed["alive"], listed["exiting"]) == (False, True), listed
        assert main(["shm", "ls"]) == 0
        out = capsys.readouterr().out
        assert f"{name}: EXITING (dead, its threads still exiting with its lock held: " in out, out
        let_go()  # its threads done, the pid still a zombie: stale
        listed = _ls(capsys)[name]
        assert (listed["alive"], listed["exiting"]) == (False, False), listed
    listed = _ls(capsys)[name]  # reaped
    assert (listed["alive"], listed["exiting"]) == (False, False), listed


def test_clean_waits_for_a_server_in_its_exit_window_then_removes_its_objects(
    echo_server: EchoProcess, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """clean left it alone as "alive" (its lock held by its exiting threads); it waits, as a
    server starting under the name does, for the lock, then removes everything."""
    with dying(echo_server) as let_go:
        assert main(["shm", "clean", "--dry-run", name]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{name}: would remove ") and "still exiting" in out, out
        assert objects_of(name)
        timer = threading.Timer(0.3, let_go)  # the threads done a moment later
        t = time.monotonic()  # (before the timer starts: read after, a late read left < 0.25 s)
        timer.start()
        try:
            assert main(["shm", "clean", name]) == 0
        finally:
            timer.join()
        assert time.monotonic() - t >= 0.25
        assert "removed" in capsys.readouterr().out
        assert objects_of(name) == []


def test_clean_leaves_a_server_still_exiting_after_its_wait_alone_saying_so(
    echo_server: EchoProcess, name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exit that does not end (a thread in uninterruptible sleep) within the wait: nothing is
    removed, exit status 1, and the line says why."""
    monkeypatch.setattr(_start_lock, "DYING_WAIT_S", 0.2)
    with dying(echo_server):
        assert main(["shm", "clean", name]) == 1
        out = capsys.readouterr().out
        assert out.startswith(f"{name}: the previous shm server of {name!r} (pid {echo_server.pid}) is dead")
        assert "still exiting" in out and out.rstrip().endswith("left alone"), out
        assert objects_of(name)
