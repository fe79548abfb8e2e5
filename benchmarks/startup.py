"""Start-up cost: `foundation plugins --json` with every plugin of this repository installed.

Baselines in the same run: a bare interpreter (`python -c pass`) and `import pluggy`.
Target: ``foundation_plugins_ms`` <= 250 with no plugin failed (``target_met``); a plugin that
failed to load makes the run fail (exit 1) whatever the time.
Run: ``.venv/bin/python benchmarks/startup.py --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

# benchmarks/ holds modules named like the stdlib's (logging.py): never ahead of the stdlib on
# the import path; at its end only for _common
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

from _common import benchmark_run, median, parser, report  # noqa: E402

HEAVY = ["torch", "numpy", "dynaconf", "structlog", "posix_ipc", "tenacity", "yaml", "safetensors"]
TARGET_MS = 250


def _env() -> dict[str, str]:
    """This environment without FOUNDATION_* (no plugin selection or settings of the caller's)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}


def _wall_ms(cmd: list[str], runs: int) -> float:
    env = _env()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - t0) * 1e3)
    return median(samples)


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    runs = 5 if args.quick else 21
    py = sys.executable
    foundation = [py, "-m", "foundation_core", "plugins", "--json"]
    probe = (
        "import contextlib, io, json, sys\n"
        "from foundation_core._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out: main(['plugins', '--json'])\n"
        "doc = json.loads(out.getvalue())\n"
        f"print(json.dumps({{'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules),"
        " 'plugins': [p['name'] for p in doc['plugins'] if p['status'] in ('loaded', 'app')],"
        " 'failed': [p['name'] for p in doc['plugins'] if p['status'] == 'failed']}))\n"
    )
    with benchmark_run(args.json):
        # the same environment as the timed runs: the plugins probed are the plugins timed
        out = subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True, env=_env())
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        _wall_ms(foundation, 2)  # warm the file-system cache
        python_ms = _wall_ms([py, "-c", "pass"], runs)
        pluggy_ms = _wall_ms([py, "-c", "import pluggy"], runs)
        plugins_ms = _wall_ms(foundation, runs)
    report(
        {
            "foundation_plugins_ms": round(plugins_ms, 1),
            "python_import_pluggy_ms": round(pluggy_ms, 1),
            "python_bare_ms": round(python_ms, 1),
            "overhead_over_pluggy_ms": round(plugins_ms - pluggy_ms, 1),
            "torch_imported": "torch" in seen["heavy"],
            "heavy_modules_imported": seen["heavy"],
            "plugins_active": seen["plugins"],
            "plugins_failed": seen["failed"],
            "runs": runs,
            "target_foundation_plugins_ms": TARGET_MS,
            "target_met": plugins_ms <= TARGET_MS and not seen["failed"],
        },
        args.json,
    )
    if seen["failed"]:
        print(f"startup.py: error: plugins failed to load: {', '.join(seen['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
