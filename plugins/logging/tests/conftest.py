"""Fixtures: every test leaves structlog, the root logger and the bound context as it found them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from foundation_logging import _setup, clear_context


@pytest.fixture(autouse=True)
def _restore_logging_state() -> Iterator[None]:
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    yield
    while (runtime := _setup.current_runtime()) is not None:  # closing one brings the next back
        runtime.close()
    structlog.configure(**saved_config)
    root.handlers[:] = saved_root[1]
    root.setLevel(saved_root[0])
    clear_context()


@pytest.fixture
def read_lines() -> Callable[[Path], list[dict[str, Any]]]:
    """Parse a JSON-lines log file."""

    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    return read
