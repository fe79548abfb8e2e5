"""The rate limit policy: a frozen, validated attrs class (also the ``[rate_limit]`` section)."""

from __future__ import annotations

from typing import Any

import attrs

from foundation_core._policy import in_range, optional_in_range
from foundation_core.errors import PolicyError

__all__ = ["RateLimitPolicy"]

_P = "rate_limit"


def _is_name(_inst: Any, attribute: Any, value: Any) -> None:
    """A validator: names label errors and events (and key shared state): a non-empty string."""
    if not isinstance(value, str) or not value:
        raise PolicyError(_P, attribute.name, value, "a non-empty string")


@attrs.frozen
class RateLimitPolicy:
    """``rate`` tokens per second refill a bucket holding at most ``burst`` tokens; a call takes one.

    With no token, a call waits for one if it would arrive within ``max_wait`` seconds (the
    deadline), else it fails fast with ``RateLimited`` carrying ``retry_after``. ``max_wait=0``
    (the default) never waits. A wait that would end after an enclosing timeout's deadline
    (``foundation_core.current_deadline()``) fails fast too.
    """

    name: str = attrs.field(default="default", validator=_is_name)
    rate: float = attrs.field(
        default=10.0, validator=in_range(_P, 0, 1_000_000, unit="calls/s", lo_open=True)
    )
    burst: int = attrs.field(default=10, validator=in_range(_P, 1, 1_000_000, integer=True, unit="calls"))
    max_wait: float | None = attrs.field(default=0.0, validator=optional_in_range(_P, 0, 3_600, unit="s"))

    def refill(self, tokens: float, elapsed: float) -> float:
        """Tokens after ``elapsed`` seconds starting from ``tokens`` (pure; capped at ``burst``)."""
        return min(float(self.burst), tokens + elapsed * self.rate)

    def wait_for(self, tokens: float) -> float:
        """Seconds until one whole token is available, given ``tokens`` now (pure)."""
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
