"""A server another user started: each native client is told whose it is, as the Python one is.

A server started with the default mode (0600) by root is another user's to a client run as
nobody: its control segment exists, but ``shm_open`` fails EACCES. The C and Go clients said
"no shm server named 'm'" and the Rust one added "(Permission denied)" to those words, as if no
server served the name; each now says what the Python client says (spec 10.1 step 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from foundation_shm._objects import objects_of, remove_objects

from foundation_ml._process import ServerProcess

if TYPE_CHECKING:
    from conftest import NativeClient

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the clients as another user (nobody): needs root"),
]

NOBODY = 65534
EXIT_OK, EXIT_UNAVAILABLE = 0, 4


class _EchoServer(ServerProcess):
    """The shm transport's echo server, started with the default mode (0600)."""

    ready_line = "ready"

    def __init__(self, name: str) -> None:
        super().__init__([])
        self.args = [sys.executable, "-m", "foundation_shm._echo", name]


@pytest.fixture(scope="module")
def roots_server(unique_module_name: str) -> Iterator[str]:
    """An echo server of root's; when it has stopped, nothing of it is left in /dev/shm."""
    server = _EchoServer(unique_module_name).start()
    try:
        yield unique_module_name
    finally:
        server.stop()
        left = objects_of(unique_module_name)
        remove_objects(unique_module_name)
    assert left == [], f"the server left {left} in /dev/shm"


@pytest.fixture(scope="module")
def readable_input() -> Iterator[str]:
    """An --input spec whose file nobody may read (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "x.bin"
        np.ones((1, 2), "<f4").tofile(path)
        path.chmod(0o644)
        yield f"x:FP32:1,2:{path}"


def _infer(argv: list[str], *, as_nobody: bool) -> tuple[int, dict[str, object]]:
    """Run a client's ``infer``, as nobody or as this user; its exit status and its JSON line."""
    user = NOBODY if as_nobody else None
    groups: list[int] | None = [] if as_nobody else None
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        user=user,
        group=user,
        extra_groups=groups,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"want one JSON line, got stdout={proc.stdout!r} stderr={proc.stderr!r}"
    return proc.returncode, json.loads(lines[0])


def test_another_users_server_is_named_as_such_not_absent(
    client: NativeClient, roots_server: str, readable_input: str
) -> None:
    name = roots_server
    argv = [str(client.path), "infer", "--name", name, "--model", "echo", "--input", readable_input]
    code, result = _infer(argv, as_nobody=True)
    quoted = f"'{name}'" if client.lang == "c" else f'"{name}"'
    want = (
        f"no permission to use shm server {quoted} (/dev/shm/fdn-{name}): another user's; "
        "a server started with mode 0o660 lets its group in"
    )
    assert (code, result["error"], result["code"], result["message"]) == (
        EXIT_UNAVAILABLE,
        "SERVER_UNAVAILABLE",
        10,
        want,
    ), result
    served, _ = _infer(argv, as_nobody=False)
    assert served == EXIT_OK  # its owner is served: the server is there
