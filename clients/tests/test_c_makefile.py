"""The C client's Makefile: every object and binary depends on the Makefile, so that a change of
its flags alone (CFLAGS, test-live's -Wl,--wrap=malloc, the libFuzzer harness's -fsanitize=fuzzer)
rebuilds what they went into. Checked in a copy of the client, its outputs made up to date by ``make -t`` (no
compiler runs), with ``make -n -W Makefile``: what a newer Makefile would rebuild."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

C = Path(__file__).resolve().parents[1] / "c"


def _make(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(
        ["make", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"make {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize(
    ("target", "flag"),
    [
        ("build/test-live", "-Wl,--wrap=malloc"),
        ("build/live_calls.o", "-c tests/live_calls.c"),
        ("build/test_live.o", "-c tests/test_live.c"),
        ("build/libfuzzer/fuzz-libfuzzer", "-fsanitize=fuzzer "),
        ("build/codec.o", "-c src/codec.c"),
        ("build/fdn-client", "examples/fdn_client.c -o build/fdn-client"),
        ("build/spin-floor", "bench/spin_floor.c -o build/spin-floor"),
    ],
)
def test_what_the_makefile_builds_is_rebuilt_when_it_changes(tmp_path: Path, target: str, flag: str) -> None:
    """None depended on it: a change of their flags alone (test-live's wrapper taken out, CFLAGS's
    warnings) left the old binary or object, make saying it was up to date."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed (scripts/setup.sh installs it)")
    c = tmp_path / "c"
    c.mkdir()
    shutil.copy2(C / "Makefile", c / "Makefile")
    for part in ("src", "include", "tests", "examples", "bench"):
        shutil.copytree(C / part, c / part)
    (c / "build" / "libfuzzer").mkdir(parents=True)  # (make -t would touch a file for the folder)
    _make(c, "-s", "-t", target)
    now = time.time()
    os.utime(c / "Makefile", (now - 20, now - 20))
    for built in (c / "build").rglob("*"):
        if built.is_file():
            os.utime(built, (now - 10, now - 10))
    assert flag not in _make(c, "-n", target), "the copy is not up to date"
    link = [line for line in _make(c, "-n", "-W", "Makefile", target).splitlines() if flag in line]
    assert link, f"{target} is not rebuilt when the Makefile changes"
