"""``foundation shm ls`` tells live from dead servers; ``clean`` removes only the dead ones' objects."""

from __future__ import annotations

import json

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
