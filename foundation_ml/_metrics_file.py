"""``serve``'s metrics file: rewritten whole through a temporary file, a failure only a warning."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["MetricsWriter", "metrics_problem", "metrics_target", "write_atomic"]

log = logging.getLogger("foundation_ml")


class MetricsWriter:
    """Rewrites ``serve``'s metrics file; a failure is a warning (once per distinct error, not
    every second), never a reason to stop serving or to change the exit status; the first write
    that succeeds after one is logged too, so the last line about the file says how it is."""

    def __init__(self, path: str, text: Callable[[], str]) -> None:
        self.path, self.text = path, text
        self.last_error = ""

    def __call__(self) -> None:
        try:
            write_atomic(self.path, self.text())
        except Exception as exc:
            # the reason, not the message: that names a temporary file, a new one each time
            error = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
            if error != self.last_error:
                log.warning("could not write the metrics file %s: %s", self.path, error)
            self.last_error = error
        else:
            if self.last_error:
                log.warning(
                    "the metrics file %s is written again (it was not: %s)", self.path, self.last_error
                )
            self.last_error = ""


def metrics_problem(path: str) -> str:
    """Why ``serve`` could never write its metrics file at ``path`` ("" if it can): a directory, a
    device or a FIFO (never renamed over), or a place where no file can be made beside it (probed
    with such a file: no file of the user's is touched). ``foundation serve --metrics-file`` and
    ``MLRuntime.serve(metrics_file=...)`` refuse it before anything starts."""
    try:
        target, _ = metrics_target(path)
    except OSError as exc:
        return str(exc.strerror or exc)
    try:
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write it: {exc.strerror or exc}"
    return ""


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a new temporary file beside it, renamed over it: a reader
    never sees half a file, and no file of the user's (say ``path.tmp``) is touched. ``path`` may
    be a symbolic link: the file it names is replaced, the link stays. The file keeps the
    permissions it had, or, new, gets those a plain ``open`` would give (0o666 less the umask): a
    node-exporter running as another user must be able to read it. The temporary file is removed
    if anything fails; a ``path`` that is no regular file is an OSError (see ``metrics_target``)."""
    target, mode = metrics_target(path)
    fd, tmp = _create_beside(target, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def metrics_target(path: str) -> tuple[Path, int | None]:
    """The file ``path`` names, symbolic links followed, and its permission bits (None: no such
    file yet). One that exists and is not a regular file is an OSError: renaming over it would
    replace a directory's entry, a FIFO, or a device (``--metrics-file /dev/null`` run as root
    replaced /dev/null with a regular file), and over a link the link, not the file it names."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory (name a file in it)", path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a device, a FIFO or a socket)", path)
    return target, stat.S_IMODE(st.st_mode)


def _create_beside(target: Path, mode: int | None) -> tuple[int, str]:
    """A new file ``.NAME.RANDOM.tmp`` beside ``target``, open for writing, with the permission
    bits ``mode`` if given (``tempfile.mkstemp`` makes every file 0o600: a metrics file rewritten
    so became unreadable to anyone but the server's user)."""
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:  # 0o666: the kernel takes the umask off, as for any new file
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            if mode is not None:
                os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(target.parent))
