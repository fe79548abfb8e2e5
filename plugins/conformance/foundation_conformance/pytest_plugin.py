"""pytest plugin (entry point ``pytest11``): the ``pattern_conformance`` fixture.

A third party holds its override to the same spec in its own tests::

    def test_my_retry_conforms(pattern_conformance):
        pattern_conformance("retry", plugins=[MyRetryOverride()])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def pattern_conformance() -> Callable[..., Any]:
    """``pattern_conformance(pattern, plugins=..., factory=..., policy_class=...)``: run the spec,
    fail the test with every failed case listed."""
    from ._api import check_conformance

    return check_conformance
