"""How the `foundation` dispatcher fails: unwritable output, broken plugin commands, misplaced options."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from foundation_core._discovery import PluginSelectionWarning, Selection

from .conftest import _write_project, pip_install_target, run_cli


def _foundation(*args: str, stdout: int | IO[Any], **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m foundation_core ARGS`` with the given stdout; stderr is captured."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDATION_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "foundation_core", *args],
        env=full_env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [["version"], ["plugins"], ["plugins", "--json"]])
def test_a_closed_stdout_pipe_exits_141_quietly(args: list[str]) -> None:
    """`foundation plugins | head -0`: no traceback, the status a shell gives a SIGPIPE death."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    try:
        proc = _foundation(*args, stdout=write_end)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_naming_the_command_and_exit_1() -> None:
    with open("/dev/full", "w") as full:
        proc = _foundation("version", stdout=full)
    assert proc.returncode == 1
    assert proc.stderr == "foundation version: error: cannot write output: No space left on device\n"


BROKEN_COMMANDS = {
    "fixture_cmds/__init__.py": "",
    "fixture_cmds/plugin.py": """
        from foundation_core import hookimpl

        @hookimpl
        def foundation_register_commands(cli):
            cli.add_command("cmds-missing", "fixture_cmds_nosuch:fn", help="no such module")
            cli.add_command("cmds-badattr", "fixture_cmds.plugin:nosuch", help="no such attribute")
            cli.add_command("cmds-str", "fixture_cmds.plugin:returns_str", help="returns no status")
            cli.add_command("cmds-seven", "fixture_cmds.plugin:returns_seven", help="returns 7")

        def returns_str(args, hub):
            return "nope"

        def returns_seven(args, hub):
            return 7
    """,
}


@pytest.fixture(scope="module")
def cmds_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plugin ``cmds`` (a pip-installed distribution) whose commands cannot run."""
    root, site = tmp_path_factory.mktemp("cmds-src"), tmp_path_factory.mktemp("cmds-site")
    pip_install_target([_write_project(root, "cmds", BROKEN_COMMANDS)], site)
    return site


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (
            "cmds-missing",
            "handler 'fixture_cmds_nosuch:fn' cannot be imported: No module named 'fixture_cmds_nosuch'",
        ),
        (
            "cmds-badattr",
            "handler 'fixture_cmds.plugin:nosuch' cannot be imported: "
            "module 'fixture_cmds.plugin' has no attribute 'nosuch'",
        ),
        (
            "cmds-str",
            "handler 'fixture_cmds.plugin:returns_str' returned 'nope' (str), "
            "not an exit status (an int or None)",
        ),
    ],
    ids=["no-module", "no-attribute", "returns-str"],
)
def test_a_command_that_cannot_run_names_its_plugin_and_handler(
    cmds_site: Path, command: str, why: str
) -> None:
    proc = run_cli(cmds_site, command)
    assert proc.returncode == 1
    assert proc.stderr == f"foundation {command}: error: plugin 'cmds': {why}\n"


@pytest.mark.parametrize(
    ("source", "raised"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        # any BaseException but Ctrl-C: a plugin's own, as pytest's Skipped is
        ("class Refused(BaseException):\n    pass\n\nraise Refused('no')\n", "Refused: no"),
    ],
    ids=["sys.exit", "BaseException"],
)
def test_a_command_whose_module_exits_or_raises_on_import_is_a_broken_command(
    new_module: Callable[[str, str], str], source: str, raised: str
) -> None:
    """The plugin module's sys.exit(3) is no exit status of the command: it is reported as one
    that cannot be imported (exit 1, naming plugin and handler), as a broken entry point is."""
    from foundation_core._cli import Command, _BrokenCommand, _handler

    module = new_module(f"fixture_cmds_{raised.partition(':')[0].lower()}", source)
    command = Command("quits", f"{module}:fn", argparse.ArgumentParser(), "cmds", "")
    with pytest.raises(_BrokenCommand, match=rf"^handler '{module}:fn' cannot be imported: {raised}$"):
        _handler(command)


def test_a_command_whose_module_is_interrupted_on_import_passes_the_interrupt(
    new_module: Callable[[str, str], str],
) -> None:
    from foundation_core._cli import Command, _handler

    new_module("fixture_cmds_interrupted", "raise KeyboardInterrupt\n")
    command = Command("stops", "fixture_cmds_interrupted:fn", argparse.ArgumentParser(), "cmds", "")
    with pytest.raises(KeyboardInterrupt):
        _handler(command)


def test_a_command_returning_an_int_exits_with_it(cmds_site: Path) -> None:
    assert run_cli(cmds_site, "cmds-seven").returncode == 7


def test_a_global_option_after_the_command_says_where_it_goes(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "plugins", "--config", "x.toml")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unrecognized arguments: --config x.toml" in proc.stderr
    assert "--config: global options go before the command" in proc.stderr
    proc = run_cli(tmp_path, "version", "--set=a.b=1")
    assert proc.returncode == 2
    assert "--set: global options go before the command" in proc.stderr
    proc = run_cli(tmp_path, "plugins", "--bogus")  # no global option: no hint
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == "foundation plugins: error: unrecognized arguments: --bogus"


def test_a_strict_plugins_value_that_is_no_boolean_warns_naming_the_variable(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "version", FOUNDATION_STRICT_PLUGINS="garbage")
    assert proc.returncode == 0
    assert proc.stderr == (
        "foundation: warning: FOUNDATION_STRICT_PLUGINS='garbage' is not one of 1, true, yes, on (strict)"
        " or 0, false, no, off or empty (not strict); strict mode stays off\n"
    )
    for value in ["1", "On", " false ", ""]:
        assert run_cli(tmp_path, "version", FOUNDATION_STRICT_PLUGINS=value).stderr == "", value
    with pytest.warns(PluginSelectionWarning, match="FOUNDATION_STRICT_PLUGINS='2'"):
        assert Selection.from_env({"FOUNDATION_STRICT_PLUGINS": "2"}).strict is False
    assert Selection.from_env({"FOUNDATION_STRICT_PLUGINS": "YES"}).strict is True


def test_new_plugin_refuses_a_dir_whose_parent_does_not_exist(tmp_path: Path) -> None:
    """A mistyped --dir is refused, not silently built as a tree of new directories."""
    deep = tmp_path / "missing" / "deep"
    proc = run_cli(tmp_path, "new-plugin", "my-cache", "--dir", str(deep))
    assert proc.returncode == 2
    assert f"directory '{tmp_path / 'missing'}' does not exist" in proc.stderr
    assert not (tmp_path / "missing").exists()
    proc = run_cli(tmp_path, "new-plugin", "my-cache", "--dir", str(tmp_path / "new"))  # one level: made
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "foundation-my-cache" / "pyproject.toml").is_file()


def test_a_misspelled_option_or_command_is_named_with_the_one_meant(tmp_path: Path) -> None:
    """argparse before Python 3.14 suggests nothing; each misspelling gets the close name."""
    proc = run_cli(tmp_path, "plugins", "--jsn")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "foundation plugins: error: unrecognized arguments: --jsn (--jsn: did you mean --json?)"
    )
    proc = run_cli(tmp_path, "plugins", "--jsno=1", "--config", "x.toml")  # both hints, once each
    assert proc.stderr.splitlines()[-1].endswith(
        "(--config: global options go before the command, e.g. foundation --config ... plugins ...)"
        " (--jsno: did you mean --json?)"
    )
    proc = run_cli(tmp_path, "shm", "ls", "--jsn")  # a subcommand's option, reported by its parent
    assert proc.returncode == 2 and "(--jsn: did you mean --json?)" in proc.stderr
    proc = run_cli(tmp_path, "--strict-plugns", "version")
    assert proc.returncode == 2
    assert "(--strict-plugns: did you mean --strict-plugins?)" in proc.stderr
    proc = run_cli(tmp_path, "verison")
    assert proc.returncode == 2
    assert "unknown command 'verison' (did you mean 'version'?) (commands: " in proc.stderr
    proc = run_cli(tmp_path, "plugins", "--zzzzzz")  # nothing close: no hint
    assert proc.stderr.splitlines()[-1] == "foundation plugins: error: unrecognized arguments: --zzzzzz"
