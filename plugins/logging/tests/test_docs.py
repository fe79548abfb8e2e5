"""The examples in docs/logging.md and the plugin's README run as written and their assertions hold;
the keys they list are the `[logging]` section's."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import attrs
import pytest
from foundation_logging import LoggingSettings, configure_logging

DOC = Path(__file__).resolve().parents[3] / "docs" / "logging.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def test_the_guide_has_examples():
    assert len(BLOCK.findall(DOC.read_text())) >= 4


def test_python_examples_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for number, code in enumerate(BLOCK.findall(DOC.read_text()), 1):
        try:
            exec(compile(code, f"{DOC.name}[python block {number}]", "exec"), namespace)
        except Exception as exc:  # name the failing block
            pytest.fail(f"docs/logging.md python block {number} failed: {exc!r}\n{code}")
    assert (tmp_path / "app.log").is_file()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", capsys.readouterr().out.strip())


README = DOC.parents[1] / "plugins" / "logging" / "README.md"


def _key_table(text: str) -> dict[str, str]:
    """docs/logging.md's table of the `[logging]` keys: key -> its default as written."""
    section = text.split("## Configuration: the `[logging]` section")[1].split("\n## ")[0]
    return {m[1]: m[2] for m in re.finditer(r"^\| `(\w+)` \| `(.*?)` \|", section, re.M)}


def test_the_guides_key_table_is_the_settings_class():
    """Every field of LoggingSettings, in order, with its default; no key the class lacks."""
    table = _key_table(DOC.read_text())
    fields = attrs.fields(LoggingSettings)
    assert list(table) == [f.name for f in fields]
    for field in fields:
        assert json.loads(table[field.name]) == json.loads(json.dumps(field.default)), field.name


def test_the_readme_names_every_key_and_its_section_example_is_valid():
    text = README.read_text()
    named = re.search(r"through the `\[logging\]` section \((.*?)\)", text, re.S)
    assert named is not None
    assert re.findall(r"`(\w+)`", named[1]) == [f.name for f in attrs.fields(LoggingSettings)]
    (toml,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    LoggingSettings(**tomllib.loads(toml)["logging"])  # a valid section as written


def test_the_readme_example_logs_its_context(tmp_path, read_lines):
    (code,) = BLOCK.findall(README.read_text())
    log_file = tmp_path / "readme.log"
    configure_logging(LoggingSettings(format="json", output=str(log_file)))
    exec(compile(code, f"{README}[python]", "exec"), {"__name__": "readme_example"})
    line = read_lines(log_file)[-1]
    assert (line["event"], line["request_id"], line["model_id"]) == ("request served", "req-1", "resnet50")
    assert line["latency_ms"] == 1.7
