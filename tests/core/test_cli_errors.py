"""How the `foundation` dispatcher fails: unwritable output, broken plugin commands, misplaced options."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO, Any

import pytest


def _foundation(*args: str, stdout: int | IO[Any], **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m foundation_core ARGS`` with the given stdout; stderr is captured."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "foundation_core", *args],
        env=full_env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [["version"], ["plugins"], ["plugins", "--json"]])
def test_a_closed_stdout_pipe_exits_141_quietly(args: list[str]) -> None:
    """`foundation plugins | head -0`: no traceback, the status a shell gives a SIGPIPE death."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    try:
        proc = _foundation(*args, stdout=write_end)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_naming_the_command_and_exit_1() -> None:
    with open("/dev/full", "w") as full:
        proc = _foundation("version", stdout=full)
    assert proc.returncode == 1
    assert proc.stderr == "foundation version: error: cannot write output: No space left on device\n"
