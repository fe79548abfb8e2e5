"""A package's entries, a zip's or a directory's: listed with their sizes before any data is read.

Listing refuses (naming the entry) anything a package may not hold: an entry escaping the package,
duplicated, encrypted or compressed by a method zipfile lacks; a symbolic link or a special file;
a compressed zip declaring far more than its own size (a zip bomb). Reading streams an entry in
chunks, hashed as they come and capped by its listed size.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from ._package_manifest import MANIFEST
from .errors import PackageError

__all__ = ["MAX_ZIP_RATIO", "_DirSource", "_Source", "_ZipSource", "_list_dir", "_list_zip", "_reason"]

_CHUNK = 1 << 20
#: A compressed zip may declare at most this many times its own size (or its floor) uncompressed:
#: weights barely compress, while deflate inflates zeros about 1000 times.
MAX_ZIP_RATIO = 64
_ZIP_RATIO_FLOOR = 1 << 20
_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


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


def _list_zip(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The zip's file entries by name, from its central directory; refuses (naming the entry) one
    that escapes the package, appears twice, is a symbolic link or a special file, is encrypted or
    uses a compression zipfile lacks; and the zip when its compressed entries declare more than
    ``MAX_ZIP_RATIO`` times its size uncompressed."""
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
        mode = info.external_attr >> 16  # the Unix file type, where the zip records one
        if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else _kind(mode)
            raise PackageError(
                f"{where} is {kind}, not a regular file (a package holds only regular files)", file=name
            )
        if info.flag_bits & 0x1:
            raise PackageError(f"{where} is encrypted (a package's entries must not be)", file=name)
        if info.compress_type not in _ZIP_METHODS:
            raise PackageError(
                f"{where} uses compression method {info.compress_type}, which is not supported "
                f"(supported: {', '.join(_ZIP_METHODS.values())})",
                file=name,
            )
        infos[name] = info
    inflated = sum(i.file_size for i in infos.values() if i.compress_type != zipfile.ZIP_STORED)
    if inflated:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise PackageError(f"{path} cannot be read: {_reason(exc)}", file=str(path)) from None
        if inflated > MAX_ZIP_RATIO * max(size, _ZIP_RATIO_FLOOR):
            raise PackageError(
                f"{path} declares {inflated} bytes uncompressed for its compressed entries, more than "
                f"{MAX_ZIP_RATIO} times its {size} bytes (a zip bomb?): store weights uncompressed",
                file=str(path),
            )
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
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "a special file"


def _shown(name: str) -> str:
    """A file name as an error shows it: as it is if printable, else escaped (one line, encodable)."""
    return name if name.isprintable() else ascii(name)[1:-1]


def _reason(exc: BaseException) -> str:
    """Why reading failed, on one line: an OSError's strerror, else the exception's text (or type)."""
    return str(getattr(exc, "strerror", None) or exc).replace("\n", " ") or type(exc).__name__
