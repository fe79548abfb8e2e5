"""A ``foundation serve`` child process: start it, wait until it is ready, stop it with SIGTERM."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from ._parent_death import die_with_parent
from ._plugin import DEFAULT_NAME

__all__ = ["ServerProcess", "ServerStartError", "shm_entries"]

STOP_GRACE = 5.0  # s: how long a server whose start was cut short has to drain after SIGTERM


class ServerStartError(RuntimeError):
    """The server exited, or was not ready in time, while it started; ``output`` is what it
    printed (its own error line is there)."""

    def __init__(self, args: Sequence[str], output: str) -> None:
        super().__init__(f"server did not become ready: {' '.join(args)}\n{output}")
        self.output = output


class ServerProcess:
    """``with ServerProcess(["--transport", "shm", "--name", "x"]) as server: ...``.

    Leaving the block sends SIGTERM and waits; ``returncode`` then holds the exit status and
    ``output`` everything the server printed (stdout and stderr).

    A start cut short (the server not ready within ``ready_timeout`` s, or an exception such as
    ``KeyboardInterrupt`` or a SIGTERM handler's ``SystemExit`` while waiting for it) stops the
    server (SIGTERM, SIGKILL after ``stop_grace`` s) and removes what it left in /dev/shm before
    the error propagates: ``__exit__`` never runs when ``__enter__`` raises. On Linux the server
    gets SIGTERM when this process dies, even by SIGKILL (a parent-death signal), so that it
    drains and releases its shared memory rather than outlive a killed benchmark or test; the
    signal comes when the *thread* that called ``start`` ends, so start it from a thread that
    lives as long as the server should.
    """

    #: the start of the line the server prints once clients can connect (``foundation serve``'s
    #: ``ready: ...``; a subclass running another server sets its own)
    ready_line = "ready:"

    def __init__(
        self, serve_args: Sequence[str], *, ready_timeout: float = 120.0, stop_grace: float = STOP_GRACE
    ) -> None:
        self.args = [sys.executable, "-m", "foundation_core", "serve", *serve_args]
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.lines: list[str] = []
        self.returncode: int | None = None
        self._ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def pid(self) -> int:
        """The server process's pid (once started)."""
        if self.proc is None:
            raise RuntimeError("the server process has not been started")
        return self.proc.pid

    def start(self) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            bufsize=1,
            preexec_fn=_dies_with(os.getpid()),
        )
        try:
            threading.Thread(target=self._read, daemon=True).start()
            ready = self._ready.wait(self.ready_timeout) and self.proc.poll() is None
        except BaseException:  # interrupted while it starts: the caller's clean-up will not know it
            self._abandon()
            raise
        if not ready:
            self._abandon()
            raise ServerStartError(self.args, self.output)
        return self

    def _abandon(self) -> None:
        """Stop a server whose start was cut short: SIGTERM (it drains and releases its objects),
        SIGKILL after ``stop_grace`` s; then remove what it could not release in /dev/shm."""
        try:
            self.stop(signal.SIGTERM, self.stop_grace)
        finally:
            self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Remove the shm objects of this server's name if no live process holds it (what a server
        killed, or stopped before its signal handling began, leaves behind): a live server of
        that name, which this one may have failed to start beside, is left alone."""
        name = _shm_name(self.args)
        if name is None:
            return
        try:
            from foundation_shm._cli import clean
        except ImportError:  # the shm transport is not installed: no objects of it to leave
            return
        with contextlib.suppress(OSError, ValueError):  # best effort: the original error matters more
            clean(name, dry_run=False)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith(self.ready_line):
                self._ready.set()
        self._ready.set()  # the process ended: wake the waiter, which then sees it

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it; returns its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        return self.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.returncode is None:
            self.stop()


def _dies_with(parent: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that asks for SIGTERM when ``parent`` dies (Linux only; elsewhere none)."""
    if not sys.platform.startswith("linux"):
        return None
    return functools.partial(die_with_parent, parent, signal.SIGTERM)


def _shm_name(args: Sequence[str]) -> str | None:
    """The server name of a ``foundation serve`` command line serving on shm (argparse's
    defaults, the last occurrence of an option winning), or None: another transport, or a
    command that is not ``foundation serve`` (a caller may replace ``args``)."""
    if list(args[1:4]) != ["-m", "foundation_core", "serve"]:
        return None
    options = {"--transport": "shm", "--name": DEFAULT_NAME}
    rest = list(args[4:])
    for i, arg in enumerate(rest):
        key, eq, value = arg.partition("=")
        if key in options and (eq or i + 1 < len(rest)):
            options[key] = value if eq else rest[i + 1]
    return options["--name"] if options["--transport"] == "shm" else None


def shm_entries(fragment: str) -> list[str]:
    """Entries of ``/dev/shm`` whose name contains ``fragment`` (segments and semaphores)."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if fragment in n)
    except FileNotFoundError:
        return []
