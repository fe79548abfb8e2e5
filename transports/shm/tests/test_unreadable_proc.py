"""A ``/proc/PID/stat`` that cannot be read (EMFILE at the file limit, ENFILE, ENOMEM) is no
proof of death: ``kill(pid, 0)`` decides (spec 10.3, 10.4). A live process is neither reclaimed,
nor released from the region mutex, nor has its data segments swept; a dead one still is."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import posix_ipc
import pytest
from foundation_shm import ShmTransport, _channel, _liveness
from foundation_shm import _layout as L
from foundation_shm._echo import EchoHandler
from foundation_shm._liveness import is_alive, is_gone, is_running, start_time
from foundation_shm._objects import objects_of
from foundation_shm._segments import Segment

from foundation_ml import InferenceRequest
from foundation_ml.errors import Overloaded, ServerUnavailable

from .conftest import until

pytestmark = pytest.mark.slow

_CLIENT = """
import sys, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
c = ShmTransport().connect(sys.argv[1], channels=1, timeout=20)
print("connected", flush=True)
sys.stdin.readline()
out = c.infer(InferenceRequest("echo", {"x": np.arange(3.0)})).outputs["x"].tolist()
print("served", out, flush=True)
sys.stdin.readline()
c.close()
"""

_HOLDER = """
import mmap, os, struct, sys, posix_ipc
mutex_name, control_name, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
mutex = posix_ipc.Semaphore(mutex_name)
mutex.acquire()
ctl = posix_ipc.SharedMemory(control_name)
mm = mmap.mmap(ctl.fd, ctl.size)
mm[at : at + 4] = struct.pack("<I", os.getpid())
print("held", flush=True)
sys.stdin.readline()
mm[at : at + 4] = struct.pack("<I", 0)
mutex.release()
print("released", flush=True)
sys.stdin.readline()
"""

_CAUSES = [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EACCES]


def _blind(monkeypatch: pytest.MonkeyPatch, pids: set[int], err: int = errno.EMFILE) -> None:
    """``/proc/PID/stat`` of each of ``pids`` cannot be opened (``err``) in this process."""
    real = _liveness._stat_fields

    def stat_fields(pid: int) -> list[bytes]:
        if pid in pids:
            raise OSError(err, os.strerror(err), f"/proc/{pid}/stat")
        return real(pid)

    monkeypatch.setattr(_liveness, "_stat_fields", stat_fields)


@contextlib.contextmanager
def _process(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _say(proc: subprocess.Popen[str], expect: str) -> str:
    """Tell ``proc`` to go on (a line on its stdin) and return its next line, which must start
    with ``expect``."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    line = proc.stdout.readline().strip()
    assert line.startswith(expect), line
    return line


def _dead_pid() -> int:
    """The pid of a process that ended and was reaped (no /proc entry; kill says ESRCH)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live() -> Iterator[int]:
    """A running process of this user (not this one: a pid no test's own liveness reads)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("cause", _CAUSES, ids=errno.errorcode.get)
def test_a_live_process_whose_proc_entry_cannot_be_read_is_not_gone(
    live: int, cause: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill(pid, 0) succeeds: alive. Its start time cannot be checked then (nor a zombie told):
    another start time is taken for alive, not for a reused pid."""
    started = start_time(live)
    _blind(monkeypatch, {live}, cause)
    assert is_alive(live, started) and is_alive(live, started + 1)
    assert is_running(live)
    assert not is_gone(live, started) and not is_gone(live, started + 1)


@pytest.mark.parametrize("cause", _CAUSES, ids=errno.errorcode.get)
def test_a_dead_process_whose_proc_entry_cannot_be_read_is_gone(
    cause: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill(pid, 0) says ESRCH: gone, whatever the start time."""
    pid = _dead_pid()
    _blind(monkeypatch, {pid}, cause)
    assert not is_alive(pid, 12345) and not is_running(pid) and is_gone(pid, 12345)


def test_another_users_process_whose_proc_entry_cannot_be_read_is_alive(
    live: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill(pid, 0) fails EPERM for another user's process (without privilege): it exists."""
    started = start_time(live)
    _blind(monkeypatch, {live})

    def kill(pid: int, sig: int) -> None:
        assert (pid, sig) == (live, 0)
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(_liveness.os, "kill", kill)
    assert is_alive(live, started) and is_running(live) and not is_gone(live, started)


@pytest.mark.parametrize("missing", [FileNotFoundError, ProcessLookupError])
def test_no_proc_entry_is_gone_without_asking_kill(
    live: int, missing: type[OSError], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOENT (no /proc/PID), or ESRCH (the process reaped as its file is read), is proof."""
    started = start_time(live)
    _blind(monkeypatch, {live}, errno.ENOENT if missing is FileNotFoundError else errno.ESRCH)

    def kill(pid: int, sig: int) -> None:
        raise AssertionError("kill(pid, 0) asked though /proc said the process is gone")

    monkeypatch.setattr(_liveness.os, "kill", kill)
    assert not is_alive(live, started) and not is_running(live) and is_gone(live, started)


@pytest.mark.parametrize("alive", [True, False], ids=["live", "dead"])
def test_no_proc_entry_where_proc_is_not_mounted_is_settled_by_kill(
    live: int, alive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``/proc`` (a container that does not mount it), every ``/proc/PID`` is missing:
    that is no proof, and ``kill(pid, 0)`` decides (spec 10.3)."""
    pid = live if alive else _dead_pid()
    _blind(monkeypatch, {pid}, errno.ENOENT)
    real_stat = _liveness.os.stat

    def stat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if path == "/proc/self":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_liveness.os, "stat", stat)
    assert is_alive(pid, 12345) is alive and is_running(pid) is alive and is_gone(pid, 12345) is not alive


def test_a_readable_proc_entry_decides_by_state_and_start_time(live: int) -> None:
    """Read: another start time is a reused pid (gone for ``is_alive``; ``is_running`` asks no
    start time); a zombie is gone for all three; pid 0 or below is no process."""
    started = start_time(live)
    assert is_alive(live, started) and is_running(live) and not is_gone(live, started)
    assert not is_alive(live, started + 1) and is_gone(live, started + 1) and is_running(live)
    for pid in (0, -1):
        assert not is_alive(pid, 1) and not is_running(pid) and is_gone(pid, 1)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert until(lambda: _liveness._stat_fields(zombie.pid)[0] == b"Z", 30), "no zombie"
        z_started = start_time(zombie.pid)
        assert not is_alive(zombie.pid, z_started) and not is_running(zombie.pid)
        assert is_gone(zombie.pid, z_started)
    finally:
        zombie.wait()


def test_an_unparsable_stat_or_a_pid_no_pid_t_holds_is_settled_by_kill(
    live: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stat file that reads short (no field 22) proves nothing either: kill decides. A pid
    word over 2**31 - 1 (a u32 written by a broken client) names no process."""
    dead, huge = _dead_pid(), 2**32 - 1
    real = _liveness._stat_fields
    monkeypatch.setattr(_liveness, "_stat_fields", lambda pid: real(pid)[:1] if pid != huge else real(1)[:1])
    assert is_alive(live, 1) and not is_gone(live, 1)
    assert is_gone(dead, 1) and not is_running(dead)
    _blind(monkeypatch, {huge})
    assert is_gone(huge, 1) and not is_running(huge)


def test_the_servers_reap_leaves_a_live_client_and_mutex_holder_whose_proc_cannot_be_read(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec 10.4 acts on death only. With the server's reads of /proc/PID/stat failing EMFILE for
    a live client and for a live holder of the region mutex, its reap released the mutex from
    under the holder (a second client then in the critical section: two claims of one channel)
    and reclaimed the client's channel (its data segment unlinked, the channel freed under it),
    and its sweep unlinked a live process's data segment. A dead pid whose /proc cannot be read
    (kill: ESRCH) is still reclaimed and swept."""
    server = ShmTransport().serve(name, EchoHandler(), channels=3, heartbeat_ms=60_000)
    u32, u64 = server._ctl.u32, server._ctl.u64
    holder_word = int(L.RegionField.MUTEX_HOLDER) // 4
    left: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(_process(_CLIENT, name))
            assert client.stdout is not None and client.stdout.readline().strip() == "connected"
            owned = [ch for ch in server._channels if u32[ch.owner_word] == client.pid]
            assert len(owned) == 1
            mine = owned[0]
            segment = [o for o in objects_of(name) if f"-{client.pid}-" in o]
            assert len(segment) == 1
            at = str(int(L.RegionField.MUTEX_HOLDER))  # taken once the client has connected
            holder = stack.enter_context(_process(_HOLDER, L.mutex_name(name), L.control_name(name), at))
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            _blind(monkeypatch, {client.pid, holder.pid})

            server._reap()  # the holder lives: its mutex stays taken, the client's channel its own
            assert server._mutex.value == 0 and u32[holder_word] == holder.pid
            assert u32[mine.owner_word] == client.pid and segment[0] in objects_of(name)

            _say(holder, "released")
            dead = _dead_pid()
            _blind(monkeypatch, {client.pid, holder.pid, dead})
            other = next(ch for ch in server._channels if ch is not mine and not u32[ch.owner_word])
            u32[other.owner_word] = dead
            u64[(other.base + L.ChannelField.OWNER_START) // 8] = 12345
            left = [f"/fdn-{name}-d1-{holder.pid}-99", f"/fdn-{name}-d2-{dead}-99"]
            for seg in left:
                posix_ipc.SharedMemory(seg, posix_ipc.O_CREX, size=4096).close_fd()

            server._reap()
            server._sweep_orphans()
            assert u32[other.owner_word] == 0, "a dead client's channel, unreadable /proc, not reclaimed"
            assert u32[mine.owner_word] == client.pid and segment[0] in objects_of(name)
            assert left[0].lstrip("/") in objects_of(name), "a live process's data segment swept"
            assert left[1].lstrip("/") not in objects_of(name), "a dead process's data segment not swept"
            assert server._mutex.value == 1 and u32[holder_word] == 0

            assert _say(client, "served") == "served [0.0, 1.0, 2.0]"
    finally:
        for seg in left:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(seg)
        server.stop()


def test_a_client_whose_reads_of_a_live_servers_proc_fail_is_answered(
    echo_process: Callable[..., object], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every look at the server (connect, each wait slice, the pool's) fails EMFILE: the calls
    are answered on the first connection, none fails SERVER_UNAVAILABLE '... is gone'."""
    server = echo_process()
    pid = server.pid  # type: ignore[attr-defined]
    x = np.arange(5.0)
    with ShmTransport().connect(name, timeout=20) as client:
        _blind(monkeypatch, {pid})
        for ms in (0, 120, 0):  # 120 ms: the wait looks between slices
            out = client.infer(InferenceRequest("sleep" if ms else "echo", {"x": x}, parameters={"ms": ms}))
            np.testing.assert_array_equal(out.outputs["x"], x)
        conns = {id(ch.conn) for ch in client._pool._all}
        assert len(conns) == 1 and all(ch.conn.pid == pid for ch in client._pool._all)


def _owners(client: object) -> list[int]:
    """The owner pid of each channel of ``client``'s server (its region, as the client maps it)."""
    conn = client._pool._all[0].conn  # type: ignore[attr-defined]
    at = L.CHANNELS_OFFSET + L.ChannelField.OWNER_PID
    return [conn.ctl.u32[(at + i * L.CHANNEL_SIZE) // 4] for i in range(conn.channel_count)]


def test_a_client_that_cannot_read_its_own_start_time_claims_nothing(
    echo_process: Callable[..., object], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own ``/proc/PID/stat`` unreadable (EMFILE) at a claim: ``owner_start_time`` 0 would
    say the channel was given back (10.1), and the server would reclaim it under the live client.
    The connect fails SERVER_UNAVAILABLE naming why, and no channel is left claimed."""
    echo_process()
    monkeypatch.setattr(_liveness, "_own", (0, 0), raising=False)  # not read yet here
    _blind(monkeypatch, {os.getpid()})
    with pytest.raises(
        ServerUnavailable, match=r"cannot read this process's start time .*no channel claimed"
    ):
        ShmTransport().connect(name, channels=1, timeout=20)
    monkeypatch.undo()
    with ShmTransport().connect(name, channels=1, timeout=20) as client:
        client.infer(InferenceRequest("echo", {"x": np.arange(2.0)}))
        assert sorted(_owners(client), reverse=True)[:2] == [os.getpid(), 0]  # ours alone


def test_a_data_segment_without_a_descriptor_free_is_overloaded_not_too_large(
    echo_process: Callable[..., object], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a channel's data segment fails EMFILE (this process at its file limit): that
    may pass (OVERLOADED), it is no capacity that can never be allocated (TOO_LARGE)."""
    echo_process()

    def create(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_channel.Segment, "create", create)
    with pytest.raises(Overloaded, match="no file descriptor free"):
        ShmTransport().connect(name, channels=1, timeout=20)


def test_a_segment_created_at_the_file_limit_fails_emfile(name: str) -> None:
    """The test above gives ``Segment.create`` an EMFILE of its own; a real one, from posix_ipc,
    had no errno (only its words), so at the file limit a data segment's creation was classified
    TOO_LARGE, a capacity that can never fit. It is an ``OSError`` with its errno, and nothing is
    left in /dev/shm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest = os.open("/dev/null", os.O_RDONLY)
    os.close(lowest)  # every descriptor below it is open: a limit of it leaves none free
    segment = L.control_name(name)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        with pytest.raises(OSError) as got:
            Segment.create(segment, 4096, 0o600).close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(segment)
            pytest.fail(f"{segment} was made at the file limit")
    assert (got.value.errno, got.value.strerror) == (errno.EMFILE, os.strerror(errno.EMFILE))
