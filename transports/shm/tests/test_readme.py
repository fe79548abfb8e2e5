"""The README's example runs as written (under a test's own server name) and its comments hold."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(name: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "the README's example is one block"
    code = blocks[0].replace('"demo"', repr(name))
    assert repr(name) in code, "the example no longer names its server 'demo'"
    namespace: dict[str, object] = {"__name__": "shm_readme"}
    exec(compile(code, str(README), "exec"), namespace)
    resp = namespace["resp"]
    np.testing.assert_array_equal(resp.outputs["x"], np.full((1, 784), 0.5, np.float32))  # type: ignore[attr-defined]
    assert not namespace["server"]._running  # type: ignore[attr-defined]  # the last line ran
