"""How often one channel's rejected requests are logged: a client must not flood the server's log."""

from __future__ import annotations

import time

__all__ = ["LogThrottle"]


class LogThrottle:
    """Per key (a channel), a token bucket: ``burst`` lines at once, then ``per_second``. ``take``
    says whether to log now and how many lines were held back since the last one logged."""

    __slots__ = ("_state", "burst", "per_second")

    def __init__(self, burst: int = 10, per_second: float = 1.0) -> None:
        self.burst = burst
        self.per_second = per_second
        self._state: dict[int, list[float]] = {}  # key -> [tokens, at, suppressed]

    def take(self, key: int, now: float | None = None) -> tuple[bool, int]:
        now = time.monotonic() if now is None else now
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = [float(self.burst), now, 0]
        tokens = min(float(self.burst), state[0] + (now - state[1]) * self.per_second)
        state[1] = now
        if tokens < 1.0:
            state[0] = tokens
            state[2] += 1
            return False, 0
        state[0] = tokens - 1.0
        held, state[2] = int(state[2]), 0
        return True, held

    def admit(self, key: int, what: str = "more") -> str | None:
        """``take`` for a log line: None to hold it back, else what to append to it, counting the
        lines held back since the last one logged (``" (3 more on this channel not logged)"``)."""
        now, held = self.take(key)
        if not now:
            return None
        return f" ({held} {what} on this channel not logged)" if held else ""

    def forget(self, key: int) -> None:
        """The key's client is gone: the next one starts with a full burst."""
        self._state.pop(key, None)
