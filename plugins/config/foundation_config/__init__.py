"""foundation-config: layered, typed, frozen configuration for Foundation.

Sources, later wins: section defaults < files (``settings.toml``, ``.secrets.toml``, ``--config``)
< environment (``FOUNDATION_SECTION__KEY``) < ``--set section.key=value``. ``load_config`` imports
dynaconf and cattrs on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._loader import ConfigWarning, load_config
    from ._masking import MASK, is_secret
    from ._settings import DEFAULT_SECRET_KEYS, ConfigSettings
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MASK": "._masking",
        "is_secret": "._masking",
        "DEFAULT_SECRET_KEYS": "._settings",
        "ConfigSettings": "._settings",
        "ConfigWarning": "._loader",
        "load_config": "._loader",
        "effective_values": "._show",
    },
)
