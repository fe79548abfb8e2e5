"""Inference benchmark: the demo MLP direct vs over shm; the logic lives in foundation_ml._bench.

.venv/bin/python benchmarks/inference.py --json     # one JSON object
.venv/bin/python benchmarks/inference.py --quick    # a short smoke run

SIGTERM stops it cleanly (its server and client processes, their shared memory); a run that
cannot measure (a client process that died, ``--transport inproc``) exits 1 naming why.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Scripts in benchmarks/ are named after what they measure (logging.py...): keep this directory
# off sys.path so that they cannot shadow the standard library's modules.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402

from foundation_core.errors import FoundationError  # noqa: E402
from foundation_ml._bench import bench_main  # noqa: E402
from foundation_ml._plugin import _bench_arguments  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _bench_arguments(p)
    p.add_argument("--quick", action="store_true", help="fewer calls, shorter runs (smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.seconds = 300, 0.5
    try:
        return bench_main(args)
    except FoundationError as exc:  # BenchmarkFailed: what could not be measured, and why
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
