"""foundation-config: layered, typed, frozen configuration for Foundation.

Sources, later wins: section defaults < files (``settings.toml``, ``.secrets.toml``, ``--config``)
< environment (``FOUNDATION_SECTION__KEY``) < ``--set section.key=value``. ``load_config`` imports
dynaconf and cattrs on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._masking import MASK, is_secret
from ._settings import DEFAULT_SECRET_KEYS, ConfigSettings

if TYPE_CHECKING:
    from ._loader import ConfigWarning, load_config
    from ._show import effective_values

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "MASK",
    "ConfigSettings",
    "ConfigWarning",
    "effective_values",
    "is_secret",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name in {"load_config", "ConfigWarning"}:
        from . import _loader

        return getattr(_loader, name)
    if name == "effective_values":
        from . import _show

        return _show.effective_values
    raise AttributeError(f"module 'foundation_config' has no attribute {name!r}")
