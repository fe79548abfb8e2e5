"""Package ``__init__`` modules that import their parts on first use (PEP 562).

A plugin's entry point names ``foundation_x.plugin``, and Python imports ``foundation_x`` (its
``__init__``) first. Every module that ``__init__`` imports is paid for by ``foundation plugins``
and every other command, whether or not it is used. ``lazy_exports`` keeps the package's public
names without importing them until one is read::

    __getattr__, __dir__ = lazy_exports(__name__, {"RetryPolicy": "._policy", "retry_factory": "._retry"})

    if TYPE_CHECKING:  # what type checkers and IDEs see
        from ._policy import RetryPolicy
        from ._retry import retry_factory
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name in ``exports`` is imported from its
    module (``"._policy"``, relative to ``package``) when first read, then kept in the package."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
