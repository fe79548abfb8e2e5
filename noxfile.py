"""nox sessions: one per plugin, transport and client, plus lint, typecheck, tests, bench, demo.

Sessions run in the development environment made by ``scripts/setup.sh`` (``.venv``), so they
are fast and see every sibling distribution installed editable::

    bash scripts/setup.sh && .venv/bin/nox -l        # list sessions
    .venv/bin/nox -s retry                           # one plugin's tests
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]
ROOT = Path(__file__).parent
# Sessions run without their own venv: use the interpreter nox runs under (.venv's), not the first
# `python` on PATH.
PY = sys.executable
_DEV_MODULES = ("foundation_core", "pytest", "hypothesis", "ruff", "mypy")


def _py(session: nox.Session) -> str:
    """``PY``, once it is known to be the development environment's; else the session fails at
    once saying how to get one (a nox installed elsewhere, e.g. by pipx, runs its own Python; a
    plugin author's, one where foundation is installed from a wheel, not from this checkout)."""
    fix = (
        "these sessions run in the development environment; run `bash scripts/setup.sh`, then `.venv/bin/nox`"
    )
    missing = [m for m in _DEV_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        session.error(f"nox runs under {PY}, which lacks {', '.join(missing)}: {fix}")
    core = importlib.util.find_spec("foundation_core")
    origin = Path(core.origin).resolve() if core is not None and core.origin else None
    if origin is None or not origin.is_relative_to(ROOT.resolve()):
        session.error(
            f"nox runs under {PY}, whose foundation_core is {origin}, not this checkout's "
            f"({ROOT / 'foundation_core'}): the tests would run against another copy; {fix}"
        )
    return PY


@nox.session
def lint(session: nox.Session) -> None:
    session.run(_py(session), "-m", "ruff", "check", ".")
    session.run(_py(session), "-m", "ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run(_py(session), "-m", "mypy")  # pyproject.toml [tool.mypy] files: core, ml, shm, every plugin


@nox.session
def tests(session: nox.Session) -> None:
    session.run(_py(session), "-m", "pytest", *session.posargs)


@nox.session
def core(session: nox.Session) -> None:
    session.run(_py(session), "-m", "pytest", "tests", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark, one JSON object each; ``nox -s bench -- --quick`` for a short smoke run.
    Their stderr (log lines, warnings) stays on stderr, which nox would merge into stdout: the
    objects alone go to stdout, one a line (``nox -s bench > results.jsonl``)."""
    for script in sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")):
        session.run(_py(session), str(script), "--json", *session.posargs, stderr=None)


@nox.session
def demo(session: nox.Session) -> None:
    session.run(_py(session), "-m", "foundation_core", "demo")


def _component_session(path: Path) -> None:
    def run(session: nox.Session) -> None:
        session.run(_py(session), "-m", "pytest", str(path / "tests"), *session.posargs)

    run.__doc__ = f"tests of {path.relative_to(ROOT)}"
    nox.session(name=path.name)(run)


for _dir in sorted([*ROOT.glob("plugins/*"), *ROOT.glob("transports/*")]):
    if any((_dir / "tests").glob("test_*.py")):
        _component_session(_dir)


@nox.session
def clients(session: nox.Session) -> None:
    """Build the C, Rust and Go clients and hold them to the vectors and a live server."""
    session.run(_py(session), "-m", "pytest", str(ROOT / "clients"), *session.posargs)


@nox.session(name="shm-pure")
def shm_pure(session: nox.Session) -> None:
    """The shm transport's tests on its pure-Python path (as where the C hot path is not built)."""
    session.run(
        _py(session),
        "-m",
        "pytest",
        str(ROOT / "transports/shm/tests"),
        *session.posargs,
        env={"FDN_SHM_PURE": "1"},
    )
