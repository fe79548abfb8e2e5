"""What a runtime's stops share: the clock of their drain deadlines, and the one error they raise.

``unload_model``, ``close`` and an undone ``register_model`` each run every step whatever an
earlier one raised (a model's ``close()``, a Ctrl-C), then raise the first error, the others noted.
"""

from __future__ import annotations

import time

__all__ = ["deadline_in", "passed", "raise_first", "time_left"]

_clock = time.monotonic  # the clock of drain deadlines (replaceable: a virtual one in tests)


def deadline_in(seconds: float) -> float:
    """The deadline ``seconds`` from now."""
    return _clock() + seconds


def time_left(deadline: float) -> float:
    """The seconds until ``deadline`` (0.0 once it has passed)."""
    return max(0.0, deadline - _clock())


def passed(deadline: float) -> bool:
    """Whether ``deadline`` has passed."""
    return _clock() >= deadline


def raise_first(errors: list[BaseException], also: str) -> None:
    """Raise the first of ``errors``, if any: an interrupt before any other (stopping is what the
    user asked), the others noted on it (``also``: what the note says they come from)."""
    if errors:
        first = next((e for e in errors if not isinstance(e, Exception)), errors[0])
        for other in errors:
            if other is not first:
                first.add_note(f"{also}: {other!r}")
        raise first
