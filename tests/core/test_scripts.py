"""What scripts/*.sh run from .venv is installed there by scripts/setup.sh (the dev extra)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dev_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = (re.match(r"[A-Za-z0-9_.-]+", req) for req in project["optional-dependencies"]["dev"])
    return {m.group(0).lower().replace("_", "-") for m in names if m}


def test_every_module_a_script_runs_from_the_venv_is_in_the_dev_extra() -> None:
    dev = _dev_distributions()
    ran = set()
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        for module in re.findall(r"\.venv/bin/python -m ([A-Za-z_][\w.]*)", script.read_text()):
            ran.add(module)
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "pip" or top.startswith("foundation"):
                continue  # the venv's own pip, the standard library, this repository
            assert top.replace("_", "-") in dev, (
                f"{script.name} runs `.venv/bin/python -m {module}`, but the dev extra "
                f"({', '.join(sorted(dev))}) does not install it"
            )
    assert "build" in ran, "scripts/build-dists.sh no longer runs `python -m build`: update this test"


def test_a_nox_session_refuses_an_environment_whose_foundation_is_not_this_checkout(tmp_path: Path) -> None:
    """A plugin author's environment (foundation installed from a wheel, pytest, ruff, mypy: what
    docs/plugins.md has them install) passed the noxfile's check, and a plugin session then ran
    this checkout's tests against the installed copy, failing on whatever it lacked."""
    fake = tmp_path / "site" / "foundation_core"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nox",
            "-f",
            str(ROOT / "noxfile.py"),
            "-s",
            "retry",
            "--envdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert f"whose foundation_core is {fake / '__init__.py'}, not this checkout's" in out
    assert "run `bash scripts/setup.sh`, then `.venv/bin/nox`" in out
    assert "Session retry aborted" in out and " passed" not in out  # before any test ran
