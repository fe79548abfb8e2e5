"""Finding plugins: entry points of group ``foundation``, filtered by the environment.

``FOUNDATION_PLUGINS=a,b`` loads only those entry-point plugins (set but empty: none);
``FOUNDATION_DISABLE_PLUGINS=a,b`` blocks those; ``FOUNDATION_STRICT_PLUGINS=1`` makes any
plugin failure fatal (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case, or
empty; another value warns, naming the variable, and leaves strict mode off). Nothing here
imports a plugin's heavy dependencies: loading an entry point imports only the plugin's module,
which must defer heavy imports until used. Each distribution's metadata is read once: its name,
version and the requirements it declares on the core distribution (checked before its plugins
are imported, see ``_requirements.unmet_core``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from importlib.metadata import Distribution, EntryPoint, entry_points
from typing import Any, Literal

import attrs

from ._markers import CORE_DISTRIBUTION, ENTRY_POINT_GROUP

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
    core_requirements: tuple[str, ...] = attrs.field(default=(), repr=False)
    """The ``Requires-Dist`` lines of its distribution naming the core distribution, as declared
    (markers and extras not yet evaluated); empty for a plugin registered in code."""
    hooks: list[str] = attrs.field(factory=list)
    registered: dict[str, list[str]] = attrs.field(factory=dict)
    shadowed: dict[str, dict[str, str]] = attrs.field(factory=dict)
    """Per kind, each name it registered that another plugin's registration hides: its winner."""
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
            "shadowed": {k: dict(sorted(self.shadowed.get(k, {}).items())) for k in REGISTERED_KINDS},
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
    read: dict[int, tuple[Distribution, _DistFacts]] = {}  # by id: a distribution's entry points share it
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if any(ep.name == e.name and ep.value == e.value and _same_dist(dist, e) for e, _ in found):
            continue
        facts = None
        if dist is not None:
            if id(dist) not in read:
                read[id(dist)] = (dist, _DistFacts.read(dist))
            facts = read[id(dist)][1]
        info = PluginInfo(
            name=ep.name,
            source="entry-point",
            status=selection.why_not(ep.name) or "loaded",
            distribution=facts.name if facts is not None else None,
            version=facts.version if facts is not None else None,
            value=ep.value,
            core_requirements=facts.core_requirements if facts is not None else (),
        )
        found.append((ep, info))
    return sorted(found, key=lambda pair: pair[1].name)


_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def dist_key(name: str) -> str:
    """A distribution name normalised as PEP 503 does: ``Foundation`` and ``foundation`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.frozen
class _DistFacts:
    """What discovery needs of one distribution, from one reading of its metadata."""

    name: str | None
    version: str | None
    core_requirements: tuple[str, ...]

    @classmethod
    def read(cls, dist: Distribution) -> _DistFacts:
        meta = dist.metadata  # parses METADATA: dist.name and dist.version would each parse it again
        reqs = meta.get_all("Requires-Dist")
        if reqs is None and dist.read_text("requires.txt") is not None:  # an .egg-info: requires.txt
            reqs = dist.requires
        name = meta["Name"]
        if name is not None and dist_key(name) == CORE_DISTRIBUTION:
            reqs = None  # the core's own plugins (ml) are of its version; its extra 'all' names itself
        return cls(
            name=name,
            version=meta["Version"],
            core_requirements=tuple(r for r in reqs or () if _names_core(r)),
        )


def _names_core(requirement: str) -> bool:
    """Whether a ``Requires-Dist`` value names the core distribution (``foundation``, not
    ``foundation-shm``); what it says of it is read only when a plugin of it is loaded."""
    match = _REQUIREMENT_NAME.match(requirement)
    return match is not None and dist_key(match.group(1)) == CORE_DISTRIBUTION


def _same_dist(dist: Any, ep: EntryPoint) -> bool:
    other = getattr(ep, "dist", None)
    if dist is None or other is None:
        return dist is other
    return bool(normalize(dist.name) == normalize(other.name))
