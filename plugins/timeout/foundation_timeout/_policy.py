"""The timeout policy: a frozen, validated attrs class (also the ``[timeout]`` config section)."""

from __future__ import annotations

from typing import Any

import attrs

from foundation_core._policy import in_range, one_of
from foundation_core.errors import PolicyError

__all__ = ["SYNC_MODES", "TimeoutPolicy"]

SYNC_MODES = ("deadline", "thread")
_P = "timeout"


def _is_name(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: names label errors and events (and key shared state): a non-empty string."""
    if not isinstance(value, str) or not value:
        raise PolicyError(_P, attribute.name, value, "a non-empty string")


@attrs.frozen
class TimeoutPolicy:
    """A call must finish within ``timeout`` seconds.

    ``async def`` callables are cancelled at the deadline. Python cannot stop a running thread,
    so for sync callables ``sync_mode`` chooses: ``"deadline"`` (default) runs the call in the
    caller's thread, publishes the deadline to inner patterns (retry stops in time) and to
    cooperative code (``foundation_core.current_deadline()``), and raises ``TimeoutExceeded``
    instead of returning a late result; ``"thread"`` runs the call in a worker thread and stops
    waiting at the deadline (the abandoned call runs on in its worker).
    """

    name: str = attrs.field(default="timeout", validator=_is_name)
    timeout: float = attrs.field(default=10.0, validator=in_range(_P, 0, 86_400, unit="s", lo_open=True))
    sync_mode: str = attrs.field(default="deadline", validator=one_of(_P, SYNC_MODES))
