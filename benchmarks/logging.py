"""Benchmark: JSON log lines per second through Foundation's pipeline vs plain structlog and stdlib.

Each configuration writes N lines, each with a timestamp, a level, an event and 3 bound keys, to
its own file in one temporary directory; every line written is counted and checked as JSON.
The best of ``--repeat`` rounds is reported (the machine is shared, so the best is the least
disturbed). ``--json`` prints one JSON object.

    python benchmarks/logging.py --json
"""

from __future__ import annotations

import os
import sys

# This file is named logging.py: take its own directory off the front of the path so that
# ``import logging`` finds the standard library, not this script; at the end only for _common.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import structlog  # noqa: E402
from _common import benchmark_run  # noqa: E402
from foundation_logging import LoggingSettings, configure_logging, get_logger  # noqa: E402

BOUND = {"request_id": "0f3c2a9e", "model_id": "resnet50", "batch": 8}


def _check(path: Path, n: int) -> None:
    lines = path.read_bytes().splitlines()
    if len(lines) != n:
        raise SystemExit(f"{path.name}: expected {n} lines, found {len(lines)}")
    last = json.loads(lines[-1])
    missing = {"timestamp", "level", "event", *BOUND} - set(last)
    if missing:
        raise SystemExit(f"{path.name}: line lacks {sorted(missing)}: {last}")


def _timed(run: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    run(n)
    return n / (time.perf_counter() - start)


def ours(path: Path, n: int) -> float:
    runtime = configure_logging(LoggingSettings(format="json", output=str(path), stdlib=False))
    try:
        log = get_logger().bind(**BOUND)

        def run(k: int) -> None:
            info = log.info
            for _ in range(k):
                info("request served")

        return _timed(run, n)
    finally:
        runtime.close()


def structlog_plain(path: Path, n: int) -> float:
    """structlog with TimeStamper, add_log_level and the default JSONRenderer, printing to the file
    (structlog's default PrintLoggerFactory and bound logger class, no logger caching)."""
    saved = structlog.get_config()
    with path.open("a") as f:
        structlog.configure(
            processors=[
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.add_log_level,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=f),
        )
        try:
            log = structlog.get_logger().bind(**BOUND)

            def run(k: int) -> None:
                info = log.info
                for _ in range(k):
                    info("request served")

            return _timed(run, n)
        finally:
            structlog.configure(**saved)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        for key in BOUND:
            entry[key] = getattr(record, key)
        return json.dumps(entry)


def stdlib_json(path: Path, n: int) -> float:
    logger = logging.getLogger("bench.stdlib")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(_JsonFormatter())
    logger.addHandler(handler)
    try:
        adapter = logging.LoggerAdapter(logger, BOUND)

        def run(k: int) -> None:
            info = adapter.info
            for _ in range(k):
                info("request served")

        return _timed(run, n)
    finally:
        logger.removeHandler(handler)
        handler.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-n", type=int, default=100_000, help="lines per round (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per configuration (default 5)")
    parser.add_argument("--quick", action="store_true", help="at most 20000 lines and 2 rounds (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeat = min(args.n, 20_000), min(args.repeat, 2)
    benches = {"ours": ours, "structlog_plain": structlog_plain, "stdlib_json": stdlib_json}
    best: dict[str, float] = dict.fromkeys(benches, 0.0)
    with benchmark_run(args.json), tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for name, bench in benches.items():  # interleaved, so drift hits all three alike
                path = Path(tmp) / f"{name}-{round_}.log"
                rate = bench(path, args.n)
                _check(path, args.n)
                best[name] = max(best[name], rate)
    result = {
        "ours_logs_per_s": round(best["ours"]),
        "structlog_plain_logs_per_s": round(best["structlog_plain"]),
        "stdlib_json_logs_per_s": round(best["stdlib_json"]),
        "ratio_vs_structlog_plain": round(best["ours"] / best["structlog_plain"], 2),
        "ratio_vs_stdlib_json": round(best["ours"] / best["stdlib_json"], 2),
        "lines_per_round": args.n,
        "rounds": args.repeat,
        "target": "ours >= 150000 lines/s and >= 2x structlog_plain",
        "meets_target": best["ours"] >= 150_000 and best["ours"] >= 2 * best["structlog_plain"],
        "python": platform.python_version(),
        "structlog": structlog.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
