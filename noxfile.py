"""nox sessions: one per plugin, transport and client, plus lint, typecheck, tests, bench, demo.

Sessions run in the development environment made by ``scripts/setup.sh`` (``.venv``), so they
are fast and see every sibling distribution installed editable::

    bash scripts/setup.sh && .venv/bin/nox -l        # list sessions
    .venv/bin/nox -s retry                           # one plugin's tests
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]
ROOT = Path(__file__).parent


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "foundation_core")


@nox.session
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def core(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        session.run("python", str(script), "--json", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    session.run("foundation", "demo")


def _component_session(path: Path) -> None:
    def run(session: nox.Session) -> None:
        session.run("python", "-m", "pytest", str(path / "tests"), *session.posargs)

    run.__doc__ = f"tests of {path.relative_to(ROOT)}"
    nox.session(name=path.name)(run)


for _dir in sorted([*ROOT.glob("plugins/*"), *ROOT.glob("transports/*"), *ROOT.glob("clients/*")]):
    if (_dir / "tests").is_dir():
        _component_session(_dir)
