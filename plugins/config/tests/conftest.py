"""Sections declared by a stand-in plugin, and a helper that loads config in a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from foundation_config import load_config

from foundation_core import Config


@attrs.frozen
class RetrySection:
    max_attempts: int = attrs.field(default=3, validator=[attrs.validators.ge(1), attrs.validators.le(100)])
    base_delay: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    name: str = "retry"
    jitter: bool = False
    codes: tuple[int, ...] = (500, 503)
    labels: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class DbSection:
    url: str = "sqlite://"
    password: str = ""
    pool: int = 5


SECTIONS: dict[str, type[Any]] = {"retry": RetrySection, "db": DbSection}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FOUNDATION_* variable from the outside leaks in; each test runs in its own directory."""
    for var in list(os.environ):
        if var.startswith("FOUNDATION_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sections() -> dict[str, type[Any]]:
    """The stand-in sections: ``retry`` (RetrySection) and ``db`` (DbSection)."""
    return SECTIONS


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Config]:
    def run(
        files: tuple[str, ...] = (), overrides: tuple[str, ...] = (), *, strict: bool = False, **kw: Any
    ) -> Config:
        return load_config(SECTIONS, files, overrides, strict=strict, cwd=tmp_path, **kw)

    return run


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def run(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return run
