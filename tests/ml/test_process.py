"""ServerProcess: a start cut short stops the server it started, and a server never outlives its parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foundation_ml._process import ServerProcess, _shm_name, shm_entries

pytest.importorskip("torch")  # `foundation serve` serves the demo model
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie nobody reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def _no_stray_server(name: str) -> Iterator[list[int]]:
    """Yields a list for the server's pid: one still alive at the end (the failure under test)
    is killed and its objects removed, so that one failing test leaves nothing to the next."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                _gone_within(pid, 10)
        from foundation_shm._cli import clean

        if shm_entries(name):
            clean(name, dry_run=False)


class _InterruptedWhenReady(threading.Event):
    """A ready event whose waiter is interrupted the moment the server is ready (its objects in
    /dev/shm): as if Ctrl-C or a SIGTERM handler's exception landed at the end of the wait."""

    def __init__(self, raised: BaseException, before: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.raised, self.before = raised, before

    def wait(self, timeout: float | None = None) -> bool:
        super().wait(timeout)
        self.before()
        raise self.raised


@pytest.mark.slow
@pytest.mark.parametrize("raised", [KeyboardInterrupt(), SystemExit(143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_start_stops_the_server_and_leaves_nothing_in_dev_shm(
    name: str, raised: BaseException
) -> None:
    # a generous grace: the default 5 s before SIGKILL is less than a torch process on a loaded
    # machine may take to drain and exit, and a kill is not the clean stop checked here
    server = ServerProcess(["--transport", "shm", "--name", name], stop_grace=60)
    with _no_stray_server(name) as pids:
        server._ready = _InterruptedWhenReady(raised, lambda: pids.append(server.pid))
        with pytest.raises(type(raised)):
            with server:
                pytest.fail("the block must not run: the start was interrupted")
        assert not _alive(server.pid), "the server outlived the interrupted start"
        assert server.returncode == 0, server.output  # SIGTERM: it drained and released its objects
        assert shm_entries(name) == []


@pytest.mark.slow
def test_an_interrupted_start_kills_a_server_that_does_not_stop_and_removes_its_objects(name: str) -> None:
    server = ServerProcess(["--transport", "shm", "--name", name], stop_grace=0.5)

    def freeze() -> None:  # a stopped process cannot handle SIGTERM: only SIGKILL ends it
        pids.append(server.pid)
        assert shm_entries(name), "the server should have created its objects"
        os.kill(server.pid, signal.SIGSTOP)

    with _no_stray_server(name) as pids:
        server._ready = _InterruptedWhenReady(KeyboardInterrupt(), freeze)
        with pytest.raises(KeyboardInterrupt):
            server.start()
        assert not _alive(server.pid), "the server outlived the interrupted start"
        assert server.returncode == -signal.SIGKILL
        assert shm_entries(name) == [], "what the killed server left should have been removed"


_PARENT = """
import sys, time
from foundation_ml._process import ServerProcess
server = ServerProcess(["--transport", "shm", "--name", sys.argv[1]]).start()
print(server.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@linux_only
def test_a_server_whose_parent_is_killed_stops_and_leaves_nothing_in_dev_shm(
    name: str, tmp_path: Path
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, name], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    with _no_stray_server(name) as pids:
        try:
            assert parent.stdout is not None
            line = parent.stdout.readline()
            assert line.strip().isdigit(), f"the parent printed no server pid: {line!r}"
            pids.append(int(line))
            assert _alive(pids[0]) and shm_entries(name), "the server should be serving"
        finally:
            parent.kill()  # SIGKILL: the parent's own clean-up never runs
            parent.wait()
        assert _gone_within(pids[0], 60), "the server outlived its parent"
        assert shm_entries(name) == [], "the server should have released its objects as it stopped"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "foundation"),
        (["--name", "a", "--threads", "1"], "a"),
        (["--transport=shm", "--name=b"], "b"),
        (["--name", "a", "--name", "c"], "c"),
        (["--transport", "inproc", "--name", "a"], None),
    ],
)
def test_the_shm_name_is_read_from_the_serve_arguments(args: list[str], expected: str | None) -> None:
    assert _shm_name(ServerProcess(args).args) == expected


def test_a_command_that_is_not_foundation_serve_names_no_shm_objects() -> None:
    assert _shm_name([sys.executable, "-m", "foundation_shm._echo", "x"]) is None
