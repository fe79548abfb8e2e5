"""How often one channel's rejected requests are logged, and how routine lines that repeat are
folded: neither a client nor a busy service must flood the server's log."""

from __future__ import annotations

import threading
import time

__all__ = ["LogFold", "LogThrottle"]


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


class LogFold:
    """For a line that is routine when it repeats, server-wide (a channel given back after a
    timed-out call: a busy service whose clients use short deadlines logged hundreds an hour; a
    dead client's channel reclaimed: a preforking service logged one a recycled worker).
    The first is logged in full; those in the ``window_s`` after it are only counted, and
    ``due`` hands their count to one summary line once the window has passed, which opens the
    next one. A window that passes with none held closes: the next line is logged in full."""

    __slots__ = ("_held", "_lock", "_since", "window_s")

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._since: float | None = None  # when the open window began; None: none is open
        self._held = 0
        self._lock = threading.Lock()  # the heartbeat takes and folds; stop() folds the rest

    def take(self, now: float | None = None) -> bool:
        """Whether to log this line in full (else it is counted for the next summary)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._since is None or (not self._held and now - self._since >= self.window_s):
                self._since = now
                return True
            self._held += 1
            return False

    def due(self, now: float | None = None, *, final: bool = False) -> tuple[int, float]:
        """How many lines were held back and over how many seconds, once their window has
        passed (``final``: at once, as the server stops); ``(0, 0.0)`` when no summary is due."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._since is None or (not final and now - self._since < self.window_s):
                return 0, 0.0
            held, since = self._held, self._since
            self._held = 0
            self._since = now if held and not final else None
            return held, now - since
