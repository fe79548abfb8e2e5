"""Model packages: a directory or zip of ``manifest.json`` plus weights, verified eagerly by sha256.

The manifest names the model, its version, backend, factory (``"pkg.module:build"``: code comes
from installed packages, never from the package), input and output signature, and the sha256 of
every other file. ``open_package`` checks everything before any of it is used, and reads no file's
data before it knows the file belongs: it reads and checks ``manifest.json`` first, refuses every
entry the manifest does not list (and duplicate, encrypted, symlinked or special ones) from the
zip's directory or the directory's listing alone, then reads each listed file in chunks, capped by
the size declared for it, hashing as it goes. A missing file, an unlisted file, a checksum
mismatch, a file over the size limits or a malformed manifest is a ``PackageError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

import attrs

from foundation_core._files import built_beside
from foundation_core._registry import check_ref

from ._names import MAX_VERSION_BYTES, check_name
from ._signature import example_shape, parse_signature
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

FORMAT = "foundation-model-package/1"
MANIFEST = "manifest.json"
_REQUIRED = ("format", "name", "version", "backend", "factory", "inputs", "outputs", "files")

#: Size limits, checked against the size a zip's directory (or the file system) declares before
#: anything is read, and again while reading: a package is held in memory whole.
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 16 << 30
MAX_PACKAGE_BYTES = 32 << 30

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


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
    try:
        return (path.is_dir() and (path / MANIFEST).is_file()) or (path.suffix == ".zip" and path.is_file())
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
    """Write a package (a ``.zip`` when ``path`` ends so, else a directory that must not exist).
    A package ``open_package`` would refuse (no inputs, a file named ``manifest.json``, ...) is a
    ``ValueError`` and nothing is written."""
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
    try:  # what we write must read back
        _check_manifest(f"{path}{':' if path.suffix == '.zip' else '/'}{MANIFEST}", text)
    except PackageError as exc:
        raise ValueError(f"{exc.message} (nothing was written)") from None
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


# --- reading: a zip or a directory, entries known (with their sizes) before any data is read ----


class _Source:
    """A package's entries: ``sizes`` maps each file to its declared size; ``read`` streams one."""

    def __init__(self, path: Path, sep: str, sizes: dict[str, int]) -> None:
        self.path = path
        self.sep = sep
        self.sizes = sizes

    def where(self, name: str) -> str:
        return f"{self.path}{self.sep}{_shown(name)}"

    def read(self, name: str, digest: str | None = None) -> bytes:
        """The bytes of ``name``, read in chunks and hashed as they come; a ``PackageError`` as
        soon as it yields more than its declared size, or when its sha256 is not ``digest``."""
        raise NotImplementedError

    def _stream(self, f: IO[bytes], name: str, digest: str | None) -> bytes:
        declared, where = self.sizes[name], self.where(name)
        sha = hashlib.sha256()
        chunks: list[bytes] = []
        got = 0
        while chunk := f.read(min(_CHUNK, declared - got + 1)):
            got += len(chunk)
            if got > declared:
                raise PackageError(f"{where} holds more than the {declared} bytes declared for it", file=name)
            sha.update(chunk)
            chunks.append(chunk)
        if got < declared:
            raise PackageError(f"{where} holds {got} bytes, not the {declared} declared for it", file=name)
        if digest is not None and sha.hexdigest() != digest:
            raise PackageError(
                f"{where} fails its checksum (sha256 {sha.hexdigest()}, {MANIFEST} says {digest})", file=name
            )
        return b"".join(chunks)


class _ZipSource(_Source):
    def __init__(self, path: Path, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]) -> None:
        super().__init__(path, ":", {n: i.file_size for n, i in infos.items()})
        self._zf = zf
        self._infos = infos

    def read(self, name: str, digest: str | None = None) -> bytes:
        try:
            with self._zf.open(self._infos[name]) as f:
                return self._stream(f, name, digest)
        except PackageError:
            raise
        except Exception as exc:  # a bad CRC or header, a truncated or corrupt stream: the zip's fault
            raise PackageError(f"{self.where(name)} cannot be read: {_reason(exc)}", file=name) from None


class _DirSource(_Source):
    def read(self, name: str, digest: str | None = None) -> bytes:
        # never follow a link, never block on a fifo: what was a regular file when listed may not be now
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path / name, flags)
            with os.fdopen(fd, "rb", buffering=0) as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise PackageError(f"{self.where(name)} is no longer a regular file", file=name)
                return self._stream(f, name, digest)
        except OSError as exc:
            raise PackageError(f"{self.where(name)} cannot be read: {_reason(exc)}", file=name) from None


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


def _list_zip(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The zip's file entries by name, from its central directory; refuses (naming the entry) one
    that escapes the package, appears twice, is encrypted or uses a compression zipfile lacks."""
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        if info.is_dir():
            continue
        member = PurePosixPath(name)
        where = f"{path}:{_shown(name)}"
        if member.is_absolute() or ".." in member.parts:
            raise PackageError(f"{where} escapes the package", file=name)
        if name in infos:
            raise PackageError(f"{where} appears more than once in the zip", file=name)
        if info.flag_bits & 0x1:
            raise PackageError(f"{where} is encrypted (a package's entries must not be)", file=name)
        if info.compress_type not in _ZIP_METHODS:
            raise PackageError(
                f"{where} uses compression method {info.compress_type}, which is not supported "
                f"(supported: {', '.join(_ZIP_METHODS.values())})",
                file=name,
            )
        infos[name] = info
    return infos


def _list_dir(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` with its size, from the directories' listings (no file
    is opened); a symbolic link or a special file (fifo, socket, device) anywhere is refused."""
    sizes: dict[str, int] = {}
    pending = [""]
    while pending:
        prefix = pending.pop()
        try:
            with os.scandir(root / prefix if prefix else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            where = f"{root}/{_shown(prefix)}" if prefix else str(root)
            raise PackageError(f"{where} cannot be read: {_reason(exc)}", file=prefix.rstrip("/")) from None
        for entry in entries:
            rel = prefix + entry.name
            where = f"{root}/{_shown(rel)}"
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise PackageError(f"{where} cannot be read: {_reason(exc)}", file=rel) from None
            mode, size = st.st_mode, st.st_size
            if stat.S_ISLNK(mode):
                raise PackageError(
                    f"{where} is a symbolic link (a package holds only regular files and directories)",
                    file=rel,
                )
            if stat.S_ISDIR(mode):
                pending.append(rel + "/")
            elif not stat.S_ISREG(mode):
                raise PackageError(
                    f"{where} is {_kind(mode)}, not a regular file (a package holds only regular files "
                    "and directories)",
                    file=rel,
                )
            else:
                sizes[rel] = size
    return sizes


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "a special file"


# --- the manifest ---------------------------------------------------------------------------------


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
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise bad(
                f"'files' gives {name} a malformed sha256 {_json_value(digest)} (64 hexadecimal digits)"
            )
        checked[name] = digest.lower()
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


def _shown(name: str) -> str:
    """A file name as an error shows it: as it is if printable, else escaped (one line, encodable)."""
    return name if name.isprintable() else ascii(name)[1:-1]


def _reason(exc: BaseException) -> str:
    """Why reading failed, on one line: an OSError's strerror, else the exception's text (or type)."""
    return str(getattr(exc, "strerror", None) or exc).replace("\n", " ") or type(exc).__name__
