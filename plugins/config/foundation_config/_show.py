"""Effective values with their sources, secrets masked: what ``foundation config show`` prints."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import attrs

from foundation_core import Config

from ._masking import MASK, from_secrets_file, is_secret
from ._settings import DEFAULT_SECRET_KEYS, ConfigSettings
from ._structure import code_only, field_types

__all__ = ["effective_values", "render_json", "render_text"]


def _display(obj: Any) -> Any:
    """JSON fallback: classes and functions by their import path, anything else by ``str``."""
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if isinstance(qualname, str) and isinstance(module, str):
        return qualname if module == "builtins" else f"{module}.{qualname}"
    return str(obj)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_display)


def _secret_names(config: Config) -> tuple[str, ...]:
    own = config.sections.get("config")
    names = own.secret_keys if isinstance(own, ConfigSettings) else DEFAULT_SECRET_KEYS
    return tuple(n.lower() for n in names)


def _mask_nested(value: Any, names: Iterable[str], path: str, secret: frozenset[str]) -> Any:
    """``value`` with each key inside it masked when its name is a secret's, or when it came from
    a ``.secrets.*`` file or was built from a secret's variable (``secret``: such dotted paths)."""
    if isinstance(value, dict):
        return {
            k: MASK
            if is_secret(str(k), "", names) or f"{path}.{k}" in secret
            else _mask_nested(v, names, f"{path}.{k}", secret)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_nested(v, names, path, secret) for v in value]
    return value


def effective_values(config: Config) -> list[tuple[str, Any, str]]:
    """(dotted key, JSON-ready value with secrets masked, source) for every field of every section
    that configuration can set (not those taking a function: ``code_only``)."""
    import cattrs

    converter = cattrs.Converter()
    names = _secret_names(config)
    secret = frozenset(
        [p for p, src in config.sources.items() if from_secrets_file(src)]
        + [p for p, reads in config.references.items() if any(is_secret(r, "", names) for r in reads)]
    )  # keys inside a table: from a .secrets.* file, or built from a secret's variable (@format)
    rows = []
    for section in sorted(config.sections):
        instance = config.sections[section]
        types_ = field_types(type(instance))
        for field in attrs.fields(type(instance)):
            if code_only(types_.get(field.alias or field.name)):
                continue  # a function given in code, not configuration (its repr: an address)
            path = f"{section}.{field.name}"
            source = config.sources.get(path, "default")
            value = converter.unstructure(getattr(instance, field.name))
            reads = config.references.get(path, ())  # a secret copied in by ${...} (or @format) is one too
            copied = any(is_secret(r, config.sources.get(r, ""), names) or r in secret for r in reads)
            masked = copied or is_secret(path, source, names)
            value = MASK if masked else _mask_nested(value, names, path, secret)
            rows.append((path, value, source))
    return rows


def render_text(config: Config, with_sources: bool) -> str:
    rows = effective_values(config)
    width = min(max((len(f"{p} = {_dumps(v)}") for p, v, _ in rows), default=0), 60)
    lines = []
    for path, value, source in rows:
        line = f"{path} = {_dumps(value)}"
        lines.append(f"{line:<{width}}  # {source}" if with_sources else line)
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those floats are written as TOML spells them, as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_finite(v) for v in value]
    return value


def render_json(config: Config, with_sources: bool) -> str:
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for path, value, source in effective_values(config):
        section, _, key = path.partition(".")
        values.setdefault(section, {})[key] = _finite(value)
        sources[path] = source
    out: dict[str, Any] = {"values": values, "sources": sources} if with_sources else values
    return json.dumps(out, indent=2, default=_display, sort_keys=True, allow_nan=False)
