"""Rare-event emission for code that has no hub at hand (patterns, transports, servers).

``emit("retry", name=..., attempt=...)`` calls ``foundation_on_retry`` on the active hub, if any.
It is meant for rare events only; an observer that raises never breaks the caller.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["activate", "active_hub", "deactivate", "emit", "emit_from"]

_active: Hub | None = None


def activate(hub: Hub) -> None:
    global _active
    _active = hub


def deactivate(hub: Hub) -> None:
    global _active
    if _active is hub:
        _active = None


def active_hub() -> Hub | None:
    """The hub started most recently and not yet shut down."""
    return _active


def emit(event: str, **kwargs: Any) -> None:
    """Fire ``foundation_on_<event>`` on the active hub; a no-op without one."""
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
