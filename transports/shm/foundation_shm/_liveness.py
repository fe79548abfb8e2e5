"""Is a process alive? pid plus start time (no pid-reuse races), and the server's flock'd lock file."""

from __future__ import annotations

import errno
import fcntl
import os

__all__ = ["ServerLock", "is_alive", "lock_is_held", "start_time"]


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 onward)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat.rsplit(b")", 1)[1].split()


def start_time(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat``: the process start time in clock ticks since boot."""
    return int(_stat_fields(pid)[19])


def is_alive(pid: int, started: int) -> bool:
    """True while process ``pid`` exists, is the one that started at ``started``, and is not a
    zombie (killed but not yet reaped by its parent: spec 10.3 counts it as gone)."""
    if pid <= 0:
        return False
    try:
        fields = _stat_fields(pid)
        return fields[0] not in (b"Z", b"X") and int(fields[19]) == started
    except (OSError, ValueError, IndexError):
        return False


def is_running(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (for a pid recorded without its start
    time: the region mutex's holder)."""
    if pid <= 0:
        return False
    try:
        return _stat_fields(pid)[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def lock_is_held(path: str) -> bool:
    """True if some process holds an exclusive flock on ``path`` (a live server)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


class ServerLock:
    """The server's exclusive flock on its lock file; the kernel drops it when the process dies."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise FileExistsError(f"a live shm server already holds {path}") from None
        os.fchmod(self.fd, mode)

    def release(self, unlink: bool = True) -> None:
        if self.fd < 0:
            return
        if unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)  # closing drops the flock
        self.fd = -1
