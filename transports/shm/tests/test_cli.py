"""``foundation shm ls`` tells live from dead servers; ``clean`` removes only the dead ones' objects."""

from __future__ import annotations

import json
import os

import pytest
from foundation_shm._objects import objects_of

from foundation_core._cli import main

from .conftest import EchoProcess

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
