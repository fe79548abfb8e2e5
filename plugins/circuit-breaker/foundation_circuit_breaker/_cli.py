"""``foundation breakers [--json]``: list the named circuit breakers with state and counts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._registry import breakers


def breakers_main(args: argparse.Namespace, hub: Any) -> int:
    """List this process's breakers; the one configured in ``[circuit_breaker]`` always appears."""
    config = hub.configure(args.config, args.set)
    if "circuit_breaker" in config:
        breakers.get_or_create(config["circuit_breaker"])
    rows = [b.snapshot() for b in breakers]
    if args.json:
        print(json.dumps({"breakers": rows}, indent=2))
        return 0
    header = (
        f"{'NAME':<20} {'STATE':<10} {'MODE':<12} {'CALLS':>6} {'FAILS':>6} {'REJECTED':>8} {'OPENED':>6}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['name']:<20} {r['state']:<10} {r['mode']:<12} {r['calls']:>6} {r['failures']:>6} "
            f"{r['rejected']:>8} {r['opened']:>6}"
        )
    return 0
