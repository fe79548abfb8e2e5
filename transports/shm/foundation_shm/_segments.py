"""POSIX shared-memory segments and named semaphores: create with a mode, open, map, unlink."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import stat
import time
from collections.abc import Callable
from typing import cast

import posix_ipc

from ._accel import hot

__all__ = [
    "Segment",
    "create_semaphore",
    "drain",
    "open_semaphore",
    "sem_wait",
    "unlink_segment",
    "unlink_semaphore",
]


# posix_ipc raises shm_open's EMFILE and ENFILE as an OSError with these words and no errno, which
# a caller (spec 10.1: OVERLOADED, it may pass later) cannot tell from any other failure
_NO_DESCRIPTOR = {
    "This process already has the maximum number of files open": errno.EMFILE,
    "The system limit on the total number of open files has been reached": errno.ENFILE,
}


def _shared_memory(name: str, flags: int = 0, mode: int = 0o600) -> posix_ipc.SharedMemory:
    """``posix_ipc.SharedMemory``, its file-limit errors an ``OSError`` with their errno."""
    try:
        return posix_ipc.SharedMemory(name, flags, mode=mode)
    except OSError as exc:
        code = _NO_DESCRIPTOR.get(str(exc)) if exc.errno is None else None
        if code is None:
            raise
        raise OSError(code, os.strerror(code), f"/dev/shm{name}") from None


class Segment:
    """A mapped shared-memory segment with word views (``u32``/``u64`` index = byte offset / 4 or 8)."""

    __slots__ = ("buf", "guard", "mm", "mode", "name", "size", "u32", "u64", "warned")

    def __init__(self, name: str, mm: mmap.mmap, mode: int) -> None:
        self.guard = -1  # its SIGBUS guard slot (_hot.guard), -1: none; first: __del__ reads it
        self.name = name
        self.mode = mode  # its permission bits (0o600), as created or as found when opened
        self.mm = mm
        self.size = len(mm)
        self.buf = memoryview(mm)
        self.u32 = self.buf.cast("I")
        self.u64 = self.buf.cast("Q")
        self.warned = False  # a caught SIGBUS of it has been logged

    @classmethod
    def create(cls, name: str, size: int, mode: int, *, guard: bool = False) -> Segment:
        """Create, allocate and map ``name`` (``posix_ipc.ExistentialError`` if it exists).
        ``guard``: a SIGBUS on its pages (someone shrank the file) is caught (``faulted``), as for
        ``open(sole=True)``: the server's control segment.

        Its pages are allocated now (``posix_fallocate``), not at first touch: on a full
        /dev/shm a sparse segment maps fine and the first write to a missing page is SIGBUS, the
        end of the process. No room is an ``OSError`` (``ENOSPC``, ``ENOMEM``, ``EFBIG``) naming
        the segment, its size and /dev/shm. On any failure what was created is unlinked."""
        shm = _shared_memory(name, posix_ipc.O_CREX, mode=mode)
        try:
            os.fchmod(shm.fd, mode)  # the umask must not narrow or the mode widen
            try:
                os.ftruncate(shm.fd, size)
                _allocate(shm.fd, size)
                segment = cls(name, mmap.mmap(shm.fd, size), mode)
            except (OSError, OverflowError, ValueError) as exc:
                raise _no_room(exc, f"shared memory segment {name} of {size} bytes") from None
        except BaseException:
            unlink_segment(name)  # nothing half-made stays behind (a retry could not create it)
            raise
        finally:
            shm.close_fd()
        if guard and hot is not None and size:
            segment.guard = hot.guard(segment.buf)
        return segment

    @classmethod
    def open(cls, name: str, *, sole: bool = False, guard: bool = False) -> Segment:
        """Map the existing segment ``name``. ``sole``: a client's data segment, as the server
        opens it: refuse anything but a plain file with one name (a hard link to another file,
        another server's segment say, has two; symlinks are refused by ``shm_open`` itself), and
        guard the mapping against the client shrinking the file under it (``faulted``).
        ``guard`` alone: guard it (a server's control segment, as a client maps it)."""
        shm = _shared_memory(name)
        try:
            st = os.fstat(shm.fd)
            if sole and (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1):
                kind = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"{st.st_nlink} links"
                raise ValueError(f"/dev/shm{name} is not a data segment of its own ({kind})")
            if not st.st_size or st.st_size % 8:
                # empty: its server is creating it (shm_open, then ftruncate), else not one of
                # ours; either way neither an mmap nor the word views can be made of it
                raise ValueError(f"/dev/shm{name} is {st.st_size} bytes, not a segment of 8-byte words")
            segment = cls(name, mmap.mmap(shm.fd, st.st_size), st.st_mode & 0o777)
            if (sole or guard) and hot is not None and segment.size:
                segment.guard = hot.guard(segment.buf)
            return segment
        finally:
            shm.close_fd()

    def faulted(self) -> bool:
        """Whether an access past the file's end (the client shrank it: SIGBUS) was caught: the
        mapping then holds zero pages, no longer the peer's file. Only a guarded segment
        (``create(guard=True)``, ``open(sole=True)`` or ``open(guard=True)`` on the C hot path)
        is caught; elsewhere the SIGBUS ends the process."""
        return hot is not None and self.guard >= 0 and bool(hot.faulted(self.guard))

    def __del__(self) -> None:
        # a guarded segment dropped without close(): its addresses may be mapped again, by
        # anything; a guard left on them would turn a SIGBUS there into zero pages
        if self.guard >= 0 and hot is not None:
            hot.unguard(self.guard)
            self.guard = -1

    def close(self) -> None:
        """Unmap; if numpy views still use the mapping it stays until they are gone."""
        if self.guard >= 0 and hot is not None:
            hot.unguard(self.guard)  # before the pages go: another mapping may take the addresses
            self.guard = -1
        for view in (self.u32, self.u64, self.buf):
            with contextlib.suppress(BufferError):  # a thread still spinning on it (GIL released)
                view.release()
        with contextlib.suppress(BufferError):
            self.mm.close()


# how many posix_fallocate calls in a row a signal may interrupt (EINTR) before a segment's
# creation fails (spec 10.1 step 6), as the C, Go and Rust clients bound it
FALLOCATE_TRIES = 100


def _libc_fallocate() -> Callable[[int, int, int], int] | None:
    """libc's ``posix_fallocate`` (it returns the error number), or None where ctypes cannot
    reach it. Not ``os.posix_fallocate``: CPython makes the call again after each EINTR (PEP
    475) for as long as no signal handler raises, so it cannot be bounded from here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "posix_fallocate64", None) or libc.posix_fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64], ctypes.c_int
    return cast("Callable[[int, int, int], int]", fn)


def _os_fallocate(fd: int, offset: int, size: int) -> int:
    """``os.posix_fallocate`` as an error number (without ctypes: EINTR is retried unbounded)."""
    try:
        os.posix_fallocate(fd, offset, size)
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


# one posix_fallocate call, its error number (0: done); a test interrupts it
_fallocate: Callable[[int, int, int], int] = _libc_fallocate() or _os_fallocate


def _allocate(fd: int, size: int) -> None:
    """Allocate every page of the segment behind ``fd`` (where the file system cannot, the
    segment stays sparse, as before). Interrupted by a signal (EINTR: older kernels stop a tmpfs
    allocation at any signal, and undo its pages), it is made again, ``FALLOCATE_TRIES`` times
    in a row at most: signals faster than a large segment allocates (a profiler's timer) kept it
    trying for ever. Then ``OSError(EINTR)`` saying so. A Python signal handler that raises
    (KeyboardInterrupt) ends it at once: it runs between two calls."""
    if size <= 0:
        return
    for _ in range(FALLOCATE_TRIES):
        code = _fallocate(fd, 0, size)
        if code != errno.EINTR:
            break
    if code in (0, errno.EOPNOTSUPP, errno.ENOSYS, errno.ENODEV):
        return
    why = f"posix_fallocate: {os.strerror(code)}"
    if code == errno.EINTR:
        why += f": {FALLOCATE_TRIES} times in a row, it may pass later"
    raise OSError(code, why)


def _no_room(exc: BaseException, what: str) -> OSError:
    """The ``OSError`` for ``what`` (which says its size) that could not be made; on no room
    (``ENOSPC``, ``ENOMEM``) with how full /dev/shm is and how to give it more."""
    code = getattr(exc, "errno", None) or errno.EFBIG  # OverflowError: no errno
    why = getattr(exc, "strerror", None) or str(exc)
    text = f"cannot allocate {what} in /dev/shm: {why}"
    if code in (errno.ENOSPC, errno.ENOMEM):
        try:
            room = os.statvfs("/dev/shm")
            text += f" ({room.f_bavail * room.f_frsize} of {room.f_blocks * room.f_frsize} bytes free)"
        except OSError:
            pass
        text += "; give /dev/shm more room (docker run --shm-size=1g, a larger tmpfs), or use less of it"
    return OSError(code, text)


def unlink_segment(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(name)


def create_semaphore(name: str, mode: int, value: int) -> posix_ipc.Semaphore:
    """Create the semaphore ``name`` (``posix_ipc.ExistentialError`` if it exists). Each takes a
    page of /dev/shm (``sem.NAME``): no room there is an ``OSError`` saying so, as for segments."""
    try:
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=mode, initial_value=value)
    except OSError as exc:  # not ExistentialError: a posix_ipc.Error
        raise _no_room(exc, f"semaphore {name} (sem.{name.lstrip('/')}, a page)") from None
    with contextlib.suppress(OSError):
        os.chmod(f"/dev/shm/sem.{name.lstrip('/')}", mode)
    return sem


def open_semaphore(name: str) -> posix_ipc.Semaphore:
    return posix_ipc.Semaphore(name)


def unlink_semaphore(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_semaphore(name)


def sem_wait(sem: posix_ipc.Semaphore, timeout: float) -> bool:
    """Take ``sem`` within ``timeout`` seconds (True), or find it still taken then (False).

    A signal that has a Python handler (SIGTERM or SIGINT in a server, say), delivered to this
    thread while it waits, interrupts the wait: posix_ipc runs the handler, then raises
    ``SignalError``. That is no failure: the wait goes on for the time left (an exception the
    handler raises, KeyboardInterrupt, propagates). The kernel hands a process's signal to any
    thread that does not block it, so a server's serving loop, asleep on its doorbell, got a
    SIGTERM now and then, and died of the SignalError."""
    end = time.monotonic() + timeout
    while True:
        try:
            sem.acquire(max(0.0, end - time.monotonic()))
            return True
        except posix_ipc.BusyError:
            return False
        except posix_ipc.SignalError:
            if time.monotonic() >= end:
                return False


def drain(sem: posix_ipc.Semaphore) -> None:
    """Take every pending post (stale wake-ups from a previous owner)."""
    with contextlib.suppress(posix_ipc.BusyError):
        while True:
            sem.acquire(0)
