"""The ``config`` section: the plugin's own settings (which keys ``config show`` masks)."""

from __future__ import annotations

import attrs

from foundation_core import SENSITIVE_KEYS

__all__ = ["DEFAULT_SECRET_KEYS", "ConfigSettings"]

DEFAULT_SECRET_KEYS = SENSITIVE_KEYS  # defined once, in foundation_core


@attrs.frozen
class ConfigSettings:
    """``secret_keys``: values whose key equals one of these or ends with ``_`` + one of these
    are masked by ``foundation config show`` (values from ``.secrets.*`` files always are)."""

    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
