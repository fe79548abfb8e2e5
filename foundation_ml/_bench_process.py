"""How a benchmark run starts and ends cleanly: its failures, SIGTERM, stdout, and its worker processes.

What every benchmark program uses (``benchmarks/_common.py`` re-exports it through
``foundation_ml._bench``): SIGTERM raising ``SystemExit`` so that servers, client workers and
shared memory are released, stdout kept for the one JSON object of ``--json``, a refused
transport named, a process's CPU time read, and client worker processes gathered and reaped.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from foundation_core.errors import FoundationError

__all__ = [
    "WORKER_START_TIMEOUT",
    "BenchmarkFailed",
    "Terminated",
    "check_transport",
    "cpu_ns",
    "sigterm_exits",
    "stdout_to_stderr",
]

WORKER_START_TIMEOUT = 120.0  # s: spawning a client process, its imports, connecting, warming up


class BenchmarkFailed(FoundationError):
    """A benchmark could not measure what it set out to (a worker died, a server did not start,
    a transport that cannot serve it): its run fails, naming why, rather than report figures."""


# --- ending cleanly --------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived (inside ``sigterm_exits``). It unwinds like ``SystemExit``, which it
    becomes when it leaves ``sigterm_exits``; on the way it is no ``SystemExit``, which some code
    catches on purpose (the hub isolates a plugin whose import calls ``sys.exit()``: a SIGTERM
    landing in that import would be taken for the plugin's and swallowed)."""


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM (what ``timeout``, a CI cancel and nox send) raises ``Terminated``
    in this process, so that its with-blocks and finally clauses stop the servers and client
    workers it started and release their shared memory (Python's default ends the process on
    the spot and leaves them behind); it leaves this block as ``SystemExit(143)``. A second
    SIGTERM gets the default action, as in ``foundation serve``. A process forked from this one
    leaves at once instead: it must not run its parent's clean-up."""
    me, received = os.getpid(), []

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != me:
            os._exit(128 + signum)
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except BaseException:
        if received:  # Terminated, or what some clean-up made of it
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:  # it landed where exceptions are dropped (a finaliser): the exit still says so
        raise SystemExit(128 + signal.SIGTERM)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While inside, what this process writes to stdout (the log lines of a runtime it runs with
    ``FOUNDATION_LOGGING__OUTPUT=stdout``, a library's print) goes to stderr, and so does what
    its child processes write (file descriptor 1 itself is redirected, and they inherit it).
    After it, stdout holds only what is printed next: the one JSON object of ``--json``."""
    stdout = sys.stdout
    stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield
    finally:
        sys.stdout = stdout
        with contextlib.suppress(ValueError, OSError):
            stdout.flush()  # what a holder of the old object wrote meanwhile: still to stderr
        os.dup2(saved, 1)
        os.close(saved)


def check_transport(transport: str) -> None:
    """Refuse, naming it, a transport that is not installed (found before a minute of measuring,
    not after), or one whose clients must be in the server's process: the benchmark's server and
    throughput clients are processes of their own."""
    from foundation_core.errors import NotRegisteredError

    from ._client import registered_hub
    from ._transport import make_transport

    try:
        cross_process = make_transport(registered_hub(), transport).cross_process
    except NotRegisteredError as exc:
        raise BenchmarkFailed(f"--transport {transport}: {exc}") from None
    if not cross_process:
        raise BenchmarkFailed(
            f"--transport {transport}: the benchmark calls a server in another process, from client "
            f"processes, and the {transport} transport serves only the process it runs in; "
            "choose a transport that crosses processes (shm)"
        )


def cpu_ns(pid: int) -> int:
    """CPU time used so far by the threads of process ``pid`` alive now, in ns (the scheduler's
    own accounting, ``/proc/PID/task/*/schedstat``: exact, unlike the tick-sampled ``stat``, but a
    thread that has ended takes its time with it; a server's threads live as long as it does)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def _gather(results: Any, procs: Sequence[Any], kind: str, timeout: float) -> dict[int, tuple[Any, ...]]:
    """The ``kind`` message of every worker, by index, polling the workers meanwhile: a worker
    that reports an error or exits without its message fails the run at once, and so does
    waiting longer than ``timeout`` seconds (never one long blocking wait)."""
    deadline = time.monotonic() + timeout
    got: dict[int, tuple[Any, ...]] = {}
    while len(got) < len(procs):
        # a worker's messages are in the queue before it exits: one that is gone now and still
        # has not reported within the next get never will
        gone = [i for i, p in enumerate(procs) if i not in got and p.exitcode is not None]
        try:
            message = results.get(timeout=0.5 if gone else 0.1)
        except queue.Empty:
            if gone:
                i = gone[0]
                raise BenchmarkFailed(
                    f"client worker {i} (pid {procs[i].pid}) exited with status {procs[i].exitcode} "
                    f"before it was {kind}"
                ) from None
            if time.monotonic() > deadline:
                late = sorted(set(range(len(procs))) - set(got))
                raise BenchmarkFailed(f"client workers {late} not {kind} within {timeout:.0f} s") from None
            continue
        if message[0] == "error":
            raise BenchmarkFailed(f"client worker {message[1]} failed: {message[2]}")
        if message[0] == kind:
            got[message[1]] = tuple(message[2:])
    return got


def _stop_workers(procs: Sequence[Any], finished: bool) -> None:
    """Reap the workers: those that finished leave by themselves; any other is terminated."""
    for p in procs:
        if p.pid is None:  # never started
            continue
        p.join(10 if finished else 0)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
