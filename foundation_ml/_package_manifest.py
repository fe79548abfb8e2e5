"""A model package's manifest: its file name and format, and the strict check of what it declares.

``manifest.json`` is JSON with unique keys and finite numbers; it names the model, its version,
backend and factory (a reference, never code), the input and output signature, and the sha256 of
every other file. Every problem is a ``PackageError`` naming the manifest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from foundation_core._registry import check_ref

from ._names import MAX_VERSION_BYTES, check_name
from ._signature import example_shape, parse_signature
from ._types import TensorSpec
from .errors import PackageError

__all__ = ["FORMAT", "MANIFEST", "_REQUIRED", "_check_manifest"]

FORMAT = "foundation-model-package/1"
MANIFEST = "manifest.json"
_REQUIRED = ("format", "name", "version", "backend", "factory", "inputs", "outputs", "files")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _check_manifest(
    where: str, data: bytes
) -> tuple[dict[str, Any], tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The manifest (its ``files`` digests lower-cased) and the signature it declares; every
    problem is a ``PackageError`` starting with ``where`` (``pkg.zip:manifest.json``)."""

    def bad(problem: str) -> PackageError:
        return PackageError(f"{where} {problem}", file=MANIFEST)

    def invalid(exc: Exception) -> PackageError:
        return PackageError(f"{where}: {exc}", file=MANIFEST)

    try:
        manifest = json.loads(
            data, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_float
        )
    except _DuplicateKey as exc:
        raise bad(f"has the key {exc.key!r} more than once in one object") from None
    except RecursionError:
        raise bad("nests arrays or objects too deeply to be read") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a number out of range
        raise bad(f"is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise bad("is not a JSON object")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise bad(f"has format {_json_value(manifest['format'])}, expected {FORMAT!r}")
    for key in ("name", "version", "backend", "factory"):
        if type(manifest[key]) is not str:
            raise bad(f"'{key}' must be a string, not {_json_value(manifest[key])}")
    try:
        check_name(manifest["name"], "'name'")
        check_name(manifest["version"], "'version'", MAX_VERSION_BYTES)
        check_name(manifest["backend"], "'backend'")
    except ValueError as exc:
        raise invalid(exc) from None
    try:
        check_ref(manifest["factory"])
    except ValueError:
        raise bad(f"'factory' {manifest['factory']!r} is not a reference 'pkg.module:build'") from None
    if not isinstance(manifest.get("factory_kwargs", {}), dict):
        kwargs = _json_value(manifest["factory_kwargs"])
        raise bad(f"'factory_kwargs' must be an object (the factory's keyword arguments), not {kwargs}")
    manifest["files"] = _check_files(manifest["files"], bad)
    inputs = _check_signature("inputs", manifest["inputs"], bad)
    outputs = _check_signature("outputs", manifest["outputs"], bad)
    return manifest, inputs, outputs


def _check_files(files: Any, bad: Callable[[str], PackageError]) -> dict[str, str]:
    if not isinstance(files, dict):
        raise bad(f"'files' must map file names to sha256 digests, not {_json_value(files)}")
    checked: dict[str, str] = {}
    for name, digest in files.items():
        if name == MANIFEST:
            raise bad(f"'files' lists {MANIFEST} itself (it lists every other file)")
        member = PurePosixPath(name)
        if not name or not name.isprintable() or member.as_posix() != name:
            raise bad(f"'files' names {name!r}, not a relative path such as 'weights.safetensors'")
        if member.is_absolute() or ".." in member.parts:
            raise bad(f"'files' names {name!r}, which escapes the package")
        if "\\" in name:  # one name here, but a separator to Windows and its unzip tools: ..\x escapes
            raise bad(f"'files' names {name!r}, with a backslash (a package's paths separate with '/')")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise bad(
                f"'files' gives {name} a malformed sha256 {_json_value(digest)} (64 hexadecimal digits)"
            )
        checked[name] = digest.lower()
    for name in checked:  # "a" and "a/b": a directory cannot hold both (nor a zip extract to both)
        for parent in PurePosixPath(name).parents[:-1]:
            if parent.as_posix() in checked:
                both = f"{parent.as_posix()!r} and {name!r}"
                raise bad(f"'files' names both {both}: a file cannot be a directory")
    return checked


def _check_signature(key: str, value: Any, bad: Callable[[str], PackageError]) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise bad(f"has an invalid signature: '{key}' must be a list of tensors, not {_json_value(value)}")
    if not value:
        raise bad(f"has an invalid signature: '{key}' is empty (a model takes inputs and returns outputs)")
    try:
        specs = parse_signature(value)
        for spec in specs:  # a signature whose warm-up example could not be allocated
            example_shape(spec)
    except (TypeError, ValueError) as exc:
        raise bad(f"has an invalid signature: '{key}': {exc}") from None
    return specs


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text:.40} is out of range")
    return value


def _json_value(value: Any) -> str:
    """A JSON value as an error shows it: scalars as written, containers by kind."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
