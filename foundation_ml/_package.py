"""Model packages: a directory or zip of ``manifest.json`` plus weights, verified eagerly by sha256.

The manifest names the model, its version, backend, factory (``"pkg.module:build"``: code comes
from installed packages, never from the package), input and output signature, and the sha256 of
every other file. ``open_package`` reads and checks everything before any of it is used: a missing
file, an unlisted file, a checksum mismatch or a malformed manifest is a ``PackageError`` naming
the file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from foundation_core._files import built_beside

from ._names import MAX_VERSION_BYTES, check_name
from ._signature import parse_signature
from ._types import TensorSpec
from .errors import PackageError

__all__ = ["FORMAT", "MANIFEST", "Package", "is_package", "manifest_backend", "open_package", "write_package"]

FORMAT = "foundation-model-package/1"
MANIFEST = "manifest.json"
_REQUIRED = ("format", "name", "version", "backend", "factory", "inputs", "outputs", "files")


@attrs.frozen
class Package:
    """A verified package: its manifest, signature, and every file's bytes (checked)."""

    path: str
    manifest: Mapping[str, Any]
    files: Mapping[str, bytes]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def where(self, file: str) -> str:
        """How an error names a file of this package: ``pkg.zip:weights.safetensors``."""
        return f"{self.path}{'/' if Path(self.path).is_dir() else ':'}{file}"


def is_package(spec: object) -> bool:
    if not isinstance(spec, str | Path):
        return False
    path = Path(spec)
    return (path.is_dir() and (path / MANIFEST).is_file()) or (path.suffix == ".zip" and path.is_file())


def manifest_backend(spec: str | Path) -> str | None:
    """The backend a package's manifest names, or None when ``spec`` is not a package."""
    if not is_package(spec):
        return None
    manifest = _parse_manifest(str(spec), _read_all(Path(spec), only=MANIFEST)[MANIFEST])
    return str(manifest["backend"])


def open_package(spec: str | Path) -> Package:
    """Read and verify a package eagerly; raise ``PackageError`` naming the file at fault."""
    path = Path(spec)
    if not is_package(path):
        raise PackageError(f"{path} is not a model package (a directory with {MANIFEST}, or a .zip)")
    files = _read_all(path)
    where = f"{path}{'/' if path.is_dir() else ':'}"
    if MANIFEST not in files:
        raise PackageError(f"{where}{MANIFEST} is missing", file=MANIFEST)
    manifest = _parse_manifest(str(path), files.pop(MANIFEST))
    listed: Mapping[str, str] = manifest["files"]
    for name, digest in listed.items():
        if name not in files:
            raise PackageError(f"{where}{name} is listed in {MANIFEST} but missing", file=name)
        got = hashlib.sha256(files[name]).hexdigest()
        if got != digest:
            raise PackageError(
                f"{where}{name} fails its checksum (sha256 {got}, {MANIFEST} says {digest})", file=name
            )
    unlisted = sorted(set(files) - set(listed))
    if unlisted:
        raise PackageError(f"{where}{unlisted[0]} is not listed in {MANIFEST}", file=unlisted[0])
    try:
        inputs, outputs = parse_signature(manifest["inputs"]), parse_signature(manifest["outputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"{where}{MANIFEST} has an invalid signature: {exc}", file=MANIFEST) from None
    return Package(str(path), manifest, files, inputs, outputs)


def write_package(
    path: str | Path,
    *,
    name: str,
    version: str,
    backend: str,
    factory: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    files: Mapping[str, bytes],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a package (a ``.zip`` when ``path`` ends so, else a directory that must not exist)."""
    check_name(name, "the package's model name")
    check_name(version, "the package's version", MAX_VERSION_BYTES)
    path = Path(path)
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "backend": backend,
        "factory": factory,
        "inputs": [s.as_dict() for s in inputs],
        "outputs": [s.as_dict() for s in outputs],
        "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
        **(extra or {}),
    }
    text = json.dumps(manifest, indent=2).encode() + b"\n"
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    with built_beside(path) as partial:  # a failure (a full disk) leaves nothing behind
        if path.suffix == ".zip":
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr(MANIFEST, text)
                for n, b in files.items():
                    zf.writestr(n, b)
        else:
            partial.mkdir()
            (partial / MANIFEST).write_bytes(text)
            for n, b in files.items():
                (partial / n).parent.mkdir(parents=True, exist_ok=True)
                (partial / n).write_bytes(b)
    return path


def _read_all(path: Path, only: str | None = None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path).as_posix()
            if p.is_file() and (only is None or rel == only):
                out[rel] = p.read_bytes()
        if only and only not in out:
            raise PackageError(f"{path}/{only} is missing", file=only)
        return out
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                member = PurePosixPath(info.filename)
                if info.is_dir():
                    continue
                if member.is_absolute() or ".." in member.parts:
                    raise PackageError(f"{path}:{info.filename} escapes the package", file=info.filename)
                if only is None or info.filename == only:
                    out[info.filename] = zf.read(info)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{path} is not a readable zip: {exc}", file=str(path)) from None
    if only and only not in out:
        raise PackageError(f"{path}:{only} is missing", file=only)
    return out


def _parse_manifest(where: str, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise PackageError(f"{where}: {MANIFEST} is not valid JSON: {exc}", file=MANIFEST) from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{where}: {MANIFEST} is not a JSON object", file=MANIFEST)
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise PackageError(f"{where}: {MANIFEST} lacks {', '.join(missing)}", file=MANIFEST)
    if manifest["format"] != FORMAT:
        raise PackageError(
            f"{where}: {MANIFEST} has format {manifest['format']!r}, expected {FORMAT!r}", file=MANIFEST
        )
    if not isinstance(manifest["files"], dict):
        raise PackageError(f"{where}: {MANIFEST} 'files' must map file names to sha256", file=MANIFEST)
    return manifest
