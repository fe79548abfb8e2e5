"""Model packages: a directory or zip of ``manifest.json`` plus weights, verified eagerly by sha256.

The manifest names the model, its version, backend, factory (``"pkg.module:build"``: code comes
from installed packages, never from the package), input and output signature, and the sha256 of
every other file. ``open_package`` checks everything before any of it is used, and reads no file's
data before it knows the file belongs: it reads and checks ``manifest.json`` first, refuses every
entry the manifest does not list (and duplicate, encrypted, symlinked or special ones) from the
zip's directory or the directory's listing alone, then reads each listed file in chunks, capped by
the size declared for it, hashing as it goes. A missing file, an unlisted file, a checksum
mismatch, a file over the size limits or a malformed manifest is a ``PackageError`` naming the file.

This module holds the package as a whole; the manifest's check is in ``_package_manifest``, and
listing and reading a zip's or a directory's entries in ``_package_source``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from foundation_core._files import built_beside

from ._names import MAX_VERSION_BYTES, check_name
from ._package_manifest import _REQUIRED, FORMAT, MANIFEST, _check_manifest
from ._package_source import _DirSource, _list_dir, _list_zip, _reason, _Source, _ZipSource
from ._types import TensorSpec
from .errors import PackageError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "MAX_FILE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_PACKAGE_BYTES",
    "Package",
    "is_package",
    "manifest_backend",
    "open_package",
    "read_manifest",
    "write_package",
]

#: Size limits, checked against the size a zip's directory (or the file system) declares before
#: anything is read, and again while reading: a package is held in memory whole.
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 16 << 30
MAX_PACKAGE_BYTES = 32 << 30


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


# Suffixes of archive and compressed formats other than zip: a package is never written as one,
# and a directory so named reads as one (`--out model.tar` made a directory "model.tar"). A known
# list, not "any suffix": a directory such as models/v1.2 or weights.safetensors.d is fine.
_ARCHIVE_SUFFIXES = frozenset(
    {".tar", ".tgz", ".taz", ".tbz", ".tbz2", ".txz", ".tlz", ".tzst", ".gz", ".bz2", ".xz", ".lz"}
    | {".lzma", ".lz4", ".zst", ".z", ".7z", ".rar", ".cab", ".cpio", ".jar", ".war", ".whl"}
)


def archive_suffix(path: Path) -> str:
    """The archive or compression suffix ``path``'s name ends in, other than ``.zip`` (``.tar``,
    ``.tar.gz``, ``.7z``, in any case), as written; "" if none: a package is written only as a
    ``.zip`` or a directory, and a directory named ``model.tar`` would pass for an archive."""
    if path.suffix.lower() not in _ARCHIVE_SUFFIXES:
        return ""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-2].lower() == ".tar":  # .tar.gz, .tar.zst
        return suffixes[-2] + suffixes[-1]
    return path.suffix


def archive_refusal(path: Path) -> str:
    """What is said of a ``path`` with an ``archive_suffix``."""
    return (
        f"{archive_suffix(path)!r} names an archive format, which is not written: a package is "
        "written only as a .zip file or a directory (name it .zip, or a directory without that suffix)"
    )


def is_zip_name(path: Path) -> bool:
    """Whether ``path`` names a zipped package: ``.zip`` in any case (``MODEL.ZIP`` too)."""
    return path.suffix.lower() == ".zip"


def is_package(spec: object) -> bool:
    if not isinstance(spec, str | Path):
        return False
    path = Path(spec)
    try:
        return (path.is_dir() and (path / MANIFEST).is_file()) or (is_zip_name(path) and path.is_file())
    except OSError:  # a name too long for the file system, say: no package is there
        return False


def read_manifest(spec: str | Path) -> dict[str, Any]:
    """A package's checked manifest, reading no other file's data (``PackageError`` if invalid)."""
    with _source(Path(spec)) as src:
        return _read_manifest(src)[0]


def manifest_backend(spec: str | Path) -> str | None:
    """The backend a package's manifest names, or None when ``spec`` is not a package."""
    if not is_package(spec):
        return None
    backend: str = read_manifest(spec)["backend"]
    return backend


def open_package(spec: str | Path) -> Package:
    """Read and verify a package eagerly; raise ``PackageError`` naming the file at fault."""
    path = Path(spec)
    if not is_package(path):
        raise PackageError(f"{path} is not a model package (a directory with {MANIFEST}, or a .zip)")
    with _source(path) as src:
        manifest, inputs, outputs = _read_manifest(src)
        listed: dict[str, str] = manifest["files"]
        unlisted = sorted(set(src.sizes) - set(listed) - {MANIFEST})
        if unlisted:  # refused from the directory alone: its data is never read
            raise PackageError(f"{src.where(unlisted[0])} is not listed in {MANIFEST}", file=unlisted[0])
        total = src.sizes[MANIFEST]
        for name in listed:
            if name not in src.sizes:
                raise PackageError(f"{src.where(name)} is listed in {MANIFEST} but missing", file=name)
            size = src.sizes[name]
            if size > MAX_FILE_BYTES:
                raise PackageError(
                    f"{src.where(name)} is {size} bytes, more than a package file may be ({MAX_FILE_BYTES})",
                    file=name,
                )
            total += size
        if total > MAX_PACKAGE_BYTES:
            raise PackageError(
                f"{path} holds {total} bytes, more than a package may ({MAX_PACKAGE_BYTES})", file=str(path)
            )
        files = {name: src.read(name, digest) for name, digest in listed.items()}
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
    """Write a package (a ``.zip`` when ``path`` ends so, else a directory that must not exist;
    a name ending in another archive suffix, ``.tar`` or ``.7z``, is a ``ValueError``).
    A package ``open_package`` would refuse (no inputs, a file named ``manifest.json``, ...) is a
    ``ValueError`` and nothing is written."""
    check_name(name, "the package's model name")
    check_name(version, "the package's version", MAX_VERSION_BYTES)
    path = Path(path)
    if archive_suffix(path):
        raise ValueError(f"{path}: {archive_refusal(path)} (nothing was written)")
    clash = [k for k in _REQUIRED if k in (extra or {})]
    if clash:  # extra={"files": {}} would write a manifest that does not list the files written
        raise ValueError(
            f"extra may not set {', '.join(clash)}: write_package writes them (nothing was written)"
        )
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
    try:  # what we write must read back
        _check_manifest(f"{path}{':' if is_zip_name(path) else '/'}{MANIFEST}", text)
    except PackageError as exc:
        raise ValueError(f"{exc.message} (nothing was written)") from None
    if path.exists() or path.is_symlink():  # a dangling link too: it would be replaced
        raise FileExistsError(f"{path} already exists")
    with built_beside(path) as partial:  # a failure (a full disk) leaves nothing behind
        if is_zip_name(path):
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


# --- reading: a zip or a directory (its entries: _package_source), the manifest first -----------


@contextmanager
def _source(path: Path) -> Iterator[_Source]:
    if path.is_dir():
        yield _DirSource(path, "/", _list_dir(path))
        return
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, OSError, a name that is not UTF-8, ...: the zip's fault
        raise PackageError(f"{path} is not a readable zip: {_reason(exc)}", file=str(path)) from None
    with zf:
        yield _ZipSource(path, zf, _list_zip(path, zf))


def _read_manifest(src: _Source) -> tuple[dict[str, Any], tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    where = src.where(MANIFEST)
    size = src.sizes.get(MANIFEST)
    if size is None:
        raise PackageError(f"{where} is missing", file=MANIFEST)
    if size > MAX_MANIFEST_BYTES:
        raise PackageError(
            f"{where} is {size} bytes, more than a manifest may be ({MAX_MANIFEST_BYTES})", file=MANIFEST
        )
    return _check_manifest(where, src.read(MANIFEST))
