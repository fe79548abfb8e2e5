"""What the inference benchmark measures with: timer cost, spin floor, direct call, latency, rate.

The primitives ``foundation_ml._bench`` builds its run from (and ``benchmarks/`` reuses through
it): each times one thing, and none of them starts a server.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._parent_death import die_with_parent

__all__ = [
    "FLOOR_BUDGET_S",
    "ROUNDS",
    "direct_call",
    "mean_batch_size",
    "rate",
    "spin_floor",
    "timer_overhead_ns",
]


def timer_overhead_ns(samples: int = 20000) -> float:
    """p50 of two back-to-back ``time.perf_counter_ns()`` reads, in ns: the timer's own cost,
    which every timed sample of these benchmarks includes once (the spin floor's too: it is not
    subtracted from any figure; it is reported so that a reader can judge it)."""
    clock = time.perf_counter_ns
    times = np.empty(samples, np.int64)
    for i in range(samples):
        t0 = clock()
        times[i] = clock() - t0
    return float(np.percentile(times, 50))


#: The longest a spin floor measures (s): on an idle machine its rounds take milliseconds, but
#: with more busy processes than vCPUs each round trip waits for a scheduler slice (measured here
#: with three busy loops beside it: 5,000 rounds took over 90 s, and a CI run's benchmark smoke
#: test timed out in it). The rounds measured by then are what it reports.
FLOOR_BUDGET_S = 10.0


def spin_floor(rounds: int, budget_s: float = FLOOR_BUDGET_S) -> np.ndarray:
    """Round trips (µs) of two processes spinning on shared words (the machine's IPC floor); the
    same measurement as ``benchmarks/shm.py``'s ``floor_spin`` (one word per cache line). Each
    includes one timer read (``timer_overhead_ns``). At most ``budget_s`` seconds: fewer rounds
    (at least 64) come back if it runs out, checked between rounds, outside the timed part."""
    buf = mmap.mmap(-1, 4096)
    words = memoryview(buf).cast("Q")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child echoes every ping, then leaves
        die_with_parent(parent)
        for i in range(1, rounds + 1):
            while words[0] != i:
                pass
            words[8] = i
        os._exit(0)
    times = np.empty(rounds, np.int64)
    clock = time.perf_counter_ns
    deadline = time.monotonic() + budget_s
    done = 0
    try:
        for i in range(1, rounds + 1):
            t0 = clock()
            words[0] = i
            while words[8] != i:
                pass
            times[i - 1] = clock() - t0
            done = i
            if not i & 63 and time.monotonic() > deadline:  # after each 64 rounds, untimed
                break
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # it would spin for a ping that never comes
        raise
    finally:
        if done < rounds:  # out of time (or interrupted): it waits for pings that never come
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        words.release()
        buf.close()
    return times[:done] / 1e3


def direct_call(model: Any, threads: int = 1, rows: int = 1) -> tuple[Any, np.ndarray]:
    """``(call, x)``: ``call(x)`` runs the demo ``model`` directly in PyTorch on ``rows`` rows of
    input, as a user's own code would (``inference_mode``, ``threads`` intra-op threads; 0 leaves
    torch's default, as ``foundation serve --threads 0`` does)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((rows, 784)).astype(np.float32)

    def direct(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()  # type: ignore[no-any-return]

    return direct, x


def _timed(call: Any, arg: Any, calls: int) -> np.ndarray:
    for _ in range(min(200, calls)):
        call(arg)
    times = np.empty(calls, np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        call(arg)
        times[i] = clock() - t0
    return times / 1e3


def rate(call: Any, arg: Any, seconds: float) -> float:
    """Calls per second of ``call(arg)`` in a closed loop for about ``seconds`` (at least 50
    calls: ``--seconds 1e-9`` measured none, a rate of 0 that later figures divide by)."""
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(50):
            call(arg)
        n += 50
        if time.perf_counter() >= end:
            return n / (time.perf_counter() - t0)


ROUNDS = 5


def _spin_forever(parent: int) -> None:  # pragma: no cover - runs in a child process until killed
    die_with_parent(parent)
    while True:
        pass


def _with_and_without_spinner(measure: Any) -> tuple[float, float]:
    """``measure()`` while a child process busy-loops on another CPU, and while it is stopped,
    in ``ROUNDS`` alternating rounds: (median with, median without). Alternating matters: this
    VM's speed drifts by up to ~1.7x over seconds, so one figure taken after the other compares
    two machines (an earlier version did that, and reported a 1.7x slowdown that alternating
    rounds do not show)."""
    mine = os.sched_getaffinity(0)
    child = mp.get_context("fork").Process(target=_spin_forever, args=(os.getpid(),), daemon=True)
    child.start()
    assert child.pid is not None
    spinning: list[float] = []
    idle: list[float] = []
    try:
        if len(mine) > 1:
            here = min(mine)
            os.sched_setaffinity(child.pid, mine - {here})
            os.sched_setaffinity(0, {here})
        for r in range(2 * ROUNDS):
            on = r % 2 == 0
            os.kill(child.pid, signal.SIGCONT if on else signal.SIGSTOP)
            time.sleep(0.02)
            (spinning if on else idle).append(float(measure()))
    finally:
        os.sched_setaffinity(0, mine)
        child.kill()
        child.join()
    return round(float(np.median(spinning)), 2), round(float(np.median(idle)), 2)


def _latency(rounds: Sequence[np.ndarray]) -> dict[str, float]:
    """Of one call's samples (µs), one array per round: ``p50``, the median of the rounds' p50s
    (the machine drifts between rounds); ``p99`` over every sample of every round, pooled (a
    median of the rounds' p99s would hide the tail of the worst rounds); and that median of the
    rounds' p99s, ``p99_median_of_rounds``, which earlier versions reported as the p99."""
    pooled = np.concatenate(rounds)
    return {
        "p50": round(float(np.median([np.percentile(r, 50) for r in rounds])), 2),
        "p99": round(float(np.percentile(pooled, 99)), 2),
        "p99_median_of_rounds": round(float(np.median([np.percentile(r, 99) for r in rounds])), 2),
    }


def mean_batch_size(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """The mean size of the batches a model ran between two of its stats documents (the
    difference of their ``batch_sizes`` histograms): a run's own batches, not the warm-up's."""
    earlier = before.get("batch_sizes", {})
    sizes = {int(k): v - earlier.get(k, 0) for k, v in after.get("batch_sizes", {}).items()}
    batches = sum(sizes.values())
    return round(sum(k * v for k, v in sizes.items()) / batches, 3) if batches else None
