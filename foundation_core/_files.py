"""Writing a file or directory tree so that a failure halfway leaves nothing behind."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["built_beside", "rename_no_replace"]


@contextmanager
def built_beside(path: Path) -> Iterator[Path]:
    """Yield a hidden sibling of ``path`` to build the file or directory in; when the block ends,
    rename it to ``path``; if the block raises, remove it. ``path`` must not exist (
    ``FileExistsError``); missing parent directories are made (``NotADirectoryError`` where a
    file stands in their way)."""
    if path.exists():
        raise FileExistsError(errno.EEXIST, "already exists", str(path))
    for parent in (path.parent, *path.parent.parents):  # mkdir would call a file there "exists"
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        rename_no_replace(partial, path)  # one appeared meanwhile: never replace it
    except BaseException:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise


_RENAME_NOREPLACE = 1  # linux/fs.h
_AT_FDCWD = -100


def _find_renameat2() -> Callable[..., int] | None:
    """libc's ``renameat2`` (glibc 2.28+), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn: Callable[..., int] = libc.renameat2
    except (OSError, AttributeError):
        return None
    return fn


_renameat2 = _find_renameat2()


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError``), in one step where the
    kernel and file system can (``renameat2`` with ``RENAME_NOREPLACE``): a plain rename silently
    replaces a file, or an empty directory, that appeared at ``dst`` after any check. Elsewhere
    (no such call, or a file system without the flag) it checks, then renames."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "already exists", str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # else: no such flag here
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(errno.EEXIST, "already exists", str(dst))
    src.rename(dst)
