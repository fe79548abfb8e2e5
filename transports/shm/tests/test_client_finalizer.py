"""A client dropped without ``close()`` gives its channels back, as an unclosed file is closed:
against a real server process, more dropped clients than the server has channels leave them all
free, unmap and unlink what they held, warn ``ResourceWarning``, and never free a channel that is
not theirs (after ``close()``, in a forked child, while the thread holds the region mutex)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Callable

import numpy as np
import posix_ipc
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._objects import objects_of
from foundation_shm._segments import Segment

from foundation_ml import InferenceClient, InferenceRequest, TransportClient
from foundation_ml.errors import Overloaded

from .conftest import EchoProcess, until

X = np.arange(6, dtype=np.float32).reshape(2, 3)


def _echo(client: TransportClient, x: np.ndarray = X) -> None:
    out = client.infer(InferenceRequest("echo", {"x": x}), timeout=5)
    np.testing.assert_array_equal(out.outputs["x"], x)


def _owners(name: str) -> list[int]:
    """The owner pid of each claimed channel of server ``name`` now (from its region)."""
    ctl = Segment.open(L.control_name(name))
    try:
        words = (L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + L.ChannelField.OWNER_PID for i in range(64))
        return [pid for pid in (ctl.u32[w // 4] for w in words if w + 4 <= ctl.size) if pid]
    finally:
        ctl.close()


def _data_segments(name: str) -> list[str]:
    return [o for o in objects_of(name) if o.startswith(f"fdn-{name}-d")]


def _mapped(name: str) -> list[str]:
    """What of server ``name`` this process still maps: segments, and semaphores (glibc maps
    each named semaphore once while any handle to it is open)."""
    with open("/proc/self/maps") as f:
        return [
            line.split(maxsplit=5)[-1].strip()
            for line in f
            if f"/dev/shm/fdn-{name}" in line or f"sem.fdn-{name}-" in line
        ]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_more_dropped_clients_than_channels_leave_every_channel_free(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """A web handler that makes a client per request and forgets ``close()``: with 4 channels,
    the 5th client found none before the fix."""
    echo_process("--channels", "4")
    for _ in range(12):
        client = ShmTransport().connect(name)
        _echo(client)  # outputs are views: the thread holds the channel, the client is dropped anyway
        del client
        assert _owners(name) == []
        assert _data_segments(name) == []
    clients = [ShmTransport().connect(name) for _ in range(4)]  # every channel is claimable again
    for client in clients:
        _echo(client)
    with pytest.raises(Overloaded, match="all 4 channels are in use"):
        ShmTransport().connect(name)  # and what it opened is closed again
    for client in clients:
        client.close()
    assert _owners(name) == []
    assert _mapped(name) == []  # closed: unmapped, though the clients are still referenced


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_dropped_client_frees_its_channel_in_the_region_and_unlinks_its_segments(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    server = echo_process("--channels", "2")
    client = ShmTransport().connect(name, channels=2)
    _echo(client)
    big = np.ones((1 << 19,), np.float32)  # 2 MiB: the channel grows (a new data segment)
    _echo(client, big)
    assert _owners(name) == [os.getpid()]
    assert len(_data_segments(name)) == 1
    del client
    assert _owners(name) == []
    assert _data_segments(name) == []
    assert _mapped(name) == []  # control and data segments unmapped, semaphores closed
    server.stop()
    assert objects_of(name) == []


def test_a_dropped_client_warns_resourcewarning_and_a_closed_one_does_not(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    echo_process("--channels", "2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ShmTransport().connect(name) as client:
            _echo(client)
        del client
        closed = ShmTransport().connect(name)
        closed.close()
        closed.close()
        del closed
        assert caught == []
        dropped = ShmTransport().connect(name)
        _echo(dropped)
        del dropped  # the warning points at the line that dropped it, as a file's does
    assert [(w.category, w.filename) for w in caught] == [(ResourceWarning, __file__)]
    assert f"shm client of {name!r} was not closed" in str(caught[0].message)
    assert _owners(name) == []


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_the_finalizer_holds_no_reference_to_the_client(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The client goes the moment its last reference does; one in a reference cycle goes at the
    next collection: neither is kept alive by what gives its channel back."""
    echo_process("--channels", "2")
    client = ShmTransport().connect(name)
    _echo(client)
    ref = weakref.ref(client)
    del client
    assert ref() is None and _owners(name) == []

    gc.disable()
    try:
        client = ShmTransport().connect(name)
        _echo(client)
        client.cycle = client
        ref = weakref.ref(client)
        del client
        assert ref() is not None and _owners(name) != []
        gc.collect()
        assert ref() is None and _owners(name) == []
    finally:
        gc.enable()


def test_a_closed_client_dropped_later_frees_nothing_of_the_next_owner(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """After ``close()`` the server's only channel goes to another client of this same process;
    dropping the closed one must not free it."""
    echo_process("--channels", "1")
    first = ShmTransport().connect(name)
    _echo(first)
    first.close()
    second = ShmTransport().connect(name)
    _echo(second)
    del first
    gc.collect()
    _echo(second)
    with pytest.raises(Overloaded, match="all 1 channels are in use"):
        ShmTransport().connect(name)
    second.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_client_collected_inside_another_clients_claim_does_not_wait_for_the_mutex(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The garbage collector may finalize a client while its thread holds the region mutex,
    claiming a channel for another client of the same server: waiting for the mutex there would
    wait for itself (``connect_timeout``, then leave the channel claimed for good). The finalizer
    marks the channel for the server to reclaim instead, which it does within a heartbeat."""
    import foundation_shm._ownership as ownership_module
    import foundation_shm._pool as pool_module

    echo_process("--channels", "4")
    gc.disable()
    try:
        garbage = ShmTransport().connect(name, connect_timeout=60.0)
        _echo(garbage)
        garbage.cycle = garbage
        ref = weakref.ref(garbage)
        del garbage
        own_start_time = ownership_module.own_start_time

        def collecting() -> int:  # called with the region mutex held
            gc.collect()
            return int(own_start_time())

        # the finalizer's own time: the connect around it also collects this process's whole
        # heap and claims a channel, which on a loaded machine alone took more than a second
        shut, finalized = pool_module.ChannelPool._shut, []
        release, mutex_waits = pool_module.release_channels, []

        def timed(pool: pool_module.ChannelPool, wait: float | None) -> bool:
            t0 = time.monotonic()
            try:
                return shut(pool, wait)
            finally:
                finalized.append(time.monotonic() - t0)

        def releasing(conn: object, channels: object, busy: object, wait: float) -> None:
            mutex_waits.append(wait)
            release(conn, channels, busy, wait)  # type: ignore[arg-type]

        monkeypatch.setattr(ownership_module, "own_start_time", collecting)
        monkeypatch.setattr(ownership_module, "_SAME_PROCESS_WAIT", 60.0)  # no wait at all: none of it
        monkeypatch.setattr(pool_module.ChannelPool, "_shut", timed)
        monkeypatch.setattr(pool_module, "release_channels", releasing)
        other = ShmTransport().connect(name, connect_timeout=60.0)
        assert ref() is None
        assert mutex_waits == [0.0], mutex_waits  # the finalizer tried the mutex, no more
        # and waited for nothing else: not connect_timeout, a minute (a one-second bound on the
        # finalizer's work, against a 5 s connect_timeout, left a loaded machine too little room)
        assert len(finalized) == 1 and finalized[0] < 30.0, finalized
        monkeypatch.undo()
    finally:
        gc.enable()
    _echo(other)
    assert until(lambda: _owners(name) == [os.getpid()]), _owners(name)
    other.close()
    assert _owners(name) == [] and _data_segments(name) == []


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_client_dropped_while_another_thread_of_its_process_holds_the_mutex_waits_briefly(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mutex held in this process (as a server in this process holds it while reclaiming,
    perhaps on this very thread): the finalizer waits a moment, not ``connect_timeout``, then
    marks the channel for the server, which reclaims it once the mutex is free."""
    import foundation_shm._ownership as ownership_module
    import foundation_shm._pool as pool_module

    echo_process("--channels", "2")
    client = ShmTransport().connect(name, connect_timeout=60.0)
    _echo(client)
    waits: list[float] = []  # how long the finalizer waits for the mutex (a bound on how long
    release = pool_module.release_channels  # the drop took failed when loaded)

    def recorded(conn: object, channels: object, busy: object, wait: float) -> None:
        waits.append(wait)
        release(conn, channels, busy, wait)  # type: ignore[arg-type]

    monkeypatch.setattr(pool_module, "release_channels", recorded)
    mutex = posix_ipc.Semaphore(L.mutex_name(name))
    ctl = Segment.open(L.control_name(name))
    holder = L.RegionField.MUTEX_HOLDER // 4
    mutex.acquire(30.0)
    ctl.u32[holder] = os.getpid()
    try:
        del client
        assert waits == [ownership_module._SAME_PROCESS_WAIT]  # a moment, not the 60 s connect_timeout
        assert _owners(name) == [os.getpid()]  # marked, not yet reclaimed: the mutex is ours
    finally:
        ctl.u32[holder] = 0
        mutex.release()
        mutex.close()
        ctl.close()
    assert until(lambda: _owners(name) == []), _owners(name)
    assert _data_segments(name) == []


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_clients_dropped_on_other_threads_leave_a_client_mid_call_undisturbed(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Finalizers run on whatever thread collects (here several, dropping clients in cycles and
    collecting) while another client's calls run: those calls all get their own answers."""
    echo_process("--channels", "32")  # fewer than the 45 clients the churners drop
    busy = ShmTransport().connect(name, channels=2)
    stop = threading.Event()
    errors: list[BaseException] = []
    calls = [0]

    def call() -> None:
        try:
            i = 0
            while not stop.is_set():
                _echo(busy, X + i)
                i += 1
            calls[0] += i
        except BaseException as exc:
            errors.append(exc)

    def churn() -> None:
        try:
            for _ in range(15):
                c = ShmTransport().connect(name)
                _echo(c)
                c.cycle = c
                del c
                gc.collect()
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call) for _ in range(2)]
    churners = [threading.Thread(target=churn) for _ in range(3)]
    for t in callers + churners:
        t.start()
    for t in churners:
        t.join()
    stop.set()
    for t in callers:
        t.join()
    assert errors == []
    assert calls[0] > 0
    gc.collect()  # only `busy` holds channels (one per calling thread) once the server reclaimed
    assert until(lambda: len(_owners(name)) <= 2), _owners(name)  # those marked for it
    busy.close()
    assert _owners(name) == []


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_a_forked_child_never_frees_the_parents_channels(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """In the child, a fork hook that collects garbage before the pools forget the parent's
    channels finalizes a parent's client (garbage in a cycle); later the child drops a client it
    inherited and used (claiming a channel of its own). Only the child's channel is freed; the
    parent's two stay its own, then go when the parent drops them."""
    echo_process("--channels", "4")
    done = _run(f"""
        import gc, os, warnings
        import numpy as np
        warnings.simplefilter("ignore", ResourceWarning)
        gc.disable()
        os.register_at_fork(after_in_child=gc.collect)  # before foundation_shm registers its hook
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport
        from foundation_shm import _layout as L
        from foundation_shm._segments import Segment

        def owners():
            ctl = Segment.open(L.control_name({name!r}))
            at = (L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + L.ChannelField.OWNER_PID for i in range(4))
            found = sorted(ctl.u32[w // 4] for w in at if ctl.u32[w // 4])
            ctl.close()
            return found

        def echo(client):
            x = np.ones(4, np.float32)
            assert (client.infer(InferenceRequest("echo", {{"x": x}}), timeout=5).outputs["x"] == x).all()

        kept = ShmTransport().connect({name!r})
        echo(kept)
        garbage = ShmTransport().connect({name!r})
        echo(garbage)
        garbage.cycle = garbage
        del garbage  # unreachable, not collected (gc disabled)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                echo(kept)  # the child's own channel
                mine = owners()
                del kept
                ok = mine == sorted([parent, parent, os.getpid()]) and owners() == [parent] * 2
                os._exit(0 if ok else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        echo(kept)
        before = owners() == [parent] * 2
        gc.collect()  # the parent's garbage client gives its channel back here
        kept_only = owners() == [parent]
        del kept
        print(code, before, kept_only, owners())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["0", "True", "True", "[]"]
    assert _data_segments(name) == []


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_inference_clients_dropped_without_close_free_their_channels(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """``InferenceClient`` holds its transport client and ``ainfer``'s threads only: dropped, the
    shm client under it gives its channels back and the threads end."""
    import asyncio

    echo_process("--channels", "3")
    threads_before = threading.active_count()
    for _ in range(8):
        client = InferenceClient(name, transport="shm", timeout=5)
        out = asyncio.run(client.ainfer("echo", {"x": X}))
        np.testing.assert_array_equal(out["x"], X)
        del client  # the last reference may be the executor thread's, dropped just after the call
        assert until(lambda: _owners(name) == []), _owners(name)
    assert until(lambda: threading.active_count() <= threads_before)
    with InferenceClient(name, transport="shm", timeout=5) as client:
        np.testing.assert_array_equal(client.infer("echo", {"x": X})["x"], X)
