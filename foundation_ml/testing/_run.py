"""``check_transport``: run the kit's checks against one transport and report each that failed."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from foundation_core import Hub

from .._client import registered_hub
from .._types import seconds_of
from ._checks import CHECKS
from ._kit import TransportCheckFailed, _Kit
from ._owned import _Fail

__all__ = ["check_transport"]

_names = itertools.count()


def check_transport(
    name: str,
    *,
    hub: Hub | None = None,
    serve_options: Mapping[str, Any] | None = None,
    connect_options: Mapping[str, Any] | None = None,
    address: Callable[[], str] | None = None,
    leftovers: Callable[[], list[str]] | None = None,
    only: list[str] | None = None,
    patience: float = 10.0,
) -> list[str]:
    """Hold transport ``name`` to the contract; returns the names of the checks it passed, or
    raises ``TransportCheckFailed`` naming each that failed and what was wrong.

    ``hub``: where ``name`` is registered (default: a hub with every installed plugin);
    ``serve_options`` / ``connect_options``: passed to every ``serve`` / ``connect``;
    ``address()``: a fresh address the transport takes (default ``kitPIDxN``, which shm's rule
    allows); ``leftovers()``: the resources the transport holds (files, say), compared before and
    after a server's life; ``only``: the names of the checks to run (``CHECKS`` lists them);
    ``patience``: the seconds a call the kit expects to end may take before it counts as hung
    (also the timeout of the calls it expects answered)."""
    unknown = sorted(set(only or ()) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"check_transport: no check named {', '.join(unknown)} (checks: {', '.join(CHECKS)})"
        )
    seconds = seconds_of(patience)
    if seconds is None or not 0 < seconds <= 3600:  # (NaN fails the range too)
        raise ValueError(f"check_transport: patience must be seconds in (0, 3600], not {patience!r}")
    hub = hub or registered_hub()
    fresh = address or (lambda: f"kit{os.getpid()}x{next(_names)}")
    kit = _Kit(name, hub, serve_options or {}, connect_options or {}, fresh, leftovers, seconds)
    failures: dict[str, str] = {}
    passed: list[str] = []
    for check_name, check in CHECKS.items():
        if only is not None and check_name not in only:
            continue
        failure: str | None = None
        before = set(threading.enumerate())
        try:
            check(kit)
        except _Fail as exc:
            failure = str(exc)
        except Exception as exc:
            failure = f"raised {type(exc).__name__}: {exc}"
        finally:  # (an interrupt too) whatever the check left running is ended
            problems = kit.clean_up(before)
        if problems:  # noted after the check's own failure, never in its place
            cleaning = f"cleaning up after it: {'; '.join(problems)}"
            failure = cleaning if failure is None else f"{failure} (and {cleaning})"
        if failure is None:
            passed.append(check_name)
        else:
            failures[check_name] = failure
    if failures:
        raise TransportCheckFailed(name, failures)
    return passed
