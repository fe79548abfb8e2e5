"""The README's example runs as written (under a test's own server name) and its comments hold."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2, "the README's examples are its use and its counters"
    return blocks


def test_the_readme_example_runs(name: str) -> None:
    code = _blocks()[0].replace('"demo"', repr(name))
    assert repr(name) in code, "the example no longer names its server 'demo'"
    namespace: dict[str, object] = {"__name__": "shm_readme"}
    exec(compile(code, str(README), "exec"), namespace)
    resp = namespace["resp"]
    np.testing.assert_array_equal(resp.outputs["x"], np.full((1, 784), 0.5, np.float32))  # type: ignore[attr-defined]
    assert not namespace["server"]._running  # type: ignore[attr-defined]  # the last line ran


def test_the_readme_counters_example_runs(name: str) -> None:
    """A graceful restart under the name: the call after it is counted, one reconnect and one
    resend (the example's asserts), and everything is stopped and closed at its end."""
    code = _blocks()[1].replace('"demo"', repr(name))
    assert repr(name) in code, "the example no longer names its server 'demo'"
    namespace: dict[str, object] = {"__name__": "shm_readme_counters"}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["client"]._pool.closed  # type: ignore[attr-defined]
    assert not namespace["server"]._running  # type: ignore[attr-defined]  # the last line ran
