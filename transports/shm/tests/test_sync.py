"""The adaptive spin picks whichever of spinning and blocking has been faster, and keeps trying both."""

from __future__ import annotations

from foundation_shm._sync import AdaptiveSpin


def test_it_spins_while_spinning_is_faster_and_blocks_once_blocking_is() -> None:
    spin = AdaptiveSpin(100_000, explore=4)
    windows = []
    for _ in range(64):
        window = spin.window()
        windows.append(window)
        spin.record(window, 10_000 if window else 90_000)  # spinning pays: 10 µs against 90 µs
    assert windows.count(0) == 16  # only the exploring waits block
    for _ in range(64):
        window = spin.window()
        spin.record(window, 300_000 if window else 20_000)  # now the machine is oversubscribed
    tail = [spin.window() for _ in range(16)]
    assert tail.count(100_000) == 4 and tail.count(0) == 12  # it blocks, exploring the spin


def test_a_zero_window_never_spins() -> None:
    spin = AdaptiveSpin(0, explore=2)
    assert {spin.window() for _ in range(10)} == {0}
