"""Which implementation runs the hot path: the C extension ``_hot`` when it was built, else Python.

``FDN_SHM_PURE=1`` in the environment forces the pure-Python path (the test suite runs both; a
build without a C compiler gets it anyway). Both write and accept the same bytes.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["hot", "implementation"]


def _load() -> ModuleType | None:
    if os.environ.get("FDN_SHM_PURE", "").lower() in ("1", "true", "yes"):
        return None
    try:
        return importlib.import_module("._hot", __package__)
    except ImportError:
        return None


hot = _load()


def implementation() -> str:
    """``"c"`` or ``"python"``: which hot path this process runs."""
    return "c" if hot is not None else "python"
