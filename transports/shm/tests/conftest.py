"""Fixtures: unique server names, echo servers in real processes (and stopping them), a handler
that holds requests, and /dev/shm left clean."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import group_objects, remove_objects

from foundation_ml import InferenceRequest, Respond

PREFIX = f"t{os.getpid()}x"
_names = itertools.count()
HERE = Path(__file__).parent
VECTORS = HERE.parents[2] / "docs" / "protocol" / "vectors"


def request_error_vectors() -> list[Path]:
    """The ``error_*`` vectors (their ``.json``) decoded as requests, sorted: what a server must
    answer with their error. The response ones are a client decoder's (test_vectors, the native
    clients): sent to a server, their request reading may fail another check first."""
    paths = sorted(VECTORS.glob("error_*.json"))
    return [p for p in paths if json.loads(p.read_text())["decode_as"] == "request"]


def until(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Whether ``cond()`` holds within ``timeout`` s, polled every 10 ms (what another process, a
    server's heartbeat or a thread's exit, does in its own time). The limit is only where a test
    gives up: it returns as soon as ``cond()`` holds, and a loaded machine may take seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def send_raw(client: ShmClient, area: bytes, request_id: int) -> None:
    """Put arbitrary bytes in a channel's request area and hand them to the server (as a
    client with a broken encoder would)."""
    ch = client._take(0)
    try:
        ch.wkey = None
        ch.req[: len(area)] = area
        client._exchange(ch, request_id, "raw", time.monotonic_ns() + 10**10, retry=False)
    finally:
        client._give(ch)


def _ours() -> dict[str, list[str]]:
    return {k: v for k, v in group_objects().items() if k.startswith(PREFIX)}


@pytest.fixture(scope="session", autouse=True)
def _dev_shm_is_left_clean() -> Iterator[None]:
    yield
    leftover = _ours()
    for name in leftover:
        remove_objects(name)
    assert not leftover, f"the suite left objects in /dev/shm: {leftover}"


@pytest.fixture
def name() -> str:
    return f"{PREFIX}{next(_names)}"


class EchoProcess:
    """``python -m foundation_shm._echo NAME`` in its own process."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "foundation_shm._echo", name, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"echo server did not start: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def echo_process(name: str) -> Iterator[Callable[..., EchoProcess]]:
    started: list[EchoProcess] = []

    def start(*args: str) -> EchoProcess:
        proc = EchoProcess(name, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        for pipe in (proc.proc.stdout, proc.proc.stderr):  # (else held until the collector ran)
            if pipe is not None:
                pipe.close()
    remove_objects(name)  # what a killed server left; the tests that kill check it first


@pytest.fixture
def echo_server(echo_process: Callable[..., EchoProcess]) -> EchoProcess:
    return echo_process()


class CudaServeProcess:
    """``python -m foundation_shm._cuda_serve NAME --cuda-ipc MODE`` (imports torch); ``feature``
    is the region's feature word the server reported when ready."""

    def __init__(self, name: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "foundation_shm._cuda_serve", name, "--cuda-ipc", mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.feature = int(line[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def stopped(server: EchoProcess) -> Iterator[None]:
    """The server stopped (SIGSTOP) until the block ends: a request published meanwhile stays
    with it as long as the test needs, with no sleep to race against. SIGSTOP is asynchronous:
    the wait (WUNTRACED) returns once the server has stopped."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        _, status = os.waitpid(server.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        yield
    finally:
        if server.proc.poll() is None:  # (a test may have killed it)
            os.kill(server.pid, signal.SIGCONT)


@contextlib.contextmanager
def dying(server: EchoProcess) -> Iterator[Callable[[], None]]:
    """``server`` killed (SIGKILL) and left a zombie (not reaped) whose lock file stays held until
    the block ends: what a client sees right after a SIGKILL, the main thread ended (a zombie)
    while the others still exit, the last one unmapping the memory (a model's gigabytes: a tenth
    of a second and more) before it closes the lock file. This process holds the lock for them,
    the moment lasting as long as the test needs, or until it calls what the block is given (the
    threads done, the pid still a zombie). Reaped at the end."""
    fd = os.open(L.lock_file(server.name), os.O_RDONLY | os.O_CLOEXEC)
    held = [fd]

    def let_go() -> None:
        if held:
            os.close(held.pop())

    try:
        os.kill(server.pid, signal.SIGKILL)
        assert until(lambda: _process_state(server.pid) == b"Z"), "the killed server never became a zombie"
        assert until(lambda: _locked(fd)), "the killed server's lock was never free"  # its threads gone
        yield let_go
    finally:
        let_go()
        server.kill()


def _locked(fd: int) -> bool:
    """Whether this process took the flock of ``fd`` (LOCK_EX) now."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _process_state(pid: int) -> bytes:
    """Field 3 of ``/proc/PID/stat``: R, S, Z (a zombie) ..."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0]


class HeldHandler(EchoHandler):
    """The echo handler, but a "held" request is kept, with its ``respond``, for the test to
    answer (or never)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[InferenceRequest, Respond]] = []

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model == "held":
            self.held.append((request, respond))
        else:
            super().__call__(request, respond)
