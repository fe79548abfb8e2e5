"""The names a model is served under, checked where they enter so that every transport can carry them.

Model and tensor names are 1-63 UTF-8 bytes and versions 1-15: the fixed fields of the shm
protocol (``docs/protocol/shm.md``, section 11), the tightest transport we have. All are printable
text (no NUL, newline or other control character), so they read the same in logs and metrics, and
none starts or ends with a space: ``"mnist "`` would be another model than ``"mnist"``, one no
listing (``serving: mnist , a``) nor a shell argument shows apart from it.
A model registered under a longer name could be served, but never called over shm.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_NAME_BYTES", "MAX_VERSION_BYTES", "check_name"]

MAX_NAME_BYTES = 63
MAX_VERSION_BYTES = 15


def check_name(value: Any, what: str, limit: int = MAX_NAME_BYTES) -> str:
    """``value`` if it is a name of 1-``limit`` UTF-8 bytes of printable characters, neither
    starting nor ending with a space; else a ``TypeError`` (not a str) or ``ValueError`` that starts
    with ``what``."""
    if type(value) is not str:
        raise TypeError(f"{what} must be a str, not {type(value).__name__} ({value!r})")
    if not value.isprintable() or not 0 < len(value.encode()) <= limit:  # a lone surrogate: not printable
        raise ValueError(f"{what} {value!r} must be 1-{limit} UTF-8 bytes of printable characters")
    if value[0] == " " or value[-1] == " ":  # the only whitespace that is printable
        raise ValueError(f"{what} {value!r} must not start or end with a space")
    return value
