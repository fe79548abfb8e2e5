"""Checks of the runtime's arguments (drain timeouts, batching settings, names to look up), made
before anything is loaded or stopped, each error naming the call it came from."""

from __future__ import annotations

from ._batching import MAX_WAIT_US
from ._names import check_name
from ._types import seconds_of

__all__ = ["MAX_DRAIN_S", "check_batching", "check_drain", "check_str"]

MAX_DRAIN_S = 1e9  # the longest drain (about 31 years: math.inf); a lock can wait at most ~292 years


def check_drain(drain_timeout: float, where: str) -> float:
    """``drain_timeout`` as the seconds a drain may wait: a number >= 0, before anything stops (a
    ``TypeError`` or ``ValueError`` naming ``where``). ``math.inf``, or anything over
    ``MAX_DRAIN_S``, waits that long: a lock cannot wait longer (OverflowError)."""
    seconds = seconds_of(drain_timeout)
    if seconds is None:
        raise TypeError(f"{where}: drain_timeout must be a number of seconds, not {drain_timeout!r}")
    if not seconds >= 0:  # NaN too
        raise ValueError(f"{where}: drain_timeout must be >= 0 seconds, not {drain_timeout!r}")
    return float(min(seconds, MAX_DRAIN_S))


def check_batching(max_batch_size: int | None, max_wait_us: int | None, where: str) -> None:
    """Refuse batching settings that mean nothing, before anything is loaded (``None``: not given)."""
    if max_batch_size is not None and (type(max_batch_size) is not int or max_batch_size < 1):
        raise ValueError(
            f"{where}: max_batch_size must be an integer >= 1 (1: no batching), not {max_batch_size!r}"
        )
    if max_wait_us is not None and (type(max_wait_us) is not int or not 0 <= max_wait_us <= MAX_WAIT_US):
        raise ValueError(
            f"{where}: max_wait_us must be an integer from 0 to {MAX_WAIT_US} (10 s), not {max_wait_us!r}"
        )


def check_str(name: object, where: str) -> None:
    """A name to look up must be a str (``TypeError`` naming ``where``); any str is looked up, and
    one not served is ``ModelNotFound`` (a transport passes what a client asked for)."""
    if not isinstance(name, str):
        check_name(name, f"{where}: the model name")
