"""``serve``'s metrics file: rewritten whole through a temporary file, a failure only a warning."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["MetricsWriter", "write_atomic"]

log = logging.getLogger("foundation_ml")


class MetricsWriter:
    """Rewrites ``serve``'s metrics file; a failure is a warning (once per distinct error, not
    every second), never a reason to stop serving or to change the exit status."""

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
            self.last_error = ""


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a new temporary file beside it, renamed over it: a reader
    never sees half a file, and no file of the user's (say ``path.tmp``) is touched. The file keeps
    the permissions ``path`` had, or, new, gets those a plain ``open`` would give (0o666 less the
    umask): a node-exporter running as another user must be able to read it. The temporary file
    is removed if anything fails."""
    target = Path(path)
    fd, tmp = _create_beside(target)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_beside(target: Path) -> tuple[int, str]:
    """A new file ``.NAME.RANDOM.tmp`` beside ``target``, open for writing, with ``target``'s
    permission bits if it exists (``tempfile.mkstemp`` makes every file 0o600: a metrics file
    rewritten so became unreadable to anyone but the server's user)."""
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:  # none yet (or unreadable: the rename will say so)
        mode = None
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
