"""Config files (TOML, YAML, JSON), one file per layer, parsed by the parsers dynaconf uses.

Each file is parsed on its own, not through ``Dynaconf(settings_files=...)`` nor dynaconf's
loaders: those also pull in ``*.local.*`` files, follow ``dynaconf_include`` and
``INCLUDES_FOR_DYNACONF``, obey every ``*_FOR_DYNACONF`` variable of the environment (one of them
makes YAML loading unsafe) and upper-case section names, silently merging ``[LOGGING]`` into
``[logging]``. Here nothing outside the file changes how it is read, and every value keeps its
file as source. Dynaconf's value tokens (``"@int 5"``, ``"@format {env[HOME]}/x"``) still apply,
the documented ones only (``_tokens.TOKENS``); the others are refused.
"""

from __future__ import annotations

import importlib
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundation_core.errors import ConfigProblem

from ._layers import MAX_DEPTH, Layer, shape_problem
from ._tokens import TOKENS, apply_tokens

__all__ = ["DEFAULT_FILES", "SECRETS_PREFIX", "TOKENS", "default_files", "read_file"]

DEFAULT_FILES = ("settings.toml", ".secrets.toml")
SECRETS_PREFIX = ".secrets."
_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def default_files(cwd: Path) -> list[str]:
    """``settings.toml`` then ``.secrets.toml`` in ``cwd``, those that exist."""
    return [name for name in DEFAULT_FILES if (cwd / name).is_file()]


def read_file(
    name: str, cwd: Path, environ: Mapping[str, str] | None = None
) -> tuple[Layer | None, list[ConfigProblem]]:
    """Read one file into a layer named after it; problems name the file (and the key) and what
    went wrong. A file with any problem gives no layer: nothing of it is applied."""
    path = Path(name) if Path(name).is_absolute() else cwd / name
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        expected = ", ".join(sorted(_FORMATS))
        return None, [
            ConfigProblem(name, f"unsupported file type {path.suffix!r} (expected {expected})", name)
        ]
    if path.is_dir():
        return None, [ConfigProblem(name, "is a directory, not a file", name)]
    if not path.is_file():
        return None, [ConfigProblem(name, "file not found", name)]
    try:
        data = _parse(kind, path.read_bytes(), name)
    except OSError as exc:
        return None, [ConfigProblem(name, f"cannot be read: {exc.strerror or exc}", name)]
    except RecursionError:
        message = f"malformed {kind.upper()}: nested too deeply (at most {MAX_DEPTH} levels)"
        return None, [ConfigProblem(name, message, name)]
    except Exception as exc:  # each parser raises its own type; all mean "malformed"
        return None, [ConfigProblem(name, f"malformed {kind.upper()}: {_parser_message(exc)}", name)]
    problems = _shape_problems(data, name)
    if problems:
        return None, problems
    data = _plain(data)
    problems = _case_problems(data, name)
    layer = Layer(name)
    for key, value in data.items():
        section = key.lower()
        problems.extend(apply_tokens(value, section, name, environ or {}, (data, key)))
        layer.set((section,), data[key], f"{name}:{section}")
        _record_origins(layer, name, section, data[key])
    return (None, problems) if problems else (layer, [])


def _parse(kind: str, raw: bytes, name: str) -> dict[str, Any]:
    text = raw.decode("utf-8-sig")  # a byte order mark is allowed, not required
    if kind == "toml":
        import tomllib

        return tomllib.loads(text)
    if kind == "json":
        import json

        data = json.loads(text, object_pairs_hook=_unique_keys)
    else:
        # dynaconf's vendored ruamel.yaml, as its loader uses (imported by name: it is not typed)
        yaml = importlib.import_module("dynaconf.vendor.ruamel.yaml")
        stream = io.StringIO(text)
        stream.name = name  # marks say "in <name>", without the line's text
        data = yaml.safe_load(stream)
        if data is None:  # an empty document
            return {}
    if not isinstance(data, dict):
        raise ValueError(f"the top level must be a table of sections, not {_kind_of(data)}")
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_DUPLICATE = re.compile(r'found duplicate key "(.*?)" with value "')


def _parser_message(exc: BaseException) -> str:
    """The parser's message on one line, never quoting a value: YAML's duplicate-key message
    repeats both values, which may be secrets."""
    found = _DUPLICATE.match(str(getattr(exc, "problem", "") or ""))
    mark = getattr(exc, "problem_mark", None)
    if found:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"duplicate key {found.group(1)!r}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _shape_problems(data: dict[str, Any], name: str) -> list[ConfigProblem]:
    """Too deep, too large once aliases are expanded, or containing itself: named at the first
    key that is, else at the file (many keys together too large)."""
    whole = shape_problem(data)
    if whole is None:
        return []
    for section, values in data.items():
        sec = str(section).lower()
        for key, value in values.items() if isinstance(values, dict) else ():
            found = shape_problem(value, 2)
            if found is not None:
                return [ConfigProblem(f"{sec}.{key}", found, f"{name}:{sec}.{key}")]
        found = shape_problem(values, 1)
        if found is not None:
            return [ConfigProblem(sec, found, f"{name}:{sec}")]
    return [ConfigProblem(name, whole, name)]


def _case_problems(data: dict[str, Any], name: str) -> list[ConfigProblem]:
    """Section names are not case-sensitive: two that differ only in case would silently lose one."""
    seen: dict[str, str] = {}
    problems = []
    for key in data:
        first = seen.setdefault(key.lower(), key)
        if first != key:
            problems.append(
                ConfigProblem(
                    key.lower(),
                    f"sections {first!r} and {key!r} differ only in case (section names are not "
                    "case-sensitive): write them as one",
                    name,
                )
            )
    return problems


def _record_origins(layer: Layer, name: str, path: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            sub = f"{path}.{key}"
            layer.record(sub, f"{name}:{sub}")
            _record_origins(layer, name, sub, child)


def _plain(value: Any) -> Any:
    """Parsed values as plain dicts (text keys) and lists; shared parts (YAML aliases) copied."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value
