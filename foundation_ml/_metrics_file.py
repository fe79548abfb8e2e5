"""``serve``'s metrics file: rewritten whole through a temporary file, a failure only a warning."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
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
    never sees half a file, and no file of the user's (say ``path.tmp``) is touched. The temporary
    file is removed if anything fails."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
