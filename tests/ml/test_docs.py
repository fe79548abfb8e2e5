"""The Python examples in docs/serving.md run, in order, and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def test_serving_guide_examples_run() -> None:
    pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 10, "the guide lost its examples"
    namespace: dict[str, object] = {"__name__": "docs_serving"}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        runtime = namespace.get("runtime")
        if runtime is not None:
            runtime.close()  # type: ignore[attr-defined]
    assert namespace["runtime"]._closed  # type: ignore[attr-defined]  # the last example ran
