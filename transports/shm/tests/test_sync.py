"""The adaptive spin spins while spins get their response, blocks once most run out, and keeps trying."""

from __future__ import annotations

from foundation_shm._sync import AdaptiveSpin
from hypothesis import given
from hypothesis import strategies as st


def test_it_spins_while_spins_succeed_and_blocks_once_most_run_out() -> None:
    spin = AdaptiveSpin(100_000, explore=8, probe=2)
    windows = []
    for _ in range(64):
        window = spin.window()
        windows.append(window)
        spin.record(window, 40_000 if window else 120_000)  # the response comes within the window
    assert windows.count(0) == 0  # never blocks while spinning works
    for _ in range(64):
        window = spin.window()
        spin.record(window, 300_000 if window else 20_000)  # now every spin runs out
    tail = [spin.window() for _ in range(16)]
    assert tail.count(100_000) == 4 and tail.count(0) == 12  # it blocks, probing 2 spins in 8
    for _ in range(64):  # the peer got fast again: an explored spin that succeeds brings it back
        window = spin.window()
        spin.record(window, 30_000 if window else 90_000)
    assert [spin.window() for _ in range(8)] == [100_000] * 8


def test_a_zero_window_never_spins() -> None:
    spin = AdaptiveSpin(0, explore=2)
    assert {spin.window() for _ in range(10)} == {0}


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10**6)), max_size=300))
def test_it_explores_the_spin_at_least_every_explore_waits(outcomes: list[tuple[bool, int]]) -> None:
    """Whatever happened, no run of more than ``explore - probe`` blocking waits goes by."""
    spin = AdaptiveSpin(50_000, explore=8, probe=2)
    run = 0
    for hit, extra in outcomes:
        window = spin.window()
        run = 0 if window else run + 1
        assert run <= 6
        spin.record(window, (window - 1 if hit else window + 1 + extra) if window else extra)
