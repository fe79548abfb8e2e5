"""Finding plugins: entry points of group ``foundation``, filtered by the environment.

``FOUNDATION_PLUGINS=a,b`` loads only those entry-point plugins (set but empty: none);
``FOUNDATION_DISABLE_PLUGINS=a,b`` blocks those; ``FOUNDATION_STRICT_PLUGINS=1`` makes any
plugin failure fatal (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case, or
empty; another value warns, naming the variable, and leaves strict mode off). Nothing here
imports a plugin's heavy dependencies: loading an entry point imports only the plugin's module,
which must defer heavy imports until used.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import attrs

from ._markers import ENTRY_POINT_GROUP

__all__ = ["PluginInfo", "PluginSelectionWarning", "Selection", "discover"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class PluginSelectionWarning(UserWarning):
    """A variable selecting plugins has a value Foundation does not understand; it is ignored."""


Status = Literal["loaded", "failed", "disabled", "not-selected", "app"]

REGISTERED_KINDS = ("commands", "config_sections", "model_backends", "patterns", "transports")
"""The keys of ``registered`` in ``foundation plugins --json``: every plugin has all of them."""


@attrs.define
class PluginInfo:
    """What ``foundation plugins`` shows about one plugin."""

    name: str
    source: Literal["entry-point", "app", "builtin"]
    status: Status
    distribution: str | None = None
    version: str | None = None
    value: str | None = None
    error: str | None = None
    error_hook: str | None = None
    hooks: list[str] = attrs.field(factory=list)
    registered: dict[str, list[str]] = attrs.field(factory=dict)
    plugin: Any = attrs.field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "status": self.status,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.value,
            "hooks": sorted(self.hooks),
            "registered": {
                k: sorted(v)
                for k, v in sorted({**dict.fromkeys(REGISTERED_KINDS, ()), **self.registered}.items())
            },
            "error": self.error,
            "error_hook": self.error_hook,
        }


def normalize(name: str) -> str:
    """A plugin name as the selection variables match it: case, ``-``, ``_`` and ``.`` do not
    matter (``circuit-breaker`` selects ``circuit_breaker``, as pip's names do)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _names(raw: str | None) -> frozenset[str] | None:
    if raw is None:
        return None
    return frozenset(normalize(n.strip()) for n in raw.split(",") if n.strip())


@attrs.frozen
class Selection:
    """Which entry-point plugins the environment allows, and whether failures are fatal."""

    only: frozenset[str] | None
    disabled: frozenset[str]
    strict: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, strict: bool | None = None) -> Selection:
        env = os.environ if env is None else env
        if strict is None:
            strict = _strict_from(env.get("FOUNDATION_STRICT_PLUGINS", ""))
        return cls(
            only=_names(env.get("FOUNDATION_PLUGINS")),
            disabled=_names(env.get("FOUNDATION_DISABLE_PLUGINS")) or frozenset(),
            strict=strict,
        )

    def why_not(self, name: str) -> Status | None:
        key = normalize(name)
        if key in self.disabled:
            return "disabled"
        if self.only is not None and key not in self.only:
            return "not-selected"
        return None

    def reason(self, name: str) -> str:
        key = normalize(name)
        if key in self.disabled:
            return "disabled by FOUNDATION_DISABLE_PLUGINS"
        if self.only is not None and key not in self.only:
            return "not listed in FOUNDATION_PLUGINS"
        return "enabled"


def _strict_from(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        warnings.warn(
            f"FOUNDATION_STRICT_PLUGINS={raw!r} is not one of {', '.join(_TRUE)} (strict) or "
            f"{', '.join(_FALSE[1:])} or empty (not strict); strict mode stays off",
            PluginSelectionWarning,
            stacklevel=4,
        )
    return value in _TRUE


def discover(selection: Selection) -> list[tuple[EntryPoint, PluginInfo]]:
    """Every ``foundation`` entry point with its selection status, sorted by name. Two
    distributions giving one name are both listed, in ``sys.path`` order: the loader reports
    the second (one distribution visible twice on ``sys.path`` is listed once, as importlib does)."""
    found: list[tuple[EntryPoint, PluginInfo]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if any(ep.name == e.name and ep.value == e.value and _same_dist(dist, e) for e, _ in found):
            continue
        info = PluginInfo(
            name=ep.name,
            source="entry-point",
            status=selection.why_not(ep.name) or "loaded",
            distribution=dist.name if dist is not None else None,
            version=dist.version if dist is not None else None,
            value=ep.value,
        )
        found.append((ep, info))
    return sorted(found, key=lambda pair: pair[1].name)


def _same_dist(dist: Any, ep: EntryPoint) -> bool:
    other = getattr(ep, "dist", None)
    if dist is None or other is None:
        return dist is other
    return bool(normalize(dist.name) == normalize(other.name))
