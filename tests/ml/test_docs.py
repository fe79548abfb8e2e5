"""The Python examples in docs/serving.md and docs/transports.md run, in order, and their assertions
hold; serving.md's table of errors is the errors module's."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest

from foundation_ml import errors

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
    """docs/transports.md: the queue transport registers, serves, batches and stops, then passes
    the transport test kit."""
    doc = DOC.with_name("transports.md")
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2, "the guide's examples are the transport and its kit run"
    namespace: dict[str, object] = {"__name__": "docs_transports"}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)
    assert namespace["SERVERS"] == {}
    assert namespace["check_transport"] is not None  # the kit's block ran


def test_serving_guides_error_table_is_the_errors_module() -> None:
    """docs/serving.md's "Errors a client sees": every InferenceError subclass, with its wire code
    and the builtin exception it also is."""
    section = DOC.read_text().split("## Errors a client sees")[1].split("\n## ")[0]
    listed: dict[str, int] = {}
    for cell, codes in re.findall(r"^\| (`.*?) \| ([\d, -]+) \|", section, flags=re.M):
        numbers = [n for part in codes.split(",") for n in _expand(part.strip())]
        names = re.findall(r"`(\w+)`", cell.split("(also")[0])
        assert len(names) == len(numbers), cell
        listed.update(zip(names, numbers, strict=True))
        for also in re.findall(r"also an? `(\w+)`", cell):
            assert issubclass(getattr(errors, names[0]), getattr(builtins, also)), cell
    subclasses = {
        name: cls.code
        for name, cls in vars(errors).items()
        if isinstance(cls, type)
        and issubclass(cls, errors.InferenceError)
        and cls is not errors.InferenceError
    }
    assert listed == subclasses


def _expand(part: str) -> list[int]:
    low, _, high = part.partition("-")
    return list(range(int(low), int(high or low) + 1))
