"""What ``InferenceClient``'s calls check of their arguments before anything is sent: the
timeout, the version (the same rule over every transport) and the output names."""

from __future__ import annotations

from typing import Any

from ._names import MAX_VERSION_BYTES
from ._types import seconds_of
from .errors import InvalidInput

__all__ = ["MAX_TIMEOUT_S", "check_version"]


MAX_TIMEOUT_S = 1e9  # ~31 years: a deadline in monotonic ns must still fit 64 bits


def _check_timeout(timeout: Any, where: str = "") -> float:
    """``timeout`` as seconds (numpy's numbers as Python's), or a ValueError naming it."""
    seconds = seconds_of(timeout)
    if seconds is None or not 0 < seconds <= MAX_TIMEOUT_S:  # NaN fails too
        raise ValueError(
            f"{where}timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}] or None, not {timeout!r}"
        )
    return seconds


_good_versions: set[str] = set()  # versions check_version passed: a request naming one checks no more
_MAX_GOOD_VERSIONS = 256


def check_version(model: str, version: str) -> None:
    """Refuse a request for a version no model can be served under (``check_name``'s rule: 1-15
    UTF-8 bytes of printable characters, no space at either end) as ``InvalidInput`` naming what
    is wrong, the same over every transport (shm's fixed field refused only a NUL or a length,
    inproc answered ModelNotFound, a lone surrogate was a UnicodeEncodeError) and in
    ``foundation infer``, which asks for the metadata first."""
    if not version.isprintable():  # a lone surrogate (no UTF-8 at all) is not printable either
        bad = next(c for c in version if not c.isprintable())
        why = f"holds the unprintable character {bad!r}: a version is printable text"
    elif len(version.encode()) > MAX_VERSION_BYTES:
        why = f"is {len(version.encode())} UTF-8 bytes: a version is at most {MAX_VERSION_BYTES}"
    elif version[0] == " " or version[-1] == " ":
        why = "starts or ends with a space, as no version does"
    else:
        if len(_good_versions) < _MAX_GOOD_VERSIONS:
            _good_versions.add(version)
        return
    raise InvalidInput(f"version {version!r} {why}, so no model is served under it", model=model)


def _argument_error(model: Any, version: Any, outputs: Any) -> TypeError:
    if type(model) is not str:
        return TypeError(f"model must be a str (the model's name), not {type(model).__name__} ({model!r})")
    if type(version) is not str:
        return TypeError(
            f"version must be a str ('' for the latest), not {type(version).__name__} ({version!r})"
        )
    return TypeError(
        f"outputs must be a sequence of output names, not the str {outputs!r}: write [{outputs!r}]"
    )


def _output_names(outputs: Any) -> tuple[str, ...]:
    """``outputs`` as a tuple of names; a TypeError if it is not an iterable of str (a name of
    another type reached the server, which answered InternalError)."""
    try:
        names = tuple(outputs)
    except TypeError:
        raise TypeError(
            f"outputs must be a sequence of output names, not {type(outputs).__name__} ({outputs!r})"
        ) from None
    for name in names:
        if type(name) is not str:
            raise TypeError(f"output names must be str, not {type(name).__name__} ({name!r})")
    return names
