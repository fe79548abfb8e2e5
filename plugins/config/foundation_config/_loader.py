"""Build the layered configuration: defaults < files < environment < ``--set``, then check it all.

Every problem found in any layer is collected into one ``ConfigError``; nothing is returned
half-built. Unknown sections and keys are warnings (``ConfigWarning``) unless ``strict``; their
values are not interpolated. A secret's value never appears in a problem (``mask_problems``).
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from foundation_core import Config
from foundation_core._freeze import freeze_section
from foundation_core.errors import ConfigError, ConfigProblem

from ._env import env_layer, overrides_layer
from ._files import default_files, read_file
from ._interpolate import MISSING, interpolate
from ._layers import Layer, iter_leaves, merge_into
from ._masking import from_secrets_file, mask_problems, secret_names
from ._structure import structure_section

__all__ = ["ConfigWarning", "load_config"]


class ConfigWarning(UserWarning):
    """A configuration problem that is not fatal unless strict: an unknown section or key."""


def load_config(
    sections: Mapping[str, type[Any]],
    files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    *,
    strict: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    use_default_files: bool = True,
) -> Config:
    """The frozen configuration, or a ``ConfigError`` listing every problem found."""
    environ = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else Path(cwd)
    names = [*(default_files(base) if use_default_files else []), *files]
    layers, problems = _read_layers(names, base, environ, overrides)
    merged: dict[str, Any] = {}
    for layer in layers:
        merge_into(merged, layer.data)
    origin = _origin_in(layers)
    references = _token_reads(layers)  # @format's variables, of the values that stand
    resolved, found = interpolate(
        merged, origin, _default_of(sections), environ, references, wanted=_is_field(sections)
    )
    problems.extend(found)
    unknown = _unknown_sections(resolved, sections, origin)
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        instance, found, notes = structure_section(name, cls, resolved.get(name, {}), origin, strict)
        problems.extend(found)
        unknown.extend(notes)
        built[name] = instance
    if strict:
        problems.extend(unknown)
    else:  # warned even when an error follows, so that one run shows everything to fix
        for problem in unknown:
            warnings.warn(f"{_shortened(problem)} -- ignored", ConfigWarning, stacklevel=2)
    if problems:
        secret = secret_names(resolved.get("config"))
        masked = mask_problems(problems, (merged, resolved), origin, references, secret)
        raise ConfigError([_shortened(p) for p in masked])
    for name, instance in built.items():
        freeze_section(instance, name=name)
    return Config(built, _sources(sections, resolved, origin), references)


MAX_SHOWN = 400  # characters of a problem's path, message or source: a value may be megabytes


def _shorten(text: str) -> str:
    if len(text) <= MAX_SHOWN:
        return text
    return f"{text[:250]} ...[{len(text) - 350} characters]... {text[-100:]}"


def _shortened(problem: ConfigProblem) -> ConfigProblem:
    """``problem`` with each part cut in the middle past ``MAX_SHOWN`` characters (the end often
    holds the hint), after masking: one huge value never floods the terminal."""
    return ConfigProblem(_shorten(problem.path), _shorten(problem.message), _shorten(problem.source))


def _read_layers(
    names: Sequence[str], base: Path, environ: Mapping[str, str], overrides: Sequence[str]
) -> tuple[list[Layer], list[ConfigProblem]]:
    """The layers in order (the files, the environment, ``--set``) and the problems reading them."""
    problems: list[ConfigProblem] = []
    layers: list[Layer] = []
    for name in names:
        layer, found = read_file(name, base, environ)
        problems.extend(found)
        if layer is not None:
            layers.append(layer)
    for layer, found in (env_layer(environ), overrides_layer(overrides)):
        problems.extend(found)
        layers.append(layer)
    return layers, problems


def _token_reads(layers: list[Layer]) -> dict[str, frozenset[str]]:
    """The variables (``env:NAME``) each ``@format`` value read, by dotted path, for the values
    still in effect: a later layer that set the path (or a table above it) replaced the value."""
    out: dict[str, frozenset[str]] = {}
    for path in {p for layer in layers for p in layer.reads}:
        last = next(layer for layer in reversed(layers) if layer.origin(path) is not None)
        if path in last.reads:
            out[path] = last.reads[path]
    return out


def _origin_in(layers: list[Layer]) -> Callable[[str], str]:
    """Where the effective value at a dotted path came from: the last layer that set it, else
    ``"default"``."""

    def origin(path: str) -> str:
        for layer in reversed(layers):
            found = layer.origin(path)
            if found is not None:
                return found
        return "default"

    return origin


def _default_of(sections: Mapping[str, type[Any]]) -> Callable[[str], Any]:
    """The default of the field at ``section.key`` (what interpolation reads for a key no layer
    set), or ``MISSING``: none, a nested path, or a factory that takes ``self``."""

    def lookup_default(path: str) -> Any:
        section, _, key = path.partition(".")
        cls = sections.get(section)
        if cls is None or "." in key:
            return MISSING
        for field in attrs.fields(cls):
            if field.name == key and field.default is not attrs.NOTHING:
                default = field.default
                if not isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                    return default
                return MISSING if default.takes_self else default.factory()
        return MISSING

    return lookup_default


def _is_field(sections: Mapping[str, type[Any]]) -> Callable[[str], bool]:
    """Whether ``section.key`` is a field of a known section (only those are interpolated)."""
    fields = {
        name: {f.alias or f.name for f in attrs.fields(cls) if f.init} for name, cls in sections.items()
    }

    def known(path: str) -> bool:
        section, _, key = path.partition(".")
        return key in fields.get(section, ())

    return known


def _unknown_sections(
    resolved: Mapping[str, Any], sections: Mapping[str, type[Any]], origin: Callable[[str], str]
) -> list[ConfigProblem]:
    """A problem for each section no component declares, with the one it may mean."""
    unknown: list[ConfigProblem] = []
    for name in resolved:
        if name not in sections:
            near = [s for s in sections if s.lower() == name.lower()]
            near = near or difflib.get_close_matches(name, list(sections), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (sections: {', '.join(sorted(sections))})"
            unknown.append(ConfigProblem(name, f"unknown section{hint}", origin(name)))
    return unknown


def _sources(
    sections: Mapping[str, type[Any]], resolved: Mapping[str, Any], origin: Callable[[str], str]
) -> dict[str, str]:
    """Where each field's value came from, by ``section.field``; and a key of a table field by its
    own path when it came from a ``.secrets.*`` file."""
    sources = {
        f"{name}.{field.name}": origin(f"{name}.{field.name}")
        for name, cls in sections.items()
        for field in attrs.fields(cls)
        if field.init
    }
    # a key inside a table field whose value came from a .secrets.* file is named too, even when
    # another layer added keys beside it (the field's own source is then that layer's): ``config
    # show`` masks it by this entry
    for path, _ in iter_leaves({n: v for n, v in resolved.items() if n in sections}):
        if path.count(".") >= 2 and path not in sources:
            where = origin(path)
            if from_secrets_file(where):
                sources[path] = where
    return sources
