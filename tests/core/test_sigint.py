"""The test run gets Python's KeyboardInterrupt handler even when it was started with SIGINT
ignored, as a background job of a non-interactive shell is (the repository's conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the handler raises here, at once


def inner_a_sigint_raises_keyboard_interrupt() -> None:
    """Collected only by the test below (``-o python_functions=inner_*``), in a pytest of its own."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        _interrupt_self()


def test_a_pytest_started_with_sigint_ignored_still_raises_keyboard_interrupt_in_tests() -> None:
    """Before: every test that interrupts a call (interrupt_main, SIGINT) failed 'DID NOT RAISE
    KeyboardInterrupt' in a pytest started in the background (SIGINT ignored)."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "python_functions=inner_*",
            __file__,
        ],
        cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
