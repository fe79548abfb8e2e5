"""The lock file and the objects of a name: never a lock on nothing, never a live server's objects
removed, nothing in /dev/shm (a fifo, a link, a directory, a corrupt header) that hangs or breaks
``ls``, ``clean`` or a server's start."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import posix_ipc
import pytest
from foundation_shm import ShmTransport, _liveness
from foundation_shm import _layout as L
from foundation_shm._echo import EchoHandler
from foundation_shm._liveness import ServerLock, lock_state
from foundation_shm._objects import no_server_hint, objects_of
from foundation_shm._segments import Segment
from foundation_shm.errors import ServerNameTaken

from foundation_core._cli import main
from foundation_ml.errors import InferenceError, Overloaded, ServerUnavailable

from .conftest import EchoProcess

SHM = Path("/dev/shm")


def test_a_lock_file_unlinked_while_it_is_locked_is_not_a_lock(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving of a restart: the old server unlinks its lock file between our open and
    our flock. A lock on the unlinked file would be a lock on nothing: the open is retried."""
    path = str(SHM / f"fdn-{name}.lock")
    Path(path).write_text("")
    real_flock = _liveness.fcntl.flock
    calls = []

    def flock_after_unlink(fd: int, op: int) -> None:
        if not calls:
            os.unlink(path)  # the old server's release()
        calls.append(op)
        real_flock(fd, op)

    monkeypatch.setattr(_liveness.fcntl, "flock", flock_after_unlink)
    lock = ServerLock(path, 0o600)
    try:
        assert len(calls) == 2  # the first lock was on a file no longer at the path
        assert os.stat(path).st_ino == os.fstat(lock.fd).st_ino
        assert lock_state(path) == "held"
    finally:
        lock.release()


def test_a_forked_child_does_not_keep_its_servers_lock(name: str) -> None:
    """A child forked without exec (a model's worker, multiprocessing's default start method)
    shared its server's flock through its copy of the descriptor: once the server died the lock
    stayed held while the child lived, so the next server was refused and clients took the dead
    one for a server in another PID namespace. The child lets its copy go; the parent's stands,
    and the child never unlinks the parent's lock file."""
    path = str(SHM / f"fdn-{name}.lock")
    lock = ServerLock(path, 0o600)
    go_r, go_w = os.pipe()
    seen_r, seen_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it holds, then live on until told to go
        try:
            os.close(go_w)
            os.write(seen_w, b"%d;" % lock.fd)
            lock.release()  # a child's stop of the parent's server: nothing to let go, nothing unlinked
            os.write(seen_w, b"released")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(seen_w)
    try:
        said = b""
        while not said.endswith(b"released"):
            said += os.read(seen_r, 64)
        assert said == b"-1;released"  # the child's copy of the descriptor was closed at the fork
        assert lock_state(path) == "held"  # the parent's lock stands, its file still there
        lock.release(unlink=False)  # the server dies: its descriptor closed
        assert lock_state(path) == "free"  # was "held" while the child lived
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        os.close(seen_r)
        os.waitpid(pid, 0)
        lock.release()
        Path(path).unlink(missing_ok=True)


def test_a_server_whose_lock_file_went_missing_is_not_deleted_by_a_second_start(
    echo_server: EchoProcess, name: str
) -> None:
    os.unlink(SHM / f"fdn-{name}.lock")
    control = os.stat(SHM / f"fdn-{name}").st_ino
    with pytest.raises(
        ServerNameTaken,
        match=f"a live shm server \\(pid {echo_server.pid}\\) already serves '{name}' \\(although",
    ):
        ShmTransport().serve(name, EchoHandler())
    assert os.stat(SHM / f"fdn-{name}").st_ino == control  # its objects untouched
    assert main(["shm", "clean", name]) == 1  # alive by its region header: clean leaves it too
    assert os.stat(SHM / f"fdn-{name}").st_ino == control


def test_a_start_that_cannot_remove_a_stale_object_fails_clearly_and_frees_the_name(name: str) -> None:
    odd = SHM / f"fdn-{name}-odd"
    odd.mkdir()  # not removable by unlink: as another user's object would not be
    try:
        with pytest.raises(PermissionError, match=f"stale objects of '{name}' cannot be removed"):
            ShmTransport().serve(name, EchoHandler())
    finally:
        odd.rmdir()
    ShmTransport().serve(name, EchoHandler()).stop()  # the failed start did not keep the lock


def test_a_fifo_or_symlink_as_lock_file_is_unknown_never_waited_on(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = SHM / f"fdn-{name}.lock"
    os.mkfifo(fifo, 0o666)
    try:
        assert lock_state(str(fifo)) == "unknown"  # an open without O_NONBLOCK waits for a writer
        assert main(["shm", "ls", "--json"]) == 0
        listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)["servers"]}
        assert listed[name]["alive"] is None
        assert main(["shm", "clean", name]) == 1 and fifo.exists()
        fifo.unlink()
        target = tmp_path / "target"
        target.write_text("")
        target.chmod(0o640)
        fifo.symlink_to(target)
        assert lock_state(str(fifo)) == "unknown"
        with pytest.raises(PermissionError, match="cannot use the lock file"):
            ShmTransport().serve(name, EchoHandler())
        assert target.stat().st_mode & 0o777 == 0o640  # never opened or chmod'ed through the link
    finally:
        fifo.unlink(missing_ok=True)
    assert objects_of(name) == []


def test_a_region_header_with_a_state_outside_the_protocol_is_listed_not_a_traceback(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seg = Segment.create(L.control_name(name), L.REGION_HEADER_SIZE, 0o600)
    try:
        struct.pack_into("<I", seg.buf, int(L.RegionField.MAGIC), L.REGION_MAGIC)
        struct.pack_into("<I", seg.buf, int(L.RegionField.STATE), 7)
        assert main(["shm", "ls", "--json"]) == 0
        listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)["servers"]}
        assert listed[name]["state"] == "unknown(7)" and listed[name]["alive"] is False
        assert main(["shm", "clean", name]) == 0
    finally:
        seg.close()
    assert objects_of(name) == []


@pytest.mark.parametrize("size", [0, 1, 100])
def test_a_control_segment_that_is_empty_or_not_of_words_is_a_server_not_ready(
    name: str, size: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Empty is how a starting server's control segment looks between shm_open and ftruncate:
    a client connecting then got ValueError ('cannot mmap an empty file'); a size not a multiple
    of 8 got TypeError from the word views, and ``ls`` printed an ignored AttributeError of
    ``Segment.__del__`` for each. Both are ServerUnavailable now, and ``ls`` lists it quietly."""
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    shm = posix_ipc.SharedMemory(L.control_name(name), posix_ipc.O_CREX, size=size)
    shm.close_fd()
    try:
        with pytest.raises(ServerUnavailable, match=rf"{name}' is not ready .*{size} bytes"):
            ShmTransport().connect(name, connect_timeout=0)
        assert main(["shm", "ls"]) == 0
        assert f"{name}: DEAD" in capsys.readouterr().out
    finally:
        posix_ipc.unlink_shared_memory(L.control_name(name))
    assert unraisable == []


def test_connecting_to_a_server_one_may_not_open_is_server_unavailable_naming_the_way_in(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's server (mode 0600): posix_ipc.PermissionsError reached the caller."""

    def refused(segment_name: str, **_: object) -> Segment:
        raise posix_ipc.PermissionsError("No permission to access this segment")

    server = ShmTransport().serve(name, EchoHandler(), channels=1)
    try:
        monkeypatch.setattr(Segment, "open", staticmethod(refused))
        with pytest.raises(ServerUnavailable, match=rf"no permission to use shm server '{name}'.*0o660"):
            ShmTransport().connect(name, connect_timeout=0)
    finally:
        monkeypatch.undo()
        server.stop()


def test_connecting_at_this_processs_file_limit_is_overloaded_naming_the_control_segment(
    name: str, echo_process: Callable[..., object]
) -> None:
    """At the file limit (EMFILE) posix_ipc raised an OSError without an errno, which reached the
    caller bare; it is OVERLOADED (it may pass once a descriptor is free, spec 10.1 step 1),
    naming the path and the error, as the C, Go and Rust clients say."""
    echo_process()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest = os.open("/dev/null", os.O_RDONLY)
    os.close(lowest)  # every descriptor below it is open: a limit of it leaves none free
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        with pytest.raises(InferenceError) as got:
            ShmTransport().connect(name, connect_timeout=0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert isinstance(got.value, Overloaded), repr(got.value)
    assert str(got.value) == (
        f"shm server '{name}': cannot open /dev/shm/fdn-{name}: {os.strerror(errno.EMFILE)}"
    )


def test_connecting_to_a_name_no_server_has_names_the_servers_here_and_the_close_one(name: str) -> None:
    """A misspelled name said only "no shm server named 'x'": nothing on what is served here, nor
    how to look. It names the close one, the servers with a region here, or how to start one."""
    server = ShmTransport().serve(name, EchoHandler(), channels=1)
    try:
        with pytest.raises(ServerUnavailable) as got:
            ShmTransport().connect(name[:-1] + "Q", connect_timeout=0)
        message = str(got.value)
        assert message.startswith(
            f"no shm server named '{name[:-1]}Q' (did you mean '{name}'? servers here: "
        )
        assert f"'{name}'" in message.split("servers here: ")[1], message
        assert "`foundation shm ls` tells live from stale" in message, message
    finally:
        server.stop()


def test_with_no_server_here_the_hint_is_how_to_start_one(tmp_path: Path) -> None:
    (tmp_path / "fdn-gone-lock").touch()  # a name's other objects are no region: not listed
    (tmp_path / "unrelated").touch()
    assert no_server_hint("demo", str(tmp_path)) == (
        "no shm server runs on this host: start one with `foundation serve --name demo`"
    )
    for n in ("alpha", "beta", "gamma"):
        (tmp_path / f"fdn-{n}").touch()
    assert no_server_hint("q", str(tmp_path), shown=2) == (
        "servers here: 'alpha', 'beta' and 1 more; `foundation shm ls` tells live from stale"
    )


def test_a_shm_directory_that_cannot_be_listed_still_says_no_server(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The no-such-server hint lists /dev/shm while the missing control segment is handled: where
    it cannot be listed (a confined snap, a container whose profile denies reading /dev/shm) the
    connect raised that PermissionError instead of ServerUnavailable. The hint says it could not
    look, and the error is still the typed one."""

    def denied(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "listdir", denied)
    with pytest.raises(ServerUnavailable) as got:
        ShmTransport().connect(name, connect_timeout=0)
    assert str(got.value) == (
        f"no shm server named '{name}' (the servers here are not known: /dev/shm cannot be listed: "
        "Permission denied)"
    )


def test_a_start_over_a_killed_servers_objects_says_it_removed_them(
    echo_process: Callable[..., EchoProcess], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server starting over the region of one that was killed removed it without a word: an
    operator restarting a crashed server saw nothing of the crash. A graceful restart says nothing."""
    dead = echo_process()
    pid = dead.pid
    dead.kill()
    with caplog.at_level(logging.WARNING, logger="foundation_shm"):
        ShmTransport().serve(name, EchoHandler()).stop()
        said = [r.getMessage() for r in caplog.records if "stale object" in r.getMessage()]
        assert len(said) == 1, said
        assert (
            said[0].startswith(f"shm {name}: removed ")
            and f"of an earlier server of this name (pid {pid}, " in said[0]
        )
        assert f"gone without stopping (killed or crashed): fdn-{name}" in said[0]
        caplog.clear()
        ShmTransport().serve(name, EchoHandler()).stop()  # the one before stopped: nothing to say
    assert not [r for r in caplog.records if "stale object" in r.getMessage()]
