"""Plugin requirements: a plugin's ``FOUNDATION_REQUIRES`` names the plugins it needs active
(case, ``-``, ``_`` and ``.`` do not matter, as in the selection variables).

A plugin whose requirement is not met (the other plugin is not installed, failed, or is not
selected) fails with a message saying which plugin it needs and why that one is not active; a
plugin needing one that fails for its own needs fails too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ._discovery import normalize
from ._isolation import fail
from .errors import PluginLoadError

if TYPE_CHECKING:
    from ._discovery import PluginInfo, Selection
    from ._hub import Hub

__all__ = ["check_requirements", "unmet"]


def check_requirements(hub: Hub) -> None:
    """Fail every active plugin whose ``FOUNDATION_REQUIRES`` names a plugin that is not
    active, until none is left: a plugin needing one that fails for its own needs fails too."""
    changed = True
    while changed:
        changed = False
        for info in list(hub.plugins.values()):
            if info.status not in {"loaded", "app"} or info.plugin is None:
                continue  # failed or not selected: nothing to check
            problem = unmet(info, hub.plugins, hub.selection)
            if problem:
                err = PluginLoadError(info.name, problem)
                fail(hub, info, None, err, err)
                changed = True


def unmet(info: PluginInfo, plugins: Mapping[str, PluginInfo], selection: Selection) -> str | None:
    """Why ``info``'s plugin cannot run with ``plugins`` as they stand, or None if it can."""
    needs = getattr(info.plugin, "FOUNDATION_REQUIRES", ())
    if isinstance(needs, str) or not all(isinstance(n, str) for n in _iter_or_none(needs)):
        return (
            f"FOUNDATION_REQUIRES must be a list of plugin names, not {needs!r} (for one plugin: [{needs!r}])"
            if isinstance(needs, str)
            else f"FOUNDATION_REQUIRES must be a list of plugin names, not {needs!r}"
        )
    by_key = {normalize(n): i for n, i in plugins.items()}
    for need in needs:  # named as the selection variables name plugins: "circuit-breaker" too
        other = plugins.get(need) or by_key.get(normalize(need))
        if other is not None and other.status in {"loaded", "app"}:
            continue
        if other is None:
            why, remedy = "is not installed", "install"
        elif other.status == "failed":
            why, remedy = f"failed ({other.error})", "fix"
        else:
            why, remedy = f"is {selection.reason(need)}", "enable"
        return (
            f"it needs plugin {need!r}, which {why}; {remedy} {need!r} or disable "
            f"{info.name!r} with FOUNDATION_DISABLE_PLUGINS={info.name}"
        )
    return None


def _iter_or_none(value: object) -> Iterable[object]:
    try:
        return list(value)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        return [None]  # not iterable: reported as not a list of names
