"""The `foundation` CLI: built-in commands, usage errors, and cheap discovery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from foundation_core import __version__
from foundation_core._cli import CommandRegistrar

from .conftest import run_cli

HEAVY = ["torch", "numpy", "dynaconf", "structlog", "posix_ipc", "tenacity", "yaml", "safetensors"]


def test_plugins_listing_imports_no_heavy_module() -> None:
    """With every plugin of this repository installed, listing them imports none of the heavy deps."""
    code = (
        "import contextlib, io, json, sys\n"
        "from foundation_core._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['plugins', '--json'])\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "count = len(json.loads(out.getvalue())['plugins'])\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy, 'plugins': count}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rc"] == 0
    assert result["heavy"] == []
    assert result["plugins"] >= 2  # the core builtin and foundation_ml at least


def test_version_prints_the_core_version(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "version")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == f"foundation {__version__}"


def test_unknown_command_is_a_usage_error_listing_commands(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "frobnicate")
    assert proc.returncode == 2
    assert "unknown command 'frobnicate'" in proc.stderr
    assert "plugins" in proc.stderr


def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    proc = run_cli(tmp_path)
    assert proc.returncode == 2
    assert "new-plugin" in proc.stdout


def test_plugins_json_is_one_object_with_the_core_builtin(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "plugins", "--json", FOUNDATION_PLUGINS="")
    doc = json.loads(proc.stdout)
    core = next(p for p in doc["plugins"] if p["name"] == "foundation")
    assert core["source"] == "builtin"
    assert core["registered"]["commands"] == ["new-plugin", "plugins", "version"]
    assert doc["selection"]["only"] == []


def test_config_flags_are_checked_for_every_command(tmp_path: Path) -> None:
    # `version` reads no configuration; a missing file or a malformed override still stops it
    proc = run_cli(tmp_path, "--config", str(tmp_path / "missing.toml"), "version")
    assert proc.returncode == 2, proc.stderr
    assert "missing.toml: file not found" in proc.stderr and proc.stdout == ""
    proc = run_cli(tmp_path, "--set", "nodots", "plugins")
    assert proc.returncode == 2
    assert "nodots: expected KEY=VALUE" in proc.stderr
    proc = run_cli(tmp_path, "--set", "a.b=1", "version", FOUNDATION_PLUGINS="")  # no config plugin
    assert proc.returncode == 2
    assert "need the config plugin" in proc.stderr


def test_plugins_json_gives_every_plugin_the_five_registered_lists(plugin_site: Path) -> None:
    """A disabled or failed plugin registered nothing: five empty lists, not an empty object."""
    proc = run_cli(plugin_site, "plugins", "--json", FOUNDATION_DISABLE_PLUGINS="good")
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["good"]["status"] == "disabled" and plugins["broken"]["status"] == "failed"
    kinds = ["commands", "config_sections", "model_backends", "patterns", "transports"]
    for plugin in plugins.values():
        assert list(plugin["registered"]) == kinds, plugin["name"]
    assert plugins["good"]["registered"] == plugins["broken"]["registered"] == {k: [] for k in kinds}


def test_dash_dash_version_prints_the_first_line_of_version(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"foundation {__version__}\n"
    assert run_cli(tmp_path, "version").stdout.splitlines()[0] == proc.stdout.strip()


def test_a_commands_own_subcommands_open_their_help_with_their_line_and_a_missing_one_lists_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`foundation shm ls --help` said nothing of what ls does (argparse takes no description from
    help=), and `foundation shm` alone said 'required: action' without naming ls or clean."""
    parser = CommandRegistrar().add_command("cache", lambda args, hub: 0, help="manage the cache")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("ls", help="list cached entries")
    sub.add_parser("drop", help="drop entries", description="drop every cached entry")
    for action, line in (("ls", "list cached entries"), ("drop", "drop every cached entry")):
        with pytest.raises(SystemExit):
            parser.parse_args([action, "--help"])
        assert capsys.readouterr().out.splitlines()[2] == line
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: the following arguments are required: action (choose from 'ls', 'drop')" in err
