"""A ``foundation serve`` child process: start it, wait until it is ready, stop it with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

__all__ = ["ServerProcess", "shm_entries"]


class ServerProcess:
    """``with ServerProcess(["--transport", "shm", "--name", "x"]) as server: ...``.

    Leaving the block sends SIGTERM and waits; ``returncode`` then holds the exit status and
    ``output`` everything the server printed (stdout and stderr).
    """

    def __init__(self, serve_args: Sequence[str], *, ready_timeout: float = 120.0) -> None:
        self.args = [sys.executable, "-m", "foundation_core", "serve", *serve_args]
        self.ready_timeout = ready_timeout
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
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(self.ready_timeout) or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server did not become ready: {' '.join(self.args)}\n{self.output}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("ready:"):
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


def shm_entries(fragment: str) -> list[str]:
    """Entries of ``/dev/shm`` whose name contains ``fragment`` (segments and semaphores)."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if fragment in n)
    except FileNotFoundError:
        return []
