"""Where rendered lines go: a file (bytes, unbuffered appends) or a text stream.

A file sink made with ``reopen=True`` checks before each line that its path still names the file
it has open, and opens the path again when not (log rotation renamed or deleted it), as the
standard library's ``WatchedFileHandler`` does.

The bound logger calls ``route.info(line)`` and so on: structlog's "logger" is one ``Route``,
whose methods are those of the current sink. The stdlib handler writes through the same sink, so
both kinds of record land in one place, in order.

A sink never raises into the code that logs. Like the standard library's handlers, it drops a
line it cannot write (a full disk, a closed pipe) and says so once on stderr. A sink that was
replaced (``close(successor)``) hands its late lines to the newest of its successors: a logger
that picked the old sink's method up just before ``configure_logging`` swapped pipelines still
gets its line written. Sinks that replaced one another share a ``_Lineage``,
which names the newest weakly: a replaced sink holds none of the sinks made after it.
Every sink takes a line as bytes (newline-terminated) or as text (without the newline).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import weakref
from typing import Any, BinaryIO, TextIO

__all__ = ["FileSink", "Route", "SinkFactory", "StreamSink", "open_sink"]

_METHODS = ("debug", "info", "warning", "warn", "error", "critical", "fatal", "exception", "log")
_STREAMS = ("stderr", "stdout")


_LOCKED: weakref.WeakSet[FileSink | StreamSink] = weakref.WeakSet()  # sinks with a lock, for fork


def _unlock_after_fork() -> None:
    """In a forked child: a sink's lock held by another thread of the parent at the fork (writing
    a line, reopening the file) would be held for ever, and the child's first line through it
    would hang. Each is made anew, as the standard library's handlers' locks are."""
    for sink in list(_LOCKED):
        sink._lock = threading.RLock()


os.register_at_fork(after_in_child=_unlock_after_fork)


def _as_bytes(line: bytes | str) -> bytes:
    return line if isinstance(line, bytes) else str(line).encode("utf-8", "backslashreplace") + b"\n"


def _as_text(line: bytes | str) -> str:
    return line.decode("utf-8", "replace").removesuffix("\n") if isinstance(line, bytes) else str(line)


def _report(where: str, exc: BaseException) -> None:
    """Say once, on stderr, that lines are being dropped (stderr itself may be what fails)."""
    try:
        sys.stderr.write(
            f"foundation-logging: cannot write log lines to {where} ({type(exc).__name__}: {exc}); "
            "lines are dropped while it fails (said once)\n"
        )
        sys.stderr.flush()
    except Exception:
        pass


def _stderr_late(line: bytes | str) -> None:
    """A line logged through a sink closed for good: to stderr rather than nowhere."""
    try:
        sys.stderr.write(_as_text(line) + "\n")
    except Exception:
        pass


def _append_fd(path: str) -> int:
    """A descriptor appending to ``path``, opened without blocking: a FIFO nobody reads would
    block ``open`` (and start-up) for ever; it is an error instead. Writes block as usual."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    nonblock = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | nonblock, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what O_NONBLOCK says of a FIFO without a reader
            raise OSError(exc.errno, "a FIFO that nothing reads", path) from exc
        raise
    if nonblock:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~nonblock)
    return fd


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names now; None when there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


class FileSink:
    """Append newline-terminated bytes to a file opened unbuffered in append mode.

    Each line is one ``write`` system call on an ``O_APPEND`` descriptor: no Python buffer to
    lose on a crash, no lock needed between threads, and other processes may append too.
    After ``close()`` lines go to the successor, or to stderr rather than vanish.
    With ``reopen``, each line first ``stat``s the path; when it names another file or none
    (rotated away), the path is opened again (created if missing) and the old file closed, under
    a lock that the writes then also take. If it cannot be opened, lines go on to the old file
    and that is said once on stderr.
    """

    __slots__ = (
        "_closed",
        "_file",
        "_ident",
        "_lock",
        "_raw",
        "_reopen_reported",
        "_lineage",
        "_reported",
        "__weakref__",
        "msg",
        "path",
        "reopen",
        *_METHODS,
    )

    def __init__(self, path: str, *, reopen: bool = False) -> None:
        path = os.path.expanduser(path)
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError as exc:  # makedirs' word for "there is a file of that name"
            raise NotADirectoryError(errno.ENOTDIR, f"{directory} is not a directory", directory) from exc
        self.path = os.path.abspath(path) if reopen else path  # a chdir must not move the log
        self.reopen = reopen
        self._file: BinaryIO = open(_append_fd(path), "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._raw = self._file.write
        info = os.fstat(self._file.fileno())
        self._ident: tuple[int, int] | None = (info.st_dev, info.st_ino)
        # reentrant: a signal handler that logs runs in the thread it interrupts, maybe in here
        self._lock = threading.RLock()
        self._closed = False
        self._reported = False  # a failed write said (once)
        self._reopen_reported = False  # a failed reopen said (once): apart, so neither hides the other
        self._lineage: _Lineage | None = None  # set once it replaces, or is replaced by, another
        self._bind(self.write_watched if reopen else self.write)
        if reopen:
            _LOCKED.add(self)

    def _bind(self, write: Any) -> None:
        self.msg = write
        for name in _METHODS:
            setattr(self, name, write)

    def write(self, line: bytes) -> None:
        try:
            self._raw(line)
        except (OSError, ValueError) as exc:  # closed under a writer's feet, or the disk is full
            if self._closed:
                _forward(self, line)
            elif not self._reported:
                self._reported = True
                _report(repr(self.path), exc)
        except TypeError:  # text, from a pipeline being swapped in
            self.write(_as_bytes(line))

    def write_watched(self, line: bytes) -> None:
        """``write``, after opening the path again if it no longer names the open file."""
        ident = _identity(self.path)
        with self._lock:
            if ident != self._ident and not self._closed:
                self._reopen()
            self.write(line)

    def _reopen(self) -> None:
        try:
            new: BinaryIO = open(_append_fd(self.path), "ab", buffering=0)  # noqa: SIM115 - kept
        except (OSError, ValueError) as exc:  # keep writing to the old file; try again next line
            if not self._reopen_reported:
                self._reopen_reported = True
                _report(f"{self.path!r} (reopening it after rotation)", exc)
            return
        info = os.fstat(new.fileno())
        old, self._file, self._raw = self._file, new, new.write
        self._ident = (info.st_dev, info.st_ino)
        old.close()
        if self._closed:  # close() ran meanwhile (it takes no lock) and may have closed only old
            new.close()

    def write_line(self, line: bytes | str) -> None:
        self.msg(_as_bytes(line))

    def write_text(self, line: str) -> None:
        self.msg(line.encode("utf-8", "backslashreplace") + b"\n")

    def close(self, successor: FileSink | StreamSink | None = None) -> None:
        """Stop writing to the file; late lines go to ``successor`` (else stderr)."""
        _succeed(self, successor)
        self._closed = True
        self._bind(self._late)
        self._file.close()

    def _late(self, line: bytes | str) -> None:
        _forward(self, line)


class StreamSink:
    """Write text lines to ``sys.stderr`` or ``sys.stdout``, flushing each line.

    The stream is looked up on each line, so a stream replaced later (by a test runner, a
    daemoniser) is followed rather than written to after it was closed.
    """

    __slots__ = ("__weakref__", "_closed", "_lineage", "_lock", "_reported", "msg", "name", *_METHODS)

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.RLock()  # reentrant: see FileSink
        _LOCKED.add(self)
        self._closed = False
        self._reported = False
        self._lineage: _Lineage | None = None  # see FileSink
        self._bind(self.write_text)

    def _bind(self, write: Any) -> None:
        self.msg = write
        for method in _METHODS:
            setattr(self, method, write)

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self.name)  # type: ignore[no-any-return]

    def write_text(self, line: str) -> None:
        try:
            stream = self.stream
            with self._lock:
                stream.write(line + "\n")
                stream.flush()
        except TypeError:  # bytes, from a pipeline being swapped in
            if isinstance(line, bytes):
                self.write_text(_as_text(line))
        except Exception as exc:  # closed, a full disk behind stdout, a broken pipe
            if not self._reported:
                self._reported = True
                _report(self.name, exc)

    def write_line(self, line: bytes | str) -> None:
        self.msg(_as_text(line))

    def close(self, successor: FileSink | StreamSink | None = None) -> None:
        """Flush; with a ``successor``, late lines go there (else still to the stream)."""
        if successor is not None:
            _succeed(self, successor)
            self._closed = True
            self._bind(self._late)
        try:
            self.stream.flush()
        except Exception:  # already closed by its owner
            pass

    def _late(self, line: bytes | str) -> None:
        _forward(self, line)


class _Lineage:
    """What sinks that replaced one another share: the newest of them, weakly (None: closed for
    good, or gone). Each replaced sink held its successor before, so whatever still held the
    first sink (a stdlib handler kept somewhere, a writer in flight) held every sink made since:
    about 0.8 KB more for each reconfiguration, for ever."""

    __slots__ = ("newest",)

    def __init__(self) -> None:
        self.newest: weakref.ref[FileSink | StreamSink] | None = None


def _succeed(sink: FileSink | StreamSink, successor: FileSink | StreamSink | None) -> None:
    """``successor`` (None: nothing) takes over from ``sink``, in ``sink``'s lineage."""
    lineage = sink._lineage or _Lineage()
    sink._lineage = lineage
    lineage.newest = None if successor is None else weakref.ref(successor)
    if successor is not None and successor._lineage is None:
        successor._lineage = lineage


def _forward(sink: FileSink | StreamSink, line: bytes | str) -> None:
    """Write ``line`` to the newest successor of ``sink`` (followed in a loop, should that one
    have been replaced in a lineage of its own); stderr if the last one was closed for good."""
    target: FileSink | StreamSink | None = sink
    while target is not None and target._closed:
        lineage = target._lineage
        newest = lineage.newest if lineage is not None else None
        target = newest() if newest is not None else None
    if target is None:
        _stderr_late(line)
    else:
        target.write_line(line)


class Route:
    """The wrapped logger structlog is given by every configuration: its methods are those of
    the sink it was last pointed at, so a bound logger cached on first use (it holds its wrapped
    logger for good) writes to the current sink. Repointing rebinds attributes: a line costs no
    more than if the sink were wrapped itself. Before it is first pointed anywhere, to stderr."""

    __slots__ = ("msg", "sink", *_METHODS)

    def __init__(self) -> None:
        self.sink: FileSink | StreamSink | None = None
        self.msg: Any = _stderr_late
        for name in _METHODS:
            setattr(self, name, _stderr_late)

    def point(self, sink: FileSink | StreamSink) -> None:
        """Write to ``sink`` from now on (called again after the sink was closed or replaced,
        it takes up the sink's late-line methods)."""
        self.sink = sink
        self.msg = sink.msg
        for name in _METHODS:
            setattr(self, name, getattr(sink, name))


class SinkFactory:
    """structlog ``logger_factory``: every logger wraps the one ``Route`` (names are ignored)."""

    __slots__ = ("route",)

    def __init__(self, route: Route) -> None:
        self.route = route

    def __call__(self, *args: Any) -> Route:
        return self.route


def open_sink(output: str, *, reopen: bool = False) -> FileSink | StreamSink:
    """``"stderr"`` and ``"stdout"`` (any case) name the process's streams (as they are now);
    anything else is a file path (``~`` expanded), reopened after rotation with ``reopen``."""
    if output.strip().lower() in _STREAMS:
        return StreamSink(output.strip().lower())
    return FileSink(output, reopen=reopen)
