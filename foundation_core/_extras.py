"""Which of foundation's extras installs a plugin: the hint on "no transport named 'shm'"."""

from __future__ import annotations

import re
from importlib import metadata

__all__ = ["install_hint"]

_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_DIST = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def install_hint(name: str) -> str:
    """``'; pip install "foundation[torch]" provides it'`` when ``name`` (a plugin's name: its
    pattern, transport or backend) is the plugin of a distribution named by one of foundation's
    extras and that distribution is not installed; ``""`` otherwise. Read from the installed
    ``foundation``'s metadata, so it names what this version's extras hold."""
    want = "foundation-" + name.replace("_", "-").lower()
    try:
        requires = metadata.requires("foundation") or []
    except metadata.PackageNotFoundError:
        return ""
    for line in requires:
        spec, _, marker = line.partition(";")
        dist, extra = _DIST.match(spec), _EXTRA.search(marker)
        if dist is None or extra is None or dist.group(1).lower().replace("_", "-") != want:
            continue
        try:
            metadata.distribution(dist.group(1))
        except metadata.PackageNotFoundError:
            return f'; pip install "foundation[{extra.group(1)}]" provides it ({dist.group(1)})'
        return ""  # installed, yet not loaded: the plugins list says why
    return ""
