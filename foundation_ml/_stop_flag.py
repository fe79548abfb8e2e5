"""``StopFlag``: what a signal handler sets to stop a serving loop, without taking a lock.

``threading.Event.set()`` takes the event's lock, and ``Event.wait()`` holds that lock for a
moment each time it starts and ends waiting. A signal that arrives in that moment runs its Python
handler in the same (main) thread, whose ``set()`` then waits for a lock its own thread holds:
for ever. A server stopped by SIGTERM that way never stopped (seen once in a loaded CI run: an
echo server waiting in ``stop.wait()``, its SIGTERM handled, its parent waiting for it to exit).
"""

from __future__ import annotations

import time

__all__ = ["StopFlag"]

_STEP_S = 0.05  # how often wait() looks; a signal also ends the sleep early (its handler runs)


class StopFlag:
    """A flag a signal handler may ``set()`` (one attribute store, no lock) and the main loop
    ``wait()``s on, looking every 50 ms at most (``time.sleep``, which a signal interrupts to run
    its handler, so a stop is seen within 50 ms of the signal)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set (True) or ``timeout`` seconds have passed (False; None: no limit)."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            step = _STEP_S
            if end is not None:
                step = min(step, end - time.monotonic())
                if step <= 0:
                    return False
            time.sleep(step)
        return True
