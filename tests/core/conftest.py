"""Fixture plugins as real distributions, installed by pip into a temporary directory.

Each fixture is a tiny project with a ``foundation`` entry point; pip builds and installs them
(real ``.dist-info``, real entry points), and tests put the directory on ``sys.path`` or
``PYTHONPATH``. Nothing mocks ``importlib.metadata``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS: dict[str, dict[str, str]] = {
    # name: {module: source}
    "good": {
        "fixture_good/__init__.py": "",
        "fixture_good/plugin.py": """
            import attrs
            from foundation_core import hookimpl

            @attrs.frozen
            class GoodSettings:
                level: int = 3

            def double(policy):
                return lambda fn: (lambda *a, **k: 2 * fn(*a, **k))

            def hello(args, hub):
                print("hello from good")
                return 0

            @hookimpl
            def foundation_register_patterns(register):
                register("double", double)

            @hookimpl
            def foundation_register_transports(register):
                register("pigeon", "fixture_good.heavy:Pigeon")

            @hookimpl
            def foundation_register_commands(cli):
                cli.add_command("good-hello", hello, help="say hello")

            @hookimpl
            def foundation_config_sections(add):
                add("good", GoodSettings)

            EVENTS = []

            @hookimpl
            def foundation_startup(hub):
                EVENTS.append("good.startup")

            @hookimpl
            def foundation_shutdown(hub):
                EVENTS.append("good.shutdown")
        """,
        "fixture_good/heavy.py": """
            class Pigeon:
                name = "pigeon"
        """,
    },
    "broken": {"fixture_broken/__init__.py": ""},  # entry point names a module that does not exist
    "raiser": {
        "fixture_raiser/__init__.py": "",
        "fixture_raiser/plugin.py": """
            from foundation_core import hookimpl

            @hookimpl
            def foundation_register_patterns(register):
                register("raiser-first", lambda policy: lambda fn: fn)
                raise RuntimeError("raiser exploded halfway")
        """,
    },
    "typo": {
        "fixture_typo/__init__.py": "",
        "fixture_typo/plugin.py": """
            from foundation_core import hookimpl

            @hookimpl
            def foundation_regster_patterns(register):
                register("typo", object)
        """,
    },
    "badargs": {
        "fixture_badargs/__init__.py": "",
        "fixture_badargs/plugin.py": """
            from foundation_core import hookimpl

            @hookimpl
            def foundation_register_patterns(registr):
                registr("badargs", object)
        """,
    },
    "clash": {
        "fixture_clash/__init__.py": "",
        "fixture_clash/plugin.py": """
            from foundation_core import hookimpl

            @hookimpl
            def foundation_register_patterns(register):
                register("double", lambda policy: lambda fn: fn)
        """,
    },
    "needy": {
        "fixture_needy/__init__.py": "",
        "fixture_needy/plugin.py": """
            from foundation_core import hookimpl

            FOUNDATION_REQUIRES = ["good"]

            @hookimpl
            def foundation_register_patterns(register):
                register("needy", lambda policy: lambda fn: fn)
        """,
    },
    "late": {
        "fixture_late/__init__.py": "",
        "fixture_late/plugin.py": """
            from foundation_core import hookimpl

            EVENTS = []

            @hookimpl(trylast=True)
            def foundation_startup(hub):
                EVENTS.append("late.startup")
                raise RuntimeError("late failed to start")

            @hookimpl
            def foundation_shutdown(hub):
                EVENTS.append("late.shutdown")
        """,
    },
}

# plugins that would disturb the tests of the site above (one has the core's name): their own site
ODD_PLUGINS: dict[str, dict[str, str]] = {
    "exiter": {
        "fixture_exiter/__init__.py": "",
        "fixture_exiter/plugin.py": """
            import sys
            sys.exit("exiter: refusing to load")
        """,
    },
    "baser": {
        "fixture_baser/__init__.py": "",
        "fixture_baser/plugin.py": """
            class Refused(BaseException):
                pass

            raise Refused("baser: not here")
        """,
    },
    "needsdep": {
        "fixture_needsdep/__init__.py": "",
        "fixture_needsdep/plugin.py": """
            import fixture_dependency_not_installed  # noqa: F401
        """,
    },
    "foundation": {
        "fixture_foundation/__init__.py": "",
        "fixture_foundation/plugin.py": """
            from foundation_core import hookimpl

            @hookimpl
            def foundation_register_commands(cli):
                cli.add_command("version", lambda args, hub: 7, help="hijacked")
        """,
    },
    "hijacker": {
        "fixture_hijacker/__init__.py": "",
        "fixture_hijacker/plugin.py": """
            from foundation_core import hookimpl

            @hookimpl
            def foundation_register_commands(cli):
                cli.add_command("plugins", lambda args, hub: 7, help="hijacked", replace=True)
        """,
    },
}

ENTRY_POINTS = {
    "broken": "fixture_does_not_exist.plugin",
}


def _write_project(root: Path, name: str, files: dict[str, str]) -> Path:
    proj = root / f"foundation-fixture-{name}"
    for rel, text in files.items():
        path = proj / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    target = ENTRY_POINTS.get(name, f"fixture_{name}.plugin")
    (proj / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "foundation-fixture-{name}"
        version = "1.2.3"

        [project.entry-points.foundation]
        {name} = "{target}"

        [tool.setuptools.packages.find]
        include = ["fixture_{name}*"]
    """)
    )
    return proj


def pip_install_target(projects: list[Path], site: Path) -> None:
    """``pip install --target site`` the projects: real builds, real dist-info and entry points."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(site),
            *map(str, projects),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(autouse=True)
def _no_hub_outlives_its_test() -> Iterator[None]:
    """A test that starts a hub without shutting it down would leave it the active hub (the one
    ``emit`` and ``resilient()`` use) for the tests after it: shut down what is left."""
    from foundation_core._events import active_hub, deactivate

    yield
    while (hub := active_hub()) is not None:
        hub.shutdown()
        if active_hub() is hub:  # a shutdown that left it active: never loop on it for ever
            deactivate(hub)


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding every fixture plugin, installed by pip (one run for all)."""
    root = tmp_path_factory.mktemp("fixture-src")
    site = tmp_path_factory.mktemp("fixture-site")
    pip_install_target([_write_project(root, n, f) for n, f in PLUGINS.items()], site)
    return site


@pytest.fixture(scope="session")
def odd_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugins of ``ODD_PLUGINS``, installed by pip into a directory of their own."""
    root = tmp_path_factory.mktemp("odd-src")
    site = tmp_path_factory.mktemp("odd-site")
    pip_install_target([_write_project(root, n, f) for n, f in ODD_PLUGINS.items()], site)
    return site


@contextlib.contextmanager
def on_sys_path(path: Path, modules: str) -> Iterator[Path]:
    """``path`` first on ``sys.path`` while the block runs; afterwards the modules whose names
    start with ``modules``, imported from it, are forgotten (the next test imports its own)."""
    sys.path.insert(0, str(path))
    importlib.invalidate_caches()
    try:
        yield path
    finally:
        sys.path.remove(str(path))
        for mod in [m for m in sys.modules if m.startswith(modules)]:
            del sys.modules[mod]
        importlib.invalidate_caches()


@pytest.fixture
def on_path(plugin_site: Path) -> Iterator[Path]:
    """Put the fixture plugins on ``sys.path`` for this test only."""
    with on_sys_path(plugin_site, "fixture_") as path:
        yield path


def run_cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m foundation_core ARGS`` with the fixture plugins installed."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(site), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "foundation_core", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
