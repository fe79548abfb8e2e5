"""Repository-wide pytest setup (every test directory is below this one)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# pytest started with SIGINT ignored (a background job of a non-interactive shell, nohup, some CI
# runners) inherits that: Python then installs no KeyboardInterrupt handler, and every test that
# interrupts a call (_thread.interrupt_main, a SIGINT to itself) sees nothing happen and fails.
# Python's own handler is what a terminal gives it, and what those tests are about.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def new_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """``new_module(name, source)``: a module ``name`` holding ``source``, importable for this test
    only (its directory on ``sys.path``, no earlier import of that name in ``sys.modules``), not
    imported yet; returns ``name``. For tests of what importing a plugin's, a policy's or a
    factory's module does (``sys.exit()``, a raise, a Ctrl-C)."""

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write
