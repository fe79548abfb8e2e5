"""A server started right after its predecessor's SIGKILL (spec 10.2): the killed server's pid is a
zombie while its other threads still exit holding the lock file, and the start waits for them (a
bounded time) instead of refusing the name as a live server's; a live server is refused at once."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport, _start_lock, _transport
from foundation_shm import _layout as L
from foundation_shm._echo import EchoHandler
from foundation_shm._region import read_region
from foundation_shm._server import ShmServer
from foundation_shm._start_lock import take_server_lock
from foundation_shm.errors import ServerNameTaken

from foundation_ml import InferenceRequest

from .conftest import EchoProcess, dying, until


def test_a_server_started_as_its_killed_predecessor_still_exits_waits_for_the_lock_and_serves(
    echo_server: EchoProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor's ``kill()`` then a new server at once, no ``wait()``: the start was refused
    'a live shm server already holds ...', its predecessor dead. It waits for the lock (the test
    lets it go once the start has seen it held) and serves; the dead server's objects go."""
    looked = threading.Event()

    def read_region_seen(server: str) -> dict[str, Any]:
        looked.set()  # the start found the lock held and looked at who holds it
        return read_region(server)

    monkeypatch.setattr(_start_lock, "read_region", read_region_seen)
    started: dict[str, Any] = {}

    def start() -> None:
        try:
            started["server"] = ShmTransport().serve(name, EchoHandler(), channels=1)
        except Exception as exc:
            started["error"] = exc

    with dying(echo_server) as let_go:
        thread = threading.Thread(target=start)
        thread.start()
        assert until(lambda: looked.is_set() or not thread.is_alive())
        let_go()  # the killed server's last thread closes its files; its pid is still a zombie
        thread.join(30)
        assert "error" not in started, started["error"]
        server = started["server"]
        try:
            assert read_region(name)["pid"] != echo_server.pid  # the new server's region
            with ShmTransport().connect(name, connect_timeout=5) as client:
                x = np.arange(4, dtype=np.int32)
                np.testing.assert_array_equal(
                    client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x
                )
        finally:
            server.stop()


def test_a_killed_server_that_never_lets_its_lock_go_is_refused_after_the_bound_saying_so(
    echo_server: EchoProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_start_lock, "DYING_WAIT_S", 0.3)
    with dying(echo_server):
        begun = time.monotonic()
        with pytest.raises(
            FileExistsError,
            match=rf"^the previous shm server of '{name}' \(pid {echo_server.pid}\) is dead but still "
            rf"exiting, and holds /dev/shm/fdn-{name}\.lock after 0\.3 s: try again once it has exited$",
        ):
            ShmServer(name, EchoHandler(), channels=1)
        waited = time.monotonic() - begun
        assert 0.3 <= waited < 5, waited
        assert read_region(name)["pid"] == echo_server.pid  # nothing of the dead server's touched


def test_the_wait_for_a_killed_servers_lock_is_bounded(echo_server: EchoProcess, name: str) -> None:
    """On a virtual clock: polled until ``wait_s`` has passed, then refused; never slept for real."""
    now = [100.0]
    naps: list[float] = []

    def sleep(s: float) -> None:
        naps.append(s)
        now[0] += s

    with dying(echo_server), pytest.raises(FileExistsError, match="is dead but still exiting"):
        take_server_lock(name, 0o600, wait_s=2.0, clock=lambda: now[0], sleep=sleep)
    assert 102.0 <= now[0] < 102.0 + 2 * max(naps), now[0]
    assert len(naps) > 10  # polled through the wait, not one sleep of the whole bound


def test_a_live_server_is_refused_at_once(
    echo_server: EchoProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_start_lock, "DYING_WAIT_S", 60.0)
    begun = time.monotonic()
    with pytest.raises(ServerNameTaken) as refused:
        ShmServer(name, EchoHandler(), channels=1)
    assert time.monotonic() - begun < 5
    assert str(refused.value) == (
        f"a live shm server (pid {echo_server.pid}) already serves {name!r} (it holds "
        f"/dev/shm/fdn-{name}.lock): stop it first, or serve under another name"
    )
    assert (refused.value.name, refused.value.pid) == (name, echo_server.pid)
    assert refused.value.lock_file == f"/dev/shm/fdn-{name}.lock"
    assert isinstance(refused.value, FileExistsError)  # what check_serve's contract names


def test_a_start_refused_by_a_server_whose_header_is_not_written_yet_names_no_pid(name: str) -> None:
    """The lock held by a server that has just taken the name (no region header yet, or a dead
    predecessor's): no pid is known, and none is made up."""
    holder = take_server_lock(name, 0o600)
    try:
        with pytest.raises(
            ServerNameTaken, match=r"^another shm server \(starting: its region names no pid"
        ) as got:
            ShmServer(name, EchoHandler(), channels=1)
        assert got.value.pid == 0 and got.value.name == name
    finally:
        holder.release()


def test_a_zombie_of_another_start_time_is_no_killed_server_of_the_region(
    echo_server: EchoProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The region's pid a zombie, but not of the region's start time (the pid reused since by a
    process that died too): that zombie is not the server the region names, and the lock's
    holder is no killed server of it (a server that has just taken the name, its header not yet
    written): the start is refused at once, not kept waiting, and ``check_serve`` refuses."""

    def read_region_reused(server: str) -> dict[str, Any]:
        region = read_region(server)
        return {**region, "started": region["started"] + 1}

    def sleep(_: float) -> None:
        pytest.fail("waited for the lock of a zombie that is not the region's server")

    monkeypatch.setattr(_start_lock, "read_region", read_region_reused)
    monkeypatch.setattr(_transport, "read_region", read_region_reused)
    with dying(echo_server):
        with pytest.raises(
            ServerNameTaken,
            match=r"^another shm server \(starting: its region names no pid yet\) already serves",
        ):
            take_server_lock(name, 0o600, wait_s=60.0, sleep=sleep)
        with pytest.raises(ServerNameTaken, match=r"^another shm server \(starting: its region names no pid"):
            ShmTransport().check_serve(name)  # (it named the zombie's pid: no server's)


def test_a_server_that_takes_the_name_during_the_wait_is_refused_at_once(
    echo_server: EchoProcess, name: str
) -> None:
    """Two starts after a kill: the one that gets the lock first serves, the other is refused as
    by any live server, not kept waiting for a bound that no longer applies."""
    others: list[ShmServer] = []

    def sleep(_: float) -> None:
        assert not others, "still waiting once another server took the name"
        let_go()
        others.append(ShmServer(name, EchoHandler(), channels=1))

    try:
        with dying(echo_server) as let_go:
            with pytest.raises(ServerNameTaken, match=r"a live shm server \(pid \d+\) already serves") as got:
                take_server_lock(name, 0o600, wait_s=60.0, sleep=sleep)
            assert got.value.pid == os.getpid()  # the server that took the name meanwhile
            assert read_region(name)["pid"] != echo_server.pid
    finally:
        for server in others:
            server.stop()


def test_a_killed_server_reaped_as_the_start_looks_is_no_refusal(
    echo_server: EchoProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock held at the start's try, then let go and the zombie reaped before the start reads
    the region: the pid is no zombie any more, yet no server holds the lock; one more try takes it."""

    def read_region_reaped(server: str) -> dict[str, Any]:
        let_go()
        echo_server.kill()  # reaped by its parent
        return read_region(server)

    monkeypatch.setattr(_start_lock, "read_region", read_region_reaped)
    with dying(echo_server) as let_go:
        lock = take_server_lock(name, 0o600, wait_s=60.0)
        lock.release()
    assert lock.path == L.lock_file(name)


def test_check_serve_lets_a_start_wait_for_a_killed_servers_lock(echo_server: EchoProcess, name: str) -> None:
    """``foundation serve`` asks ``check_serve`` before it loads its models: right after a kill it
    said 'a live shm server (pid N) already serves', the server dead; serve waits for it instead."""
    with dying(echo_server):
        ShmTransport().check_serve(name)
    server = ShmTransport().serve(name, EchoHandler(), channels=1)
    try:
        with pytest.raises(FileExistsError, match="already serves"):  # a live server: still refused
            ShmTransport().check_serve(name)
    finally:
        server.stop()
