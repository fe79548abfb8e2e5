"""Start-up cost: `foundation plugins --json` with every plugin of this repository installed.

Baselines in the same run: a bare interpreter (`python -c pass`) and `import pluggy`.
Run: ``.venv/bin/python benchmarks/startup.py --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, parser, report

HEAVY = ["torch", "numpy", "dynaconf", "structlog", "posix_ipc", "tenacity", "yaml", "safetensors"]


def _wall_ms(cmd: list[str], runs: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - t0) * 1e3)
    return median(samples)


def main() -> None:
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
    seen = json.loads(subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout)
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
            "target_foundation_plugins_ms": 250,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
