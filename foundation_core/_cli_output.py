"""The ``foundation`` command's standard streams: a write to stdout that fails (its reader gone,
a full disk) ends the command with a status instead of a traceback, characters stdout cannot
encode print escaped, and foundation's own warnings print as one line."""

from __future__ import annotations

import errno
import os
import select
import sys
from typing import TextIO

__all__ = [
    "_escape_what_stdout_cannot_encode",
    "_is_output_error",
    "_output_failed",
    "_show_our_warnings_plainly",
]


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _is_output_error(exc: OSError) -> bool:
    """Whether ``exc`` (escaped from a command) came from writing standard output: a broken pipe
    while stdout's reader is gone, or a write error (no file name: opening a file names it)."""
    if isinstance(exc, BrokenPipeError):
        return _stdout_reader_gone()
    return exc.errno in _OUTPUT_ERRNOS and exc.filename is None


def _stdout_reader_gone() -> bool:
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or stdout is no file (captured)
        return False


def _output_failed(command: str, exc: OSError) -> int:
    """Exit quietly with 141 (as a shell reports SIGPIPE) when stdout's reader went away
    (``foundation plugins | head -1``), or name the failure (a full disk) and exit 1. Either way
    stdout is pointed at /dev/null first, so the interpreter's final flush does not fail again
    (the recipe of Python's ``signal`` module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass
    if isinstance(exc, BrokenPipeError):
        return 141
    print(f"foundation {command}: error: cannot write output: {exc.strerror or exc}", file=sys.stderr)
    return 1


def _escape_what_stdout_cannot_encode() -> None:
    """Print a character stdout's encoding lacks (a plugin's name or error under an ASCII or
    Latin-1 locale) as an escape, as Python does on stderr, instead of failing the command."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="backslashreplace")
        except (OSError, ValueError):  # a closed or detached stream: writing will say so
            pass


def _show_our_warnings_plainly() -> list[str]:
    """Foundation's own warnings (an unknown config key, a plugin isolated) print as one line,
    ``foundation CMD: warning: ...``, not with the source line Python shows; others as before.
    Returns the prefix, a one-item list the caller sets once it knows the command."""
    import warnings

    default, prefix = warnings.showwarning, ["foundation"]

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if category.__module__.split(".")[0].startswith("foundation"):
            print(f"{prefix[0]}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    return prefix
