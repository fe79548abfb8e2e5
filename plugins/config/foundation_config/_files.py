"""Config files read with dynaconf's own loaders (toml, yaml, json), one file per layer.

Each file is read on its own (not through ``Dynaconf(settings_files=...)``, which would also
pull in ``*.local.*`` files and merge them silently), so every value keeps its file as source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundation_core.errors import ConfigProblem

from ._layers import Layer

__all__ = ["DEFAULT_FILES", "SECRETS_PREFIX", "default_files", "read_file"]

DEFAULT_FILES = ("settings.toml", ".secrets.toml")
SECRETS_PREFIX = ".secrets."
_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def default_files(cwd: Path) -> list[str]:
    """``settings.toml`` then ``.secrets.toml`` in ``cwd``, those that exist."""
    return [name for name in DEFAULT_FILES if (cwd / name).is_file()]


def read_file(name: str, cwd: Path) -> tuple[Layer | None, list[ConfigProblem]]:
    """Read one file into a layer named after it; problems name the file and what went wrong."""
    path = Path(name) if Path(name).is_absolute() else cwd / name
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        expected = ", ".join(sorted(_FORMATS))
        return None, [
            ConfigProblem(name, f"unsupported file type {path.suffix!r} (expected {expected})", name)
        ]
    if not path.is_file():
        return None, [ConfigProblem(name, "file not found", name)]
    try:
        data = _load(kind, path)
    except Exception as exc:  # each parser raises its own type; all mean "malformed"
        message = f"malformed {kind.upper()}: {_one_line(exc)}"
        return None, [ConfigProblem(name, message, name)]
    layer = Layer(name)
    for key, value in data.items():
        layer.set((key.lower(),), value, f"{name}:{key.lower()}")
        _record_origins(layer, name, key.lower(), value)
    return layer, []


def _record_origins(layer: Layer, name: str, path: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            sub = f"{path}.{key}"
            layer.origins[sub] = f"{name}:{sub}"
            _record_origins(layer, name, sub, child)


def _load(kind: str, path: Path) -> dict[str, Any]:
    from dynaconf import Dynaconf
    from dynaconf.loaders import json_loader, toml_loader, yaml_loader

    loaders = {"toml": toml_loader, "yaml": yaml_loader, "json": json_loader}
    obj = Dynaconf(environments=False, loaders=[], envvar_prefix=False)
    baseline = set(obj.as_dict())
    try:
        loaders[kind].load(obj, filename=str(path), silent=False)
    except AttributeError as exc:  # dynaconf's loaders assume a mapping at the top
        raise ValueError("the top level must be a table of sections") from exc
    loaded = {k: v for k, v in obj.as_dict().items() if k not in baseline}
    return _plain(loaded)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """dynaconf's Box types into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
