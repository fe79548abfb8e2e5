"""The retry plugin registers its pattern lazily and its config section; conformance holds."""

from __future__ import annotations

from foundation_conformance import check_conformance
from foundation_retry import RetryPolicy

import foundation_core


def test_registers_pattern_and_section() -> None:
    with foundation_core.start() as hub:
        entry = hub.patterns.entry("retry")
        assert entry.target == "foundation_retry._retry:retry_factory"
        assert hub.config is not None and hub.config["retry"] == RetryPolicy()


def test_builtin_retry_passes_the_conformance_suite() -> None:
    report = check_conformance("retry")
    assert len(report.results) >= 20 and report.passed
