"""``foundation conformance [PATTERN] [--json]``: run the pattern specs against what is registered."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._runner import run_conformance


def conformance_main(args: argparse.Namespace, hub: Any) -> int:
    """Exit status 0 when every case passes, 1 when one fails or the pattern named has no
    implementation to check (spec errors: the CLI's error path)."""
    report = run_conformance(args.pattern, specs_dir=args.specs, config_files=args.config, overrides=args.set)
    ok = report.passed and not (bool(args.pattern) and any(r.skipped for r in report.results))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0 if ok else 1
    for pattern, impl in sorted(report.implementations.items()):
        rows = [r for r in report.results if r.pattern == pattern]
        passed = sum(r.passed for r in rows)
        print(f"{pattern}: {passed}/{len(rows)} passed  ({impl})")
    for r in report.results:
        if r.skipped:
            print(f"{r.pattern}: skipped ({r.skipped})")
        for problem in r.problems:
            print(f"  FAIL {r.pattern}/{r.case} [{r.mode}]: {problem}")
    counts = report.to_json()["counts"]
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return 0 if ok else 1
