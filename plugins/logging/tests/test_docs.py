"""The examples in docs/logging.md run as written and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
