"""The examples in docs/configuration.md, the ``foundation config`` part of docs/cli.md and the
plugin's README run as written: named files are written, ``$ foundation ...`` commands give the
lines shown, Python runs."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from foundation_core._cli import main

DOCS = Path(__file__).resolve().parents[3] / "docs"
BLOCK = re.compile(r"```(toml|yaml|json|console|python)\n(.*?)```", re.S)
FILE_NAME = re.compile(r"^# ([\w.\-]+\.(?:toml|yaml|yml|json))\n")
EXIT = re.compile(r"^\[exit status (\d+)\]$")


def _squash(line: str) -> str:
    return " ".join(line.split())


def _commands(text: str) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif line.strip():
            commands[-1][1].append(line)
    return commands


def _run(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words.pop(0) == "foundation", command
    with monkeypatch.context() as m:
        for name, value in env.items():
            m.setenv(name, value)
        status = main(words)
    out, err = capsys.readouterr()
    return status, out + err


def _check_command(command, expected, monkeypatch, capsys):
    status, output = _run(command, monkeypatch, capsys)
    actual = {_squash(line) for line in output.splitlines()}
    want_status = 0
    for line in expected:
        match = EXIT.match(line.strip())
        if match:
            want_status = int(match.group(1))
        elif _squash(line) not in actual:
            pytest.fail(f"`$ {command}` did not print:\n{line}\n--- it printed:\n{output}")
    assert status == want_status, f"`$ {command}` exited {status}\n{output}"


def _run_document(text, name, monkeypatch, capsys):
    namespace: dict[str, object] = {}
    ran = 0
    for kind, body in BLOCK.findall(text):
        file_name = FILE_NAME.match(body)
        if kind in {"toml", "yaml", "json"} and file_name:
            Path(file_name.group(1)).write_text(body)
        elif kind == "console":
            for command, expected in _commands(body):
                _check_command(command, expected, monkeypatch, capsys)
                ran += 1
        elif kind == "python":
            exec(compile(body, f"{name}[python]", "exec"), namespace)
            ran += 1
    return ran


@pytest.fixture(autouse=True)
def _our_plugins_only(monkeypatch):
    for var in list(os.environ):
        if var.startswith("FOUNDATION_") or var in {"LOG_DIR", "POOL"}:
            monkeypatch.delenv(var)
    monkeypatch.setenv("FOUNDATION_PLUGINS", "config,logging,shm")  # shm: its section's example


def test_configuration_guide_examples(monkeypatch, capsys):
    """(The conftest runs each test in its own temporary directory, where the files are written.)"""
    ran = _run_document((DOCS / "configuration.md").read_text(), "configuration.md", monkeypatch, capsys)
    assert ran >= 5


def test_cli_reference_config_section(monkeypatch, capsys):
    parts = (DOCS / "cli.md").read_text().split("\n## ")
    ours = "\n".join(p for p in parts if p.startswith("foundation config "))
    assert _run_document(ours, "cli.md", monkeypatch, capsys) == 2


def test_a_wrong_expected_line_or_status_fails_the_check(monkeypatch, capsys):
    wrong_line = '```console\n$ foundation config show\nlogging.level = "nonsense"\n```\n'
    wrong_status = "```console\n$ foundation config show\n[exit status 2]\n```\n"
    with pytest.raises(pytest.fail.Exception):
        _run_document(wrong_line, "fake.md", monkeypatch, capsys)
    with pytest.raises(AssertionError):
        _run_document(wrong_status, "fake.md", monkeypatch, capsys)


def test_readme_example(monkeypatch, capsys):
    """plugins/config/README.md's `$ foundation config show` prints the lines it shows ("..." is
    the rest of the listing)."""
    readme = DOCS.parent / "plugins" / "config" / "README.md"
    (block,) = [b for b in re.findall(r"```\n(.*?)```", readme.read_text(), re.S) if b.startswith("$ ")]
    ((command, expected),) = _commands(block)
    assert expected[-1] == "..."
    _check_command(command, expected[:-1], monkeypatch, capsys)
