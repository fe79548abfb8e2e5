"""`foundation new-plugin` writes a distribution that installs, is discovered, and passes its tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_core._template import new_plugin

from .conftest import pip_install_target, run_cli


def test_generated_plugin_installs_is_discovered_and_passes_its_own_tests(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "new-plugin", "my-cache", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "foundation-my-cache"
    site = tmp_path / "site"
    pip_install_target([root], site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
    listed = run_cli(site, "plugins", "--json", FOUNDATION_PLUGINS="my-cache")
    plugin = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "my-cache")
    assert plugin["status"] == "loaded"
    assert plugin["registered"]["patterns"] == ["my_cache"]
    assert plugin["registered"]["config_sections"] == ["my_cache"]
    assert plugin["registered"]["commands"] == ["my-cache-hello"]
    hello = run_cli(site, "my-cache-hello", FOUNDATION_PLUGINS="my-cache")
    assert hello.stdout.startswith("hello from my-cache")


def test_the_generated_noxfile_runs_the_tests_with_the_python_that_runs_nox(tmp_path: Path) -> None:
    """Not whichever ``python`` is first on PATH (an unactivated venv's nox ran another Python,
    without the plugin: "No module named 'foundation_core'")."""
    root = new_plugin("my-cache", tmp_path)
    site = tmp_path / "site"
    pip_install_target([root], site)
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "python").write_text("#!/bin/sh\necho 'the decoy python ran' >&2\nexit 3\n")
    (decoy / "python").chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": f"{decoy}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(root / "noxfile.py"), "--", "-p", "no:cacheprovider"],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "decoy" not in proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout + proc.stderr


def test_the_generated_pyproject_ships_py_typed_and_its_readme(tmp_path: Path) -> None:
    import tomllib

    root = new_plugin("my-cache", tmp_path)
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["readme"] == "README.md" and (root / "README.md").is_file()
    assert project["tool"]["setuptools"]["package-data"] == {"foundation_my_cache": ["py.typed"]}
    assert (root / "foundation_my_cache" / "py.typed").is_file()


def test_the_generated_sdist_holds_the_tests_and_the_noxfile_the_readme_runs_them_with(
    tmp_path: Path,
) -> None:
    """docs/plugins.md: an sdist's tests should pass from the sdist; its README says to run them with
    `nox`, whose noxfile.py setuptools leaves out of an sdist unless MANIFEST.in names it."""
    import tarfile

    root = new_plugin("my-cache", tmp_path)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(root)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (sdist,) = out.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}
    assert {"noxfile.py", "tests/test_plugin.py", "README.md"} <= names


def test_in_git_what_testing_and_building_the_plugin_leaves_behind_is_ignored(tmp_path: Path) -> None:
    """An author who runs `git init` and `git add .` after testing and building commits the plugin's
    source only, not __pycache__/, .pytest_cache/, *.egg-info/ or dist/."""
    root = new_plugin("my-cache", tmp_path)
    generated = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as an author's shell
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests"], cwd=root, env=env, capture_output=True, timeout=120
    )
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", "dist", "."],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=180,
    )
    left = {p.name for p in root.iterdir()}
    assert {".pytest_cache", "dist", "foundation_my_cache.egg-info"} <= left
    assert any(root.rglob("__pycache__"))
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert {line[3:] for line in status.splitlines()} == generated


@pytest.mark.parametrize("name", ["My_Cache", "1cache", "cache-", "", "my-cache\n", "my.cache", "caf\u00e9"])
def test_invalid_plugin_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="lowercase words joined by '-'"):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


@given(st.text(alphabet=st.sampled_from("ab1-_.\n \u00e9A"), max_size=6))
@settings(max_examples=150, deadline=None)
def test_a_name_is_refused_or_makes_a_valid_distribution_and_module(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            root = new_plugin(name, tmp)
        except ValueError:
            assert os.listdir(tmp) == []
            return
        assert root.name == f"foundation-{name}" and os.listdir(tmp) == [root.name]
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name)  # a name pip and entry points take as is
        module = "foundation_" + name.replace("-", "_")
        assert module.isidentifier() and (root / module / "plugin.py").is_file()


@pytest.mark.parametrize("name", ["clock", "order"])
def test_a_name_the_pipeline_takes_as_its_own_argument_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"hub\.pipeline\(\)"):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_not_overwritten(tmp_path: Path) -> None:
    new_plugin("dup", tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        new_plugin("dup", tmp_path)


def test_a_directory_it_cannot_write_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli(tmp_path, "new-plugin", "my-cache", "--dir", str(blocker))
    assert proc.returncode == 1
    assert f"foundation new-plugin: cannot write {blocker}: Not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_generated_code_passes_the_projects_lint_and_type_checks(tmp_path: Path) -> None:
    """Run as its author runs them, from the plugin's own directory: its pyproject.toml selects
    this project's ruff rules, and its imports are sorted as they are there (``foundation_core``
    third-party; sorted for this repository's root, ``ruff check .`` failed in the plugin)."""
    root = new_plugin("my-cache", tmp_path)
    assert (root / "foundation_my_cache" / "py.typed").exists() and (root / "noxfile.py").exists()
    repo = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    ours = re.search(
        r"(?ms)^\[tool\.ruff\.lint\]\nselect = (\[.*?\])$", (repo / "pyproject.toml").read_text()
    )
    theirs = re.search(
        r"(?ms)^\[tool\.ruff\.lint\]\nselect = (\[.*?\])$", (root / "pyproject.toml").read_text()
    )
    assert ours and theirs and theirs[1] == ours[1]  # the rules it passes are this project's
    for tool in (["ruff", "check", "--no-cache"], ["ruff", "format", "--check", "--no-cache"]):
        done = subprocess.run(
            [str(bin_dir / tool[0]), *tool[1:], "."],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    typed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--ignore-missing-imports",
            str(root / "foundation_my_cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(repo)},
    )
    assert typed.returncode == 0, typed.stdout + typed.stderr


@pytest.mark.parametrize("name", ["retry", "circuit-breaker", "rate-limit", "core"])
def test_the_name_of_an_installed_plugin_or_module_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="is taken by"):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []
