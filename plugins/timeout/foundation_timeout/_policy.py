"""The timeout policy: a frozen, validated attrs class (also the ``[timeout]`` config section)."""

from __future__ import annotations

import attrs

from foundation_core._policy import in_range, one_of

__all__ = ["SYNC_MODES", "TimeoutPolicy"]

SYNC_MODES = ("deadline", "thread")
_P = "timeout"


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

    name: str = "timeout"
    timeout: float = attrs.field(default=10.0, validator=in_range(_P, 0, 86_400, unit="s", lo_open=True))
    sync_mode: str = attrs.field(default="deadline", validator=one_of(_P, SYNC_MODES))
