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
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from foundation_core.errors import ConfigProblem

from ._layers import MAX_DEPTH, Layer, shape_problem
from ._tokens import TOKENS, apply_tokens

__all__ = ["DEFAULT_FILES", "MAX_FILE_BYTES", "SECRETS_PREFIX", "TOKENS", "default_files", "read_file"]

DEFAULT_FILES = ("settings.toml", ".secrets.toml")
SECRETS_PREFIX = ".secrets."
_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
MAX_FILE_BYTES = 16 << 20  # read no more: a config file is far smaller (MAX_VALUES values)


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
    try:
        raw = _read_regular(path)
    except _NotReadable as exc:
        return None, [ConfigProblem(name, str(exc), name)]
    except FileNotFoundError:
        return None, [ConfigProblem(name, "file not found", name)]
    except OSError as exc:  # a symbolic link loop, no permission, a vanished disk
        return None, [ConfigProblem(name, f"cannot be read: {exc.strerror or exc}", name)]
    try:
        data = _parse(kind, raw, name)
    except UnicodeDecodeError as exc:
        return None, [ConfigProblem(name, f"not UTF-8 text: {_decode_error(exc)}", name)]
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
        problems.extend(apply_tokens(value, section, name, environ or {}, (data, key), layer.reads))
        layer.set((section,), data[key], f"{name}:{section}")
        _record_origins(layer, name, section, data[key])
    return (None, problems) if problems else (layer, [])


class _NotReadable(Exception):
    """Not a file to read: a directory, a FIFO or device (reading would block or never end), or
    larger than ``MAX_FILE_BYTES``."""


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def _read_regular(path: Path) -> bytes:
    """The bytes of the regular file at ``path``, checked on the descriptor read (never blocking
    on a FIFO put in its place) and bounded by ``MAX_FILE_BYTES`` before anything is parsed."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _NotReadable("is a directory, not a file")
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "a socket or other special file")
            raise _NotReadable(f"is {kind}, not a regular file")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        mib, rest = divmod(MAX_FILE_BYTES, 1 << 20)
        limit = f"{MAX_FILE_BYTES} bytes" if rest else f"{mib} MiB"
        raise _NotReadable(f"is larger than {limit}: not a config file?")
    return b"".join(chunks)


def _decode_error(exc: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is, as a line and column (of characters)."""
    before = exc.object[: exc.start]
    line = before.count(b"\n") + 1
    column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
    return f"byte 0x{exc.object[exc.start]:02x} at line {line}, column {column}"


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


_INT_DIGITS = re.compile(r"Exceeds the limit \((\d+) digits\) for integer string conversion: value has (\d+)")
_DUPLICATE = re.compile(r'found duplicate key "(.*?)" with value "')


def _parser_message(exc: BaseException) -> str:
    """The parser's message on one line, never quoting a value: YAML's duplicate-key message
    repeats both values, which may be secrets."""
    found = _DUPLICATE.match(str(getattr(exc, "problem", "") or ""))
    mark = getattr(exc, "problem_mark", None)
    if found:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"duplicate key {found.group(1)!r}{where}"
    text = " ".join(str(exc).split())
    digits = _INT_DIGITS.search(text)
    if digits:  # Python's advice to raise the limit is for programs, not for config files
        return f"an integer of {digits.group(2)} digits (at most {digits.group(1)})"
    return text or type(exc).__name__


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
