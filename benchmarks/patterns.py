"""Success-path overhead of the resilience patterns against tenacity and pybreaker, in one run.

Each candidate wraps the same trivial function; its overhead is its per-call time minus the bare
call's. Candidates are timed interleaved (one repeat of each, then the next repeat) so machine
noise hits them alike, and each figure is the median over the repeats.

    python benchmarks/patterns.py [--json] [--quick] [--repeats 9] [--target-seconds 0.05]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

# A sibling script may be named like a stdlib module (benchmarks/logging.py); do not let this
# directory, which Python puts first on sys.path, shadow the standard library: at the end of the
# path, only for _common.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here] + [_here]

import pybreaker  # noqa: E402
import tenacity  # noqa: E402
from _common import benchmark_run  # noqa: E402
from foundation_circuit_breaker import (  # noqa: E402
    BreakerRegistry,
    CircuitBreakerPolicy,
    circuit_breaker_factory,
)
from foundation_retry import RetryPolicy, retry_factory  # noqa: E402

import foundation_core  # noqa: E402


def bare(x: int) -> int:
    return x


def candidates(hub: foundation_core.Hub) -> dict[str, Callable[[int], Any]]:
    registry = BreakerRegistry()
    return {
        "bare": bare,
        "retry": retry_factory(RetryPolicy())(bare),
        "breaker": circuit_breaker_factory(CircuitBreakerPolicy(name="bench"), registry=registry)(bare),
        "breaker_count_window": circuit_breaker_factory(
            CircuitBreakerPolicy(name="bench-count", mode="count"), registry=registry
        )(bare),
        "pipeline": hub.pipeline(retry=True, circuit_breaker={"name": "bench-pipeline"}, timeout=5.0)(bare),
        "tenacity": tenacity.retry(
            stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(multiplier=0.1)
        )(bare),
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(bare),
    }


def _number_for(fn: Callable[[int], Any], target: float) -> int:
    number = 1000
    while True:
        took = timeit.timeit(lambda: fn(1), number=number)
        if took >= target / 4:
            return max(1000, int(number * target / took))
        number *= 4


def measure(repeats: int, target: float) -> dict[str, float]:
    with foundation_core.start() as hub:
        fns = candidates(hub)
        for name, fn in fns.items():
            if fn(7) != 7:
                raise SystemExit(f"candidate {name} returned the wrong value")
        numbers = {name: _number_for(fn, target) for name, fn in fns.items()}
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                timer = timeit.Timer("fn(1)", globals={"fn": fn})
                samples[name].append(timer.timeit(numbers[name]) / numbers[name] * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def report(per_call_us: dict[str, float], repeats: int) -> dict[str, Any]:
    base = per_call_us["bare"]

    def over(name: str) -> float:
        return round(per_call_us[name] - base, 4)

    out: dict[str, Any] = {
        "bare_call_us": round(base, 4),
        "retry_overhead_us": over("retry"),
        "breaker_overhead_us": over("breaker"),
        "breaker_count_window_overhead_us": over("breaker_count_window"),
        "pipeline_overhead_us": over("pipeline"),
        "tenacity_overhead_us": over("tenacity"),
        "pybreaker_overhead_us": over("pybreaker"),
    }
    floor = 1e-3  # an overhead below timer resolution would make the ratio meaningless
    out["tenacity_ratio"] = round(out["tenacity_overhead_us"] / max(out["retry_overhead_us"], floor), 1)
    out["pybreaker_ratio"] = round(out["pybreaker_overhead_us"] / max(out["breaker_overhead_us"], floor), 1)
    out["targets_met"] = {
        "retry_le_1us": out["retry_overhead_us"] <= 1.0,
        "breaker_le_1us": out["breaker_overhead_us"] <= 1.0,
        "pipeline_le_3us": out["pipeline_overhead_us"] <= 3.0,
        "tenacity_ge_20x": out["tenacity_ratio"] >= 20.0,
    }
    out["repeats"] = repeats
    out["statistic"] = "median of repeats, per call, microseconds"
    out["python"] = sys.version.split()[0]
    out["versions"] = {name: importlib.metadata.version(name) for name in ("tenacity", "pybreaker")}
    out["pipeline_layers"] = "timeout(deadline mode) -> retry -> circuit_breaker"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--target-seconds", type=float, default=0.05, help="time per repeat per candidate")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 0.01 s (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.target_seconds = min(args.repeats, 3), min(args.target_seconds, 0.01)
    with benchmark_run(args.json):
        result = report(measure(args.repeats, args.target_seconds), args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>34}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
