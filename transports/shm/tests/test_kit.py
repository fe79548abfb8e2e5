"""shm passes the transport test kit (``foundation_ml.testing``), leaving nothing in /dev/shm."""

from __future__ import annotations

import itertools

from foundation_ml._process import shm_entries
from foundation_ml.testing import CHECKS, check_transport

from .conftest import PREFIX

_kit = itertools.count()


def test_shm_passes_the_transport_kit() -> None:
    fresh = lambda: f"{PREFIX}k{next(_kit)}"  # noqa: E731 - the conftest's prefix: checked clean
    assert check_transport("shm", address=fresh, leftovers=lambda: shm_entries(f"{PREFIX}k")) == list(CHECKS)
