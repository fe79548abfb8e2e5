"""Plugin requirements: the core version its distribution declares, and the plugins it needs.

An entry-point plugin whose distribution's ``Requires-Dist`` on ``foundation`` (one that
applies: not under an extra, its marker true here) does not admit the running core's version
fails before it is imported, naming its distribution, the requirement and the core's version
(pip checks this at install time only: ``pip install -U foundation``, ``--no-deps`` or editable
checkouts of different ages leave such a set installed). ``packaging`` decides, imported only
when a plugin to load declares such a requirement that is not plainly met: a bare range of
releases (``foundation~=0.1.0``, ``foundation>=0.1,<0.3``) admitting a core that is a release
is met without it, where PEP 440 is a comparison of numbers (importing it costs start-up some
20 ms, and every plugin of this repository declares one).

A plugin's ``FOUNDATION_REQUIRES`` names the plugins it needs active (case, ``-``, ``_`` and
``.`` do not matter, as in the selection variables). A plugin whose requirement is not met (the
other plugin is not installed, failed, or is not selected) fails with a message saying which
plugin it needs and why that one is not active; a plugin needing one that fails for its own
needs fails too.
"""

from __future__ import annotations

import difflib
import itertools
import operator
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ._discovery import dist_key, normalize
from ._isolation import fail
from ._markers import CORE_DISTRIBUTION
from ._version import __version__
from .errors import PluginLoadError

if TYPE_CHECKING:
    from ._discovery import PluginInfo, Selection
    from ._hub import Hub

__all__ = ["check_requirements", "unmet", "unmet_core"]


def unmet_core(info: PluginInfo, core_version: str = __version__) -> str | None:
    """Why ``info``'s distribution cannot run with core ``core_version`` (what it declares on
    ``foundation`` does not admit it, or cannot be read), or None if it can or declares nothing.

    A pre-release or development core counts as what it is, as ``pip check`` counts it: ``0.2.0.dev1``
    meets ``>=0.1`` but not ``~=0.1.0``."""
    if not info.core_requirements:
        return None  # registered in code, or declaring no core: nothing to check, nothing imported
    if all(plainly_met(line, core_version) for line in info.core_requirements):
        return None
    from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    dist = f"{info.distribution} {info.version}"
    applying: list[Requirement] = []
    for line in info.core_requirements:
        try:
            req = Requirement(line)
            if dist_key(req.name) != CORE_DISTRIBUTION:
                continue  # not a requirement on the core after all
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # only under an extra, or on another platform or Python
        except (InvalidRequirement, InvalidMarker, UndefinedComparison, UndefinedEnvironmentName) as exc:
            return (
                f"its distribution {dist} declares a requirement on {CORE_DISTRIBUTION} that cannot "
                f"be read ({line!r}: {exc}), so its core version cannot be checked and it is not "
                f"imported; reinstall it (pip install --force-reinstall {info.distribution}) or "
                f"disable it with FOUNDATION_DISABLE_PLUGINS={info.name}"
            )
        applying.append(req)
    installed = Version(core_version)
    missed = [r for r in applying if not r.specifier.contains(installed, prereleases=True)]
    if not missed:
        return None
    wanted = SpecifierSet(",".join(str(r.specifier) for r in applying))
    return (
        f"its distribution {dist} requires {' and '.join(repr(str(r)) for r in missed)}, but "
        f"{CORE_DISTRIBUTION} {core_version} is installed: it is not imported (made for another "
        f"{CORE_DISTRIBUTION}, it could fail or misbehave); upgrade it to a release made for "
        f"{CORE_DISTRIBUTION} {core_version} (pip install -U {info.distribution}), install a "
        f"{CORE_DISTRIBUTION} in its range (pip install '{CORE_DISTRIBUTION}{wanted}'), or disable "
        f"it with FOUNDATION_DISABLE_PLUGINS={info.name}"
    )


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
        if other is None:  # a misspelling of one that is there, more often than not
            near = difflib.get_close_matches(normalize(need), list(by_key), n=1)
            why = "is not installed" + (f" (did you mean {by_key[near[0]].name!r}?)" if near else "")
            remedy = "install"
        elif other.status == "failed":
            why, remedy = f"failed ({other.error})", "fix"
        else:
            why, remedy = f"is {selection.reason(need)}", "enable"
        return (
            f"it needs plugin {need!r}, which {why}; {remedy} {need!r} or disable "
            f"{info.name!r} with FOUNDATION_DISABLE_PLUGINS={info.name}"
        )
    return None


_RELEASE = r"[0-9]+(?:\.[0-9]+)*"
_CLAUSE = rf"\s*(~=|==|!=|<=|>=|<|>)\s*({_RELEASE})\s*"
_PLAIN_REQUIREMENT = re.compile(
    rf"\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?P<spec>{_CLAUSE}(?:,{_CLAUSE})*)?"
)

_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


def plainly_met(requirement: str, core_version: str) -> bool:
    """Whether ``requirement`` (a ``Requires-Dist`` value) surely admits ``core_version`` without
    asking ``packaging``: both are plain (the requirement on the core, with no extra, marker or
    URL, clauses of releases with no ``.*``; the version a release), so PEP 440 is a comparison
    of release numbers padded with zeros. False when it does not admit it, or is not plain: then
    ``packaging`` decides."""
    match = _PLAIN_REQUIREMENT.fullmatch(requirement)
    if match is None or dist_key(match["name"]) != CORE_DISTRIBUTION:
        return False
    if not re.fullmatch(_RELEASE, core_version):
        return False  # a pre-, post-, dev- or local version: packaging's rules
    have = _release(core_version)
    for op, text in re.findall(_CLAUSE, match["spec"] or ""):
        want = _release(text)
        if op == "~=":
            if len(want) < 2:
                return False  # '~=1' is not a valid clause: packaging names it
            prefix = want[:-1]
            if not (_cmp(have, want) >= 0 and _cmp(have[: len(prefix)], prefix) == 0):
                return False
        elif not _COMPARE[op](_cmp(have, want), 0):
            return False
    return True


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """-1, 0 or 1 as release ``a`` is before, equal to or after ``b`` (``1.0`` equals ``1``)."""
    for x, y in itertools.zip_longest(a, b, fillvalue=0):
        if x != y:
            return -1 if x < y else 1
    return 0


def _iter_or_none(value: object) -> Iterable[object]:
    try:
        return list(value)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        return [None]  # not iterable: reported as not a list of names
