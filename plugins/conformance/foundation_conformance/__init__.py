"""Conformance suite for Foundation's resilience patterns: specs in, pass/fail per case out.

``run_conformance("retry")`` runs ``docs/patterns/retry.yaml`` against whatever is registered as
``retry``; ``check_conformance`` does the same and raises ``AssertionError`` listing failures, for
a third party's own tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._api import check_conformance
    from ._runner import CaseResult, Report, run_conformance
    from ._spec import Case, Spec, default_specs_dir, load_spec, load_specs

__all__ = [
    "Case",
    "CaseResult",
    "Report",
    "Spec",
    "check_conformance",
    "default_specs_dir",
    "load_spec",
    "load_specs",
    "run_conformance",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "check_conformance": "._api",
        "CaseResult": "._runner",
        "Report": "._runner",
        "run_conformance": "._runner",
        "Case": "._spec",
        "Spec": "._spec",
        "default_specs_dir": "._spec",
        "load_spec": "._spec",
        "load_specs": "._spec",
    },
)
