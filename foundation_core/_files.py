"""Writing a file or directory tree so that a failure halfway leaves nothing behind."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["built_beside"]


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
        if path.exists():  # appeared meanwhile: never replace it
            raise FileExistsError(errno.EEXIST, "already exists", str(path))
        partial.rename(path)
    except BaseException:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        raise
