"""Is a process alive? pid plus start time (no pid-reuse races), and the server's flock'd lock file."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

__all__ = ["ServerLock", "is_alive", "is_gone", "is_running", "lock_state", "start_time"]


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


def is_gone(pid: int, started: int) -> bool:
    """True only on proof that process ``pid`` started at ``started`` has ended: no
    ``/proc/PID`` (ENOENT; ESRCH as it is reaped), a zombie, or another process's start time.
    ``is_alive`` is False also when ``/proc/PID/stat`` cannot be read (EMFILE at this process's
    file limit, ENFILE, ENOMEM, EACCES): a live server may be behind that, so what needs the
    process truly gone (a request sent again, spec 10.3) must not take that for its death."""
    if pid <= 0:
        return True
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    try:
        return fields[0] in (b"Z", b"X") or int(fields[19]) != started
    except (ValueError, IndexError):
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


_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never a planted link, never a fifo's wait


def _open_regular(path: str, flags: int, mode: int = 0o600) -> int:
    """Open ``path`` (no symlink followed, no blocking on a fifo) and insist on a regular file."""
    fd = os.open(path, flags | _OPEN_FLAGS, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def lock_state(path: str) -> str:
    """``"held"`` (a live server holds the flock), ``"free"``, ``"absent"`` (no lock file), or
    ``"unknown"``: the file cannot be opened (another user's, mode 0600) or is not a regular file
    (not ours): whether its server lives cannot be told from here."""
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return "absent"
    except OSError:
        return "unknown"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return "held" if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else "unknown"
    finally:
        os.close(fd)
    return "free"


class ServerLock:
    """The server's exclusive flock on its lock file; the kernel drops it when the process dies.

    The flock is taken on the file that is at ``path`` *after* locking: a lock file unlinked
    meanwhile (its server stopping, or ``foundation shm clean``) would be a lock on nothing, and
    a second server would then believe it alone; so the inode locked is compared with the one at
    ``path``, and the open retried when they differ."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.fd = -1
        for _ in range(20):
            try:
                fd = _open_regular(path, os.O_RDWR | os.O_CREAT, mode)
            except OSError as exc:
                raise PermissionError(f"cannot use the lock file {path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise FileExistsError(f"a live shm server already holds {path}") from None
            try:
                at_path = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                at_path = None
            held = os.fstat(fd)
            if at_path is not None and (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino):
                self.fd = fd
                os.fchmod(fd, mode)
                return
            os.close(fd)  # locked a file no longer at path: try again with the one there now
        raise FileExistsError(f"the lock file {path} keeps being replaced; another server is starting")

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
