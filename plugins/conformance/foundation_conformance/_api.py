"""``check_conformance``: the conformance suite as one assertion, for a third party's tests."""

from __future__ import annotations

from typing import Any

from ._runner import Report, run_conformance

__all__ = ["check_conformance"]


def check_conformance(pattern: str, **kwargs: Any) -> Report:
    """Run ``pattern``'s spec (keyword arguments as :func:`run_conformance`); raise
    ``AssertionError`` naming every failed case, else return the report."""
    report = run_conformance(pattern, **kwargs)
    skipped = [r for r in report.results if r.skipped]
    if skipped:
        raise AssertionError(f"conformance of {pattern!r} did not run: {skipped[0].skipped}")
    if not report.passed:
        lines = [f"{r.pattern}/{r.case} [{r.mode}]: {p}" for r in report.failures for p in r.problems]
        raise AssertionError(
            f"{len(report.failures)} conformance case(s) of {pattern!r} failed:\n" + "\n".join(lines)
        )
    return report
