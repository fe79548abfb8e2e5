"""The inference benchmark's own accounting (its figures are checked by tests/benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from foundation_ml._bench import _cycle, cpu_ns


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_cpu_ns_counts_the_cpu_a_process_uses_and_not_its_sleep() -> None:
    before = cpu_ns(os.getpid())
    _busy(0.05)
    busy = cpu_ns(os.getpid()) - before
    assert 0.03e9 <= busy <= 0.5e9  # the scheduler's exact accounting, not 10 ms ticks
    before = cpu_ns(os.getpid())
    time.sleep(0.05)
    assert cpu_ns(os.getpid()) - before < 0.02e9


def test_cpu_ns_sums_the_live_threads_of_another_process() -> None:
    # each thread burns 0.2 s of its own CPU time (not wall time: a loaded machine gives less)
    code = (
        "import threading, time\n"
        "spun = threading.Event()\n"
        "def spin():\n"
        "    while time.thread_time() < 0.2: pass\n"
        "def other():\n"
        "    spin(); spun.set(); time.sleep(30)\n"
        "threading.Thread(target=other, daemon=True).start()\n"
        "spin(); spun.wait(); print('done', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        assert cpu_ns(proc.pid) >= 0.4e9  # both threads, alive, 0.2 s each: one alone is 0.2 s
    finally:
        proc.kill()
        proc.wait()


def test_cpu_ns_of_a_process_that_is_gone_raises() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(FileNotFoundError):
        cpu_ns(proc.pid)


def test_the_cycle_splits_a_closed_loops_batch_time_into_model_and_overhead() -> None:
    # direct 25k calls/s (40 µs); the model on a batch of 4 answers 80k rows/s (50 µs a batch).
    # Twice the direct rate with full batches is 50k rows/s: a cycle of 80 µs, 30 of them not the model.
    result = {"batched_mean_batch_size": 4.0, "batched_ceiling_rps": 80_000.0, "direct_rps": 25_000.0}
    # served: 20k rows/s in batches of 4 is a 200 µs cycle, 150 µs of it not the model
    assert _cycle(result, 20_000.0, 4) == {
        "batched_cycle_us": 200.0,
        "batched_cycle_overhead_us": 150.0,
        "target_cycle_overhead_us": 30.0,
    }
    # half-full batches: the cycle holds 2 rows, the model's share of it is 2 rows' worth
    result["batched_mean_batch_size"] = 2.0
    assert _cycle(result, 20_000.0, 4)["batched_cycle_us"] == 100.0
    assert _cycle(result, 20_000.0, 4)["batched_cycle_overhead_us"] == 75.0
