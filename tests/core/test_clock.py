"""``VirtualClock``: the clock every pattern's tests and the conformance runner drive by hand."""

from __future__ import annotations

import math
import time

import pytest

from foundation_core import SYSTEM_CLOCK, VirtualClock
from foundation_core._clock import check_clock


def test_advance_moves_now_and_sleep_records_the_wait() -> None:
    clock = VirtualClock()
    start = clock.now()
    clock.advance(1.5)
    clock.sleep(0.25)
    assert clock.now() == pytest.approx(start + 1.75)
    assert clock.sleeps == [0.25]


@pytest.mark.parametrize("seconds", [-0.001, -math.inf])
def test_advance_refuses_to_go_back(seconds: float) -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(seconds)


@pytest.mark.parametrize("seconds", [math.nan, math.inf])
def test_advance_refuses_a_time_that_is_no_finite_number(seconds: float) -> None:
    """NaN passed ``seconds < 0`` and made every later ``now()`` NaN (each deadline and window
    compared with it false); ``inf`` is no time a test can reach."""
    clock = VirtualClock()
    before = clock.now()
    with pytest.raises(ValueError, match="finite"):
        clock.advance(seconds)
    assert clock.now() == before


def test_check_clock_takes_a_clock_or_none_and_names_the_factory_otherwise() -> None:
    clock = VirtualClock()
    assert check_clock(clock, "f") is clock
    assert check_clock(None, "f") is SYSTEM_CLOCK
    with pytest.raises(TypeError, match=r"^my_factory: clock must be a foundation_core\.Clock .*monotonic"):
        check_clock(time.monotonic, "my_factory")
