"""Shared benchmark helpers: percentiles, a JSON/text reporter, the standard CLI flags, ending cleanly.

A script imports this module after taking its own directory off the front of ``sys.path``
(benchmarks/logging.py would shadow the standard library's ``logging`` there) and putting it at
the end, where only names the standard library and the installed packages lack resolve to it::

    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]
    from _common import benchmark_run, report
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from foundation_ml._bench import (
    FLOOR_BUDGET_S,
    BenchmarkFailed,
    cpu_ns,
    die_with_parent,
    sigterm_exits,
    spin_floor,
    stdout_to_stderr,
    timer_overhead_ns,
)

__all__ = [
    "FLOOR_BUDGET_S",
    "BenchmarkFailed",
    "benchmark_run",
    "cpu_ns",
    "die_with_parent",
    "median",
    "parser",
    "percentile",
    "report",
    "sigterm_exits",
    "spin_floor",
    "stop_process",
    "stdout_to_stderr",
    "timer_overhead_ns",
]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by nearest rank on sorted samples."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    return p


@contextlib.contextmanager
def benchmark_run(as_json: bool) -> Iterator[None]:
    """Around a benchmark's measurements: SIGTERM ends them cleanly (``SystemExit``, so every
    with-block and finally clause stops what it started and releases its shared memory), and
    with ``--json`` nothing reaches stdout meanwhile (log lines go to stderr): the JSON object
    printed after it is the only thing there."""
    with sigterm_exits(), stdout_to_stderr() if as_json else contextlib.nullcontext():
        yield


def report(result: dict[str, Any], as_json: bool) -> None:
    """Print the result: one JSON object with --json, else aligned ``key value`` lines."""
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


def stop_process(proc: subprocess.Popen[Any], terminate: bool = True) -> None:
    """Stop ``proc`` (SIGTERM unless ``terminate`` is false: it was told another way) and wait for
    it, at most 10 s before SIGKILL."""
    if terminate and proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
