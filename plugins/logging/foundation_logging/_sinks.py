"""Where rendered lines go: a file (bytes, unbuffered appends) or a text stream.

A sink is structlog's "logger": the bound logger calls ``sink.info(line)`` and so on. The stdlib
handler writes through the same sink, so both kinds of record land in one place, in order.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, BinaryIO, TextIO

__all__ = ["FileSink", "SinkFactory", "StreamSink", "open_sink"]

_METHODS = ("debug", "info", "warning", "warn", "error", "critical", "fatal", "exception", "log")


class FileSink:
    """Append newline-terminated bytes to a file opened unbuffered in append mode.

    Each line is one ``write`` system call on an ``O_APPEND`` descriptor: no Python buffer to
    lose on a crash, no lock needed between threads, and other processes may append too.
    After ``close()`` lines go to stderr rather than vanish.
    """

    __slots__ = ("_file", "msg", "path", *_METHODS)

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path = path
        self._file: BinaryIO = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._bind(self._file.write)

    def _bind(self, write: Any) -> None:
        self.msg = write
        for name in _METHODS:
            setattr(self, name, write)

    def write_text(self, line: str) -> None:
        self.msg(line.encode("utf-8", "backslashreplace") + b"\n")

    def close(self) -> None:
        self._bind(_stderr_bytes)
        self._file.close()


def _stderr_bytes(line: bytes) -> None:
    sys.stderr.write(line.decode("utf-8", "replace"))


class StreamSink:
    """Write text lines to ``sys.stderr`` or ``sys.stdout``, flushing each line.

    The stream is looked up on each line, so a stream replaced later (by a test runner, a
    daemoniser) is followed rather than written to after it was closed.
    """

    __slots__ = ("_lock", "msg", "name", *_METHODS)

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.msg = self.write_text
        for method in _METHODS:
            setattr(self, method, self.write_text)

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self.name)  # type: ignore[no-any-return]

    def write_text(self, line: str) -> None:
        stream = self.stream
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def close(self) -> None:
        try:
            self.stream.flush()
        except (ValueError, OSError):  # already closed by its owner
            pass


class SinkFactory:
    """structlog ``logger_factory``: every logger shares the one sink (names are ignored)."""

    __slots__ = ("sink",)

    def __init__(self, sink: FileSink | StreamSink) -> None:
        self.sink = sink

    def __call__(self, *args: Any) -> FileSink | StreamSink:
        return self.sink


def open_sink(output: str) -> FileSink | StreamSink:
    """``"stderr"`` and ``"stdout"`` name the process's streams (as they are now); else a path."""
    if output in {"stderr", "stdout"}:
        return StreamSink(output)
    return FileSink(output)
