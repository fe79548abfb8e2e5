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


def test_transport_guide_example_runs() -> None:
    """docs/transports.md: the queue transport registers, serves, batches and stops."""
    doc = DOC.with_name("transports.md")
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "the guide's example is one block"
    namespace: dict[str, object] = {"__name__": "docs_transports"}
    exec(compile(blocks[0], str(doc), "exec"), namespace)
    assert namespace["SERVERS"] == {}
