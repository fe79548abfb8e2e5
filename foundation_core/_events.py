"""Rare-event emission for code that has no hub at hand (patterns, transports, servers).

``emit("retry", name=..., attempt=...)`` calls ``foundation_on_retry`` on the active hub, if any.
It is meant for rare events only; an observer that raises never breaks the caller.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["activate", "active_hub", "deactivate", "emit", "emit_from", "running_hubs"]

_started: list[weakref.ref[Hub]] = []  # hubs started and not yet shut down, oldest first
_active: Hub | None = None  # the newest of them (read on every emit, so kept at hand)
# hubs started or shut down in two threads at once: _forget's rebuilt list would drop the other's
_lock = threading.Lock()


def activate(hub: Hub) -> None:
    with _lock:
        _forget(hub)
        _started.append(weakref.ref(hub))
        _elect()


def deactivate(hub: Hub) -> None:
    """Forget ``hub``; the hub started before it (if still running) becomes active again."""
    with _lock:
        _forget(hub)
        _elect()


def _forget(hub: Hub) -> None:
    # also drops hubs that were never shut down and are gone (a weak reference to nothing)
    _started[:] = [r for r in _started if r() is not None and r() is not hub]


def _elect() -> None:
    global _active
    _active = None
    while _started and _active is None:
        _active = _started[-1]()
        if _active is None:
            _started.pop()


def active_hub() -> Hub | None:
    """The hub started most recently and not yet shut down."""
    return _active


def running_hubs() -> tuple[Hub, ...]:
    """The hubs started and not yet shut down, newest first: the first is :func:`active_hub`.

    A hub being shut down is in it until its shutdown is over (its plugins' ``foundation_shutdown``
    see it there). A plugin holding process-wide state per hub reads it to find whose state is
    in force once a hub shuts down (see docs/plugins.md, "Several hubs in one process")."""
    with _lock:
        refs = list(_started)
    return tuple(hub for hub in (r() for r in reversed(refs)) if hub is not None)


def emit(event: str, **kwargs: Any) -> None:
    """Fire ``foundation_on_<event>`` on the active hub; a no-op without one (an unknown event
    name is a ValueError only when a hub is active: test emitters with one started)."""
    hub = _active
    if hub is not None:
        emit_from(hub, event, **kwargs)


def emit_from(hub: Hub, event: str, **kwargs: Any) -> None:
    caller = getattr(hub.pm.hook, f"foundation_on_{event}", None)
    if caller is None:
        raise ValueError(f"unknown foundation event {event!r}")
    try:
        caller(**kwargs)
    except Exception as exc:  # observers are isolated by the hub's guard; this is the last net
        warnings.warn(f"an observer of foundation_on_{event} raised {exc!r}", RuntimeWarning, stacklevel=3)
