"""Is a process alive? pid plus start time (no pid-reuse races), and the server's flock'd lock file."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import weakref

__all__ = [
    "ServerLock",
    "is_alive",
    "is_gone",
    "is_running",
    "is_zombie",
    "lock_state",
    "own_start_time",
    "start_time",
]


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 onward)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat.rsplit(b")", 1)[1].split()


def start_time(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat``: the process start time in clock ticks since boot."""
    return int(_stat_fields(pid)[19])


_own: tuple[int, int] = (0, 0)  # (pid, its start time): this process's, read once (per fork)


def own_start_time() -> int:
    """This process's start time (``start_time(os.getpid())``), read once per process: it never
    changes, and a claim that read it each time needed a file descriptor, which a process at its
    file limit (EMFILE) has not: the OSError is raised, for the caller to type."""
    global _own
    pid = os.getpid()
    if _own[0] != pid:  # the first claim, or the first in a forked child
        _own = (pid, start_time(pid))
    return _own[1]


def _proven_gone(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` (started at ``started``; None: any start time) is proven gone:
    no ``/proc/PID`` (ENOENT where ``/proc`` is mounted; ESRCH as it is reaped), a zombie
    (killed, not yet reaped by its parent: spec 10.3 counts it as gone), or another start time
    (the pid reused). A
    ``/proc/PID/stat`` that cannot be read for another reason (EMFILE at this process's file
    limit, ENFILE, ENOMEM, EACCES) proves nothing; ``kill(pid, 0)``, which needs no file
    descriptor, settles it: ESRCH is gone, success or EPERM a live process (10.3, 10.4). Then
    neither its start time nor whether it is a zombie can be checked: a pid reused, or a
    zombie, counts as alive until its ``/proc`` entry can be read again."""
    if pid <= 0:
        return True
    try:
        fields = _stat_fields(pid)
        return fields[0] in (b"Z", b"X") or (started is not None and int(fields[19]) != started)
    except FileNotFoundError:  # no /proc/PID: proof only where /proc itself is mounted
        return _no_such_process(pid) if not _proc_mounted() else True
    except ProcessLookupError:
        return True
    except (OSError, ValueError, IndexError):
        return _no_such_process(pid)


def _proc_mounted() -> bool:
    """Whether ``/proc`` is there (a ``stat`` of ``/proc/self``: no file descriptor needed). Where
    it is not (not mounted in a container), no ``/proc/PID`` is no proof of death: ``kill(pid, 0)``
    decides, as for an entry that cannot be read (spec 10.3)."""
    try:
        os.stat("/proc/self")
    except OSError:
        return False
    return True


def _no_such_process(pid: int) -> bool:
    """``kill(pid, 0)`` says no process ``pid`` exists (ESRCH); EPERM is one of another user's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OverflowError:  # no pid_t holds it (a u32 word over 2**31 - 1): no such process
        return True
    except OSError:
        return False
    return False


def is_alive(pid: int, started: int) -> bool:
    """True unless process ``pid`` started at ``started`` is proven gone (``_proven_gone``): a
    ``/proc`` entry that cannot be read (EMFILE) is no death, so nothing is reclaimed, released
    or reported gone on it; then the start time is not checked (``kill(pid, 0)`` only)."""
    return not _proven_gone(pid, started)


def is_gone(pid: int, started: int) -> bool:
    """True only on proof that process ``pid`` started at ``started`` has ended (``not is_alive``):
    what needs the process truly gone (a request sent again, spec 10.3) asks this."""
    return _proven_gone(pid, started)


def is_running(pid: int) -> bool:
    """True unless process ``pid`` is proven gone or a zombie, whatever its start time (a pid
    recorded without it: the region mutex's holder, a data segment's client)."""
    return not _proven_gone(pid, None)


_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never a planted link, never a fifo's wait


def is_zombie(pid: int, started: int) -> bool:
    """Whether process ``pid`` started at ``started`` is a zombie seen from this PID namespace:
    dead, its ``/proc`` entry left until it is reaped. A SIGKILL ends the main thread first; the
    others may still be exiting then, the last one unmapping the process's memory (a model's
    gigabytes: a tenth of a second and more) before it closes the files, and so drops the flock
    on its lock file. False where the entry cannot be read."""
    try:
        fields = _stat_fields(pid)
        return fields[0] in (b"Z", b"X") and int(fields[19]) == started
    except (OSError, ValueError, IndexError):
        return False


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
                _HELD.add(self)
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
        _HELD.discard(self)
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


_HELD: weakref.WeakSet[ServerLock] = weakref.WeakSet()  # the locks this process holds


def _let_go_after_fork() -> None:
    """In a forked child (a model's worker, ``multiprocessing``'s fork): its copy of a held lock's
    descriptor shares the parent's flock, which the kernel drops only once every copy is closed, so
    a child that outlived its server kept the name locked: the next server was refused (or waited
    for a dead one), and clients took the dead server for one in another PID namespace. The child
    closes its copies (the parent's lock stands) and never unlinks the parent's lock file."""
    for lock in list(_HELD):
        try:
            os.close(lock.fd)
        except OSError:
            pass
        lock.fd = -1
    _HELD.clear()


os.register_at_fork(after_in_child=_let_go_after_fork)
