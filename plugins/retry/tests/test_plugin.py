"""The retry plugin registers its pattern lazily and its config section; conformance holds."""

from __future__ import annotations

import tomllib
from pathlib import Path

from foundation_conformance import check_conformance
from foundation_retry import RetryPolicy
from packaging.requirements import Requirement

import foundation_core


def test_registers_pattern_and_section() -> None:
    with foundation_core.start() as hub:
        entry = hub.patterns.entry("retry")
        assert entry.target == "foundation_retry._retry:retry_factory"
        assert hub.config is not None and hub.config["retry"] == RetryPolicy()


def test_builtin_retry_passes_the_conformance_suite() -> None:
    report = check_conformance("retry")
    assert len(report.results) >= 20 and report.passed


def test_declared_tenacity_floor_has_upcoming_sleep() -> None:
    """The driver reads ``RetryCallState.upcoming_sleep`` (deadline stop, retry event), which
    tenacity added in 8.3.0: an older tenacity that the requirement admits fails at the first retry."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    (tenacity,) = [r for r in requirements if r.name == "tenacity"]
    assert not tenacity.specifier.contains("8.2.3")
    assert tenacity.specifier.contains("8.3.0")
