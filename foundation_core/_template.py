"""``foundation new-plugin NAME``: write a new plugin distribution that passes its own tests.

The generated plugin registers one pattern (a call counter), one config section and one CLI
command, so an author sees every registration style working before replacing them.
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

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")

_FILES: dict[str, str] = {
    "pyproject.toml": """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "foundation-$name"
version = "0.1.0"
description = "A Foundation plugin: $name"
requires-python = ">=3.11"
dependencies = ["foundation>=$core_version", "attrs>=23.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The entry point is how Foundation finds the plugin: group "foundation", name = plugin name.
[project.entry-points.foundation]
$name = "$module.plugin"

[tool.setuptools.packages.find]
include = ["$module*"]
""",
    "README.md": """\
# foundation-$name

A Foundation plugin. Install it next to `foundation` and it is found through its entry point:

    pip install -e .
    foundation plugins        # lists "$name" with what it registered
    foundation $name-hello    # the command it adds

Run its tests with `pytest`.
""",
    "$module/__init__.py": '''\
"""foundation-$name: a Foundation plugin."""

__version__ = "0.1.0"
''',
    "$module/plugin.py": '''\
"""The hookimpls of foundation-$name: one pattern, one config section, one command."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import attrs

from foundation_core import hookimpl


@attrs.frozen
class Settings:
    """Config section "$section": validated on construction, frozen."""

    label: str = "$name"
    enabled: bool = True


def counting(policy: Settings) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Pattern factory: ``factory(policy) -> wrapper``; the wrapper counts calls."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                acall.calls += 1  # type: ignore[attr-defined]
                return await fn(*args, **kwargs)

            acall.calls = 0  # type: ignore[attr-defined]
            return acall

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            call.calls += 1  # type: ignore[attr-defined]
            return fn(*args, **kwargs)

        call.calls = 0  # type: ignore[attr-defined]
        return call

    return wrap


def hello(args: Any, hub: Any) -> int:
    print(f"hello from $name ({len(hub.plugins)} plugins loaded)")
    return 0


@hookimpl
def foundation_register_patterns(register: Any) -> None:
    register("$name-counter", counting)


@hookimpl
def foundation_config_sections(add: Any) -> None:
    add("$section", Settings)


@hookimpl
def foundation_register_commands(cli: Any) -> None:
    cli.add_command("$name-hello", hello, help="say hello from $name")
''',
    "tests/test_plugin.py": '''\
"""foundation-$name keeps its contract: it registers its pattern, section and command."""

import foundation_core

from $module import plugin


def test_registers_pattern_section_and_command():
    with foundation_core.start(plugins=[plugin], entry_points=False) as hub:
        assert "$name-counter" in hub.patterns
        assert hub.config["$section"] == plugin.Settings()
        assert "$name-hello" in hub.commands.commands


def test_counter_counts_calls():
    wrapped = plugin.counting(plugin.Settings())(lambda x: x * 2)
    assert [wrapped(1), wrapped(2)] == [2, 4]
    assert wrapped.calls == 2
''',
}


def new_plugin(name: str, directory: str | Path = ".") -> Path:
    """Write ``foundation-NAME/`` under ``directory`` and return its path."""
    if not _NAME.match(name):
        raise ValueError(f"plugin name {name!r} must be lowercase words joined by '-', e.g. 'my-cache'")
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


def new_plugin_main(args: argparse.Namespace, hub: Hub) -> int:
    try:
        root = new_plugin(args.name, args.dir)
    except (ValueError, FileExistsError) as exc:
        print(f"foundation new-plugin: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"foundation new-plugin: cannot write {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"created {root}\nnext: pip install -e {root} && pytest {root}")
    return 0
