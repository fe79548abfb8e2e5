"""``check_transport``: run the kit's checks against one transport and report each that failed."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

from foundation_core import Hub

from .._client import registered_hub
from .._transport import Transport
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
    _check_arguments(hub, serve_options, connect_options, address, leftovers, only)
    seconds = seconds_of(patience)
    if seconds is None or not 0 < seconds <= 3600:  # (NaN fails the range too)
        raise ValueError(f"check_transport: patience must be seconds in (0, 3600], not {patience!r}")
    hub = hub or registered_hub()
    fresh = address or (lambda: f"kit{os.getpid()}x{next(_names)}")
    transport = _made(hub, name)
    kit = _Kit(name, hub, transport, serve_options or {}, connect_options or {}, fresh, leftovers, seconds)
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


def _check_arguments(
    hub: object,
    serve_options: object,
    connect_options: object,
    address: object,
    leftovers: object,
    only: object,
) -> None:
    """Refuse arguments of the wrong kind before anything runs, naming each (a str for ``only``
    was taken for its characters; a hub, options or callables of the wrong kind failed every
    check, or the kit, with a bare ``AttributeError``)."""
    if hub is not None and not isinstance(hub, Hub):
        raise TypeError(
            f"check_transport: hub must be a foundation_core.Hub, not {type(hub).__name__} {hub!r:.80}"
        )
    for what, options in (("serve_options", serve_options), ("connect_options", connect_options)):
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                f"check_transport: {what} must be a mapping of option names to values, not"
                f" {type(options).__name__} {options!r:.80}"
            )
    for what, fn in (("address", address), ("leftovers", leftovers)):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"check_transport: {what} must be a function taking no argument, not"
                f" {type(fn).__name__} {fn!r:.80}"
            )
    if only is None:
        return
    if isinstance(only, str) or not isinstance(only, Collection):
        hint = f" (only=[{only!r:.80}] for one)" if isinstance(only, str) else ""
        raise TypeError(
            f"check_transport: only must be a list of check names, not {type(only).__name__}"
            f" {only!r:.80}{hint}"
        )
    odd = [item for item in only if not isinstance(item, str)]
    if odd:
        raise TypeError(f"check_transport: only lists check names (str), not {', '.join(map(repr, odd))}")
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"check_transport: no check named {', '.join(unknown)} (checks: {', '.join(CHECKS)})"
        )
    if not only:
        raise ValueError(
            "check_transport: only names no check: nothing would be checked (None runs them all)"
        )


def _made(hub: Hub, name: str) -> Transport:
    """The transport registered as ``name``, made; one that cannot be made, or lacks a method of
    the contract, is a ``TypeError`` naming it (each check failed with the same
    ``AttributeError``, after serving on it, or the kit ended with the factory's error)."""
    factory = hub.transports.get(name)
    try:
        transport: Transport = factory()
    except KeyboardInterrupt:  # the user's Ctrl-C while it is made
        raise
    except BaseException as exc:  # sys.exit() too, as make_transport and the plugin loader take it
        raise TypeError(
            f"check_transport: transport {name!r} cannot be made:"
            f" {getattr(factory, '__qualname__', repr(factory))}() raised"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    missing = [m for m in _METHODS if not callable(getattr(transport, m, None))]
    if missing:
        raise TypeError(
            f"check_transport: transport {name!r} made a {type(transport).__name__}, which has no"
            f" {', '.join(missing)}: a transport subclasses foundation_ml.Transport (docs/transports.md)"
        )
    return transport


_METHODS = ("serve", "connect", "check_address", "check_serve")
