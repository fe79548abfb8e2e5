"""The Python examples in docs/plugins.md run, in order, and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_plugins_guide_examples_run() -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5, "the guide lost its examples"
    namespace: dict[str, object] = {"__name__": "docs_plugins"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["calls"] == ["greet"]  # the wrap example really ran through the wrapper
