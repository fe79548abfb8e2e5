"""A benchmark stopped by SIGTERM (``timeout``, a CI cancel, nox) stops what it started: it exits
143 after its clean-up, no process it started outlives it, and nothing of its name is left in
/dev/shm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from foundation_ml._process import shm_entries

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of a process, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), fields[19]


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below ``pid`` now (children, theirs...)."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[1], []).append((int(entry), stat[2]))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def _objects(name: str) -> list[str]:
    """The /dev/shm entries of server ``name`` (``fdn-NAME``, its lock, segments, semaphores),
    not those of another whose name ``name`` begins (bench_12 is no part of bench_123's):
    ``shm_entries`` matches a fragment anywhere."""
    mine = f"fdn-{name}"
    return [e for e in shm_entries(mine) if e.partition(mine)[2][:1] in ("", ".", "-")]


def _running(processes: set[tuple[int, str]]) -> list[int]:
    """Those of ``processes`` still running (the same pid and start time; a zombie is not)."""
    running = []
    for pid, started in processes:
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[0] != "Z":
            running.append(pid)
    return running


# script, the name its shm server takes from its pid, other /dev/shm names it uses
CASES = [
    ("inference.py", "bench_{pid}", []),
    ("shm.py", "bench{pid}", ["bench-shm-{pid}-"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "server", "others"), CASES, ids=[c[0] for c in CASES])
def test_sigterm_stops_the_benchmark_and_everything_it_started(
    script: str, server: str, others: list[str]
) -> None:
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        name = server.format(pid=proc.pid)
        try:
            deadline = time.monotonic() + 60
            while not _objects(name):  # its server is up
                assert proc.poll() is None, f"{script} ended before its server was up"
                assert time.monotonic() < deadline, f"{script}'s server did not start in 60 s"
                time.sleep(0.05)
            started = _descendants(proc.pid)
            assert started  # at least its server
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=60)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        assert proc.returncode == 128 + signal.SIGTERM, err.read()[-2000:]
    assert out == ""  # an interrupted run reports no figures
    end = time.monotonic() + 60  # what it reaped is gone; a resource tracker leaves on its EOF
    while _running(started) and time.monotonic() < end:
        time.sleep(0.05)
    assert _running(started) == []
    assert _objects(name) == []
    for fragment in (o.format(pid=proc.pid) for o in others):  # (each ends in "-": its own)
        assert shm_entries(fragment) == []
