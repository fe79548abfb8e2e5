"""``foundation new-plugin NAME``: write a new plugin distribution that passes its own tests.

The generated plugin registers one pattern (a call counter, sync and async) with its config section
of the same name, and one CLI command, so an author sees every registration style working before
replacing them; it follows the rules of the built-in patterns and passes its own tests, lint and
type checks as generated.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from ._files import built_beside
from ._version import __version__

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["new_plugin", "new_plugin_main"]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_PIPELINE_ARGUMENTS = ("clock", "order")  # hub.pipeline(*, clock, order, **patterns)

_FILES: dict[str, str] = {
    "pyproject.toml": """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "foundation-$name"
version = "0.1.0"
description = "A Foundation plugin: $name"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["foundation>=$core_version", "attrs>=23.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The entry point is how Foundation finds the plugin: group "foundation", name = plugin name.
[project.entry-points.foundation]
$name = "$module.plugin"

[tool.setuptools.packages.find]
include = ["$module*"]

[tool.setuptools.package-data]
$module = ["py.typed"]

# Foundation's own lint rules: `ruff check .` and `ruff format --check .` here pass as generated.
[tool.ruff]
line-length = 110

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "RUF", "SIM", "PT"]
""",
    "README.md": """\
# foundation-$name

A Foundation plugin. Install it next to `foundation` and it is found through its entry point:

    pip install -e '.[test]'
    foundation plugins        # lists "$name" with what it registered
    foundation $name-hello    # the command it adds

It registers the pattern `$section` (a call counter, for sync and async callables) with its
config section of the same name, and the command `$name-hello`. Run its tests with `pytest`, or
`nox` (the `noxfile.py` here has one session, `tests`, that runs them in the current environment).
""",
    "noxfile.py": """\
\"\"\"nox sessions of foundation-$name: `nox` runs its tests in the current environment.\"\"\"

import sys

import nox

nox.options.sessions = ["tests"]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    # the Python that runs nox (its environment has the plugin installed), not whichever
    # "python" is first on PATH
    session.run(sys.executable, "-m", "pytest", "-q", "tests", *session.posargs)
""",
    # what building, installing -e, testing, nox and the linters leave behind is not source
    ".gitignore": """\
__pycache__/
*.py[cod]
*.egg-info/
build/
dist/
.nox/
.venv/
.pytest_cache/
.ruff_cache/
.mypy_cache/
""",
    # setuptools puts tests/ in an sdist by itself, not noxfile.py, which the README runs them with
    "MANIFEST.in": "include noxfile.py\n",
    "$module/__init__.py": '''\
"""foundation-$name: a Foundation plugin."""

__version__ = "0.1.0"
''',
    "$module/py.typed": "",
    "$module/plugin.py": '''\
"""The hookimpls of foundation-$name: one pattern, its config section, one command.

The pattern follows the rules of Foundation's own (docs/patterns.md): ``factory(policy, *,
clock=None) -> wrapper``; the policy is an attrs class validated on construction and is also the
config section of the pattern's name; a wrapper protects sync and async callables alike and
refuses generator functions (protect the call that consumes the generator instead).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
from foundation_core import hookimpl, is_coroutine_callable, refuse_generator
from foundation_core.errors import PolicyError


def _label(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise PolicyError("$section", attribute.name, value, "a non-empty string")


def _flag(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise PolicyError("$section", attribute.name, value, "true or false")


@attrs.frozen
class Settings:
    """The policy of the ``$section`` pattern and its config section: validated on construction."""

    label: str = attrs.field(default="$name", validator=_label)
    enabled: bool = attrs.field(default=True, validator=_flag)


def counting(policy: Settings, *, clock: Any = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Pattern factory: the wrapper counts calls (in ``wrapped.calls``) when the policy is enabled."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        refuse_generator(fn, "$section")  # TypeError: its call only creates the generator
        if is_coroutine_callable(fn):  # async def, async __call__, partials of either

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                acall.calls += policy.enabled  # type: ignore[attr-defined]
                return await fn(*args, **kwargs)

            acall.calls = 0  # type: ignore[attr-defined]
            return acall

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            call.calls += policy.enabled  # type: ignore[attr-defined]
            return fn(*args, **kwargs)

        call.calls = 0  # type: ignore[attr-defined]
        return call

    return wrap


def hello(args: Any, hub: Any) -> int:
    print(f"hello from $name ({len(hub.plugins)} plugins loaded)")
    return 0


@hookimpl
def foundation_register_patterns(register: Any) -> None:
    register("$section", counting)


@hookimpl
def foundation_config_sections(add: Any) -> None:
    add("$section", Settings)


@hookimpl
def foundation_register_commands(cli: Any) -> None:
    cli.add_command("$name-hello", hello, help="say hello from $name")
''',
    "tests/test_plugin.py": '''\
"""foundation-$name keeps its contract: its pattern, section and command, sync and async."""

import asyncio

import foundation_core
import pytest
from foundation_core.errors import PolicyError

from $module import plugin


def test_registers_pattern_section_and_command():
    # installed=: exactly as if installed (a clash with another plugin would fail it)
    with foundation_core.start(installed=[plugin], entry_points=False) as hub:
        assert hub.plugins[hub.patterns.entry("$section").plugin].status == "loaded"
        assert hub.config["$section"] == plugin.Settings()
        assert "$name-hello" in hub.commands.commands
        counted = hub.pipeline(order=("$section",), **{"$section": True})(lambda x: x * 2)
        assert counted(3) == 6


def test_counter_counts_sync_and_async_calls():
    wrapped = plugin.counting(plugin.Settings())(lambda x: x * 2)
    assert [wrapped(1), wrapped(2)] == [2, 4]
    assert wrapped.calls == 2

    async def double(x):
        return x * 2

    awrapped = plugin.counting(plugin.Settings())(double)
    assert asyncio.run(awrapped(5)) == 10
    assert awrapped.calls == 1


def test_the_policy_is_validated_and_generators_are_refused():
    with pytest.raises(PolicyError, match="enabled"):
        plugin.Settings(enabled="no")

    def numbers():
        yield 1

    with pytest.raises(TypeError, match="generator"):
        plugin.counting(plugin.Settings())(numbers)
''',
}


def new_plugin(name: str, directory: str | Path = ".") -> Path:
    """Write ``foundation-NAME/`` under ``directory`` and return its path. ``directory`` is
    created if missing, but not its parent: a mistyped path is refused, not built."""
    if not _NAME.fullmatch(name):  # match() would take "my-cache\n": $ matches before a final newline
        raise ValueError(f"plugin name {name!r} must be lowercase words joined by '-', e.g. 'my-cache'")
    if name in _PIPELINE_ARGUMENTS:
        raise ValueError(
            f"plugin name {name!r} would name its pattern {name!r}, which hub.pipeline() takes as "
            "its own argument (so the generated tests could not use it); choose another name"
        )
    taken = _installed_as(name)
    if taken:
        raise ValueError(
            f"plugin name {name!r} is taken by {taken}: a plugin generated under it would replace "
            "that one when installed; choose another name"
        )
    parent = Path(directory).parent
    if not Path(directory).is_dir() and not parent.is_dir():  # a typo is not a tree of new dirs
        raise ValueError(
            f"directory {str(parent)!r} does not exist (needed for {str(directory)!r}); create it first"
        )
    root = Path(directory) / f"foundation-{name}"
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose another name or directory")
    module = "foundation_" + name.replace("-", "_")
    values = {"name": name, "module": module, "section": name.replace("-", "_"), "core_version": __version__}
    with built_beside(root) as partial:  # a failure halfway leaves no half-written plugin
        for rel, text in _FILES.items():
            path = partial / Template(rel).substitute(values)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(values))
    return root


def _installed_as(name: str) -> str | None:
    """What already answers to ``name``: an installed plugin's entry point, the distribution
    ``foundation-NAME`` or the module ``foundation_NAME``; None when the name is free."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, distribution, entry_points

    from ._discovery import normalize
    from ._markers import ENTRY_POINT_GROUP

    wanted = normalize(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if normalize(ep.name) == wanted:
            return f"the installed plugin {ep.name!r} ({ep.value})"
    try:
        dist = distribution(f"foundation-{name}")
        return f"the installed distribution {dist.metadata['Name']!r}"
    except PackageNotFoundError:
        pass
    module = "foundation_" + name.replace("-", "_")
    if name in ("core", "ml") or importlib.util.find_spec(module) is not None:
        return f"the module {module!r}"
    return None


def new_plugin_main(args: argparse.Namespace, hub: Hub) -> int:
    try:
        root = new_plugin(args.name, args.dir)
    except (ValueError, FileExistsError) as exc:
        print(f"foundation new-plugin: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"foundation new-plugin: cannot write {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"created {root}\nnext: pip install -e '{root}[test]' && pytest {root}")
    return 0
