"""Long runs leave nothing behind: after hundreds of cycles (connect and close, calls that fail,
loans, servers started and stopped, clients killed mid-request) this process's file descriptors,
shared-memory mappings and threads, the server's, its slot table, /dev/shm and the C hot path's
reference counts are what they were before. Counts, never timings: a leak of one object per
cycle shows as a count that grew."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._accel import hot
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import objects_of
from foundation_shm._region import read_region
from foundation_shm._server import ShmServer

from foundation_ml import DataType, InferenceRequest
from foundation_ml.errors import InferenceError

from .conftest import EchoProcess, until

X = np.arange(6, dtype=np.float32)


def _fds(pid: int | str = "self") -> int:
    """Open descriptors, but those of /proc (a server's heartbeat reads /proc/PID/stat, and
    this count lists /proc/PID/fd: each open for a moment)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/proc/")
        except FileNotFoundError:  # closed since the listing
            pass
    return count


def _maps(pid: int | str = "self") -> int:
    """Mappings of /dev/shm (segments, and semaphores: glibc maps each one once)."""
    with open(f"/proc/{pid}/maps") as f:
        return sum("/dev/shm/" in line for line in f)


def _mapped(text: str) -> list[str]:
    """This process's mappings whose line holds ``text``."""
    with open("/proc/self/maps") as f:
        return [line for line in f if text in line]


def _threads(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _guards_used() -> int:
    """Slots of the C hot path's SIGBUS guard in use (a fixed table: a slot never given back
    leaves later mappings unguarded)."""
    assert hot is not None
    probe, slots = bytearray(4096), []
    while (slot := hot.guard(probe)) >= 0:
        slots.append(slot)
    for slot in slots:
        hot.unguard(slot)
    return 8192 - len(slots)


def _counts(name: str, server_pid: int | None = None) -> dict[str, int]:
    gc.collect()
    counts = {"fds": _fds(), "maps": _maps(), "threads": _threads(), "objects": len(objects_of(name))}
    if hot is not None:
        counts["guards"] = _guards_used()
    if server_pid is not None:
        counts |= {"server fds": _fds(server_pid), "server maps": _maps(server_pid)}
        counts["server threads"] = _threads(server_pid)
    return counts


def _settled(name: str, before: dict[str, int], server_pid: int | None = None) -> dict[str, int]:
    """The counts once they are back where they were (a server unmaps a client's segment at its
    next scan, and reaps a dead one at its next heartbeat), or as they are after a minute."""
    until(lambda: _counts(name, server_pid) == before)
    return _counts(name, server_pid)


def test_a_closed_client_unmaps_its_channels_while_it_is_still_referenced(
    name: str, echo_server: EchoProcess
) -> None:
    """``close()`` left each channel's data segment mapped (a descriptor open, its 2 MiB of
    /dev/shm allocated though unlinked) for as long as the client object lived: the channel's
    response reader kept its cached outputs, views on the segment. 50 closed clients kept in a
    list held 50 descriptors and 100 MiB."""
    segments = f"/fdn-{name}-d"  # this server's data segments, as this process maps them

    def held() -> dict[str, int]:
        fds = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds += segments in os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:  # closed since the listing
                pass
        return {"maps": len(_mapped(segments)), "fds": fds}

    # counted by name: what another test left in this process (a thread, a server) is not these
    before = _counts(name, echo_server.pid)
    kept = []
    for _ in range(50):
        client = ShmTransport().connect(name)
        client.infer(InferenceRequest("echo", {"x": X}))  # views: this thread keeps the channel
        client.close()
        kept.append(client)
        assert held() == {"maps": 0, "fds": 0}
    settled = _settled(name, before, echo_server.pid)
    assert {k: v for k, v in settled.items() if k.startswith("server")} == {
        k: v for k, v in before.items() if k.startswith("server")
    }


def test_the_server_unmaps_the_segment_of_a_client_that_left(name: str, echo_server: EchoProcess) -> None:
    """The serving loop kept the last request's reader in a local variable across its idle
    wait: the reader's views of the request area kept the departed client's data segment
    mapped in the server (its descriptor open, its pages allocated though unlinked: as large
    as the client's largest request) until another request came."""
    before = _counts(name, echo_server.pid)
    with ShmTransport().connect(name) as client:
        big = np.zeros(1 << 19, np.float32)  # 2 MiB: the channel grows to a larger segment
        for _ in range(3):  # a repeated request: the loop's cached-decoding lane
            client.infer(InferenceRequest("echo", {"x": big}), copy_outputs=True)
    assert _settled(name, before, echo_server.pid) == before
    with open(f"/proc/{echo_server.pid}/maps") as f:
        assert [line for line in f if f"fdn-{name}-d" in line] == []


def test_closing_a_client_unmaps_the_channels_its_threads_keep_for_views(
    name: str, echo_server: EchoProcess
) -> None:
    """Threads that got views keep a channel each until their next call; ``close()`` retires
    those channels, and their segments must go with them while the threads live on."""
    client = ShmTransport().connect(name, channels=8)
    client.infer(InferenceRequest("echo", {"x": X}), copy_outputs=True)
    done, called = threading.Event(), threading.Barrier(9)

    def call_and_wait() -> None:
        client.infer(InferenceRequest("echo", {"x": X}))
        called.wait()
        done.wait()

    threads = [threading.Thread(target=call_and_wait) for _ in range(8)]
    for t in threads:
        t.start()
    called.wait()
    assert len(_mapped(f"fdn-{name}-d")) == 8
    client.close()
    gc.collect()
    try:
        assert _mapped(f"/dev/shm/fdn-{name}") == []
    finally:
        done.set()
        for t in threads:
            t.join()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_connect_and_close_cycles_leave_both_sides_as_they_were(name: str, echo_server: EchoProcess) -> None:
    """Closed, used as a context manager, dropped unclosed; outputs as views and as copies."""
    request = InferenceRequest("echo", {"x": X})

    def cycle(i: int) -> None:
        how = i % 4
        if how == 0:
            client = ShmTransport().connect(name)
            client.infer(request)
            client.close()
        elif how == 1:
            with ShmTransport().connect(name) as client:
                client.infer(request, copy_outputs=True)
        elif how == 2:
            client = ShmTransport().connect(name)
            client.infer(request)
            del client  # collected: its finalizer gives everything back
        else:
            ShmTransport().connect(name, copy_outputs=True).close()

    for i in range(8):
        cycle(i)
    before = _counts(name, echo_server.pid)
    for i in range(200):
        cycle(i)
    assert _settled(name, before, echo_server.pid) == before
    assert read_region(name)["clients"] == []


@pytest.fixture
def small_server(name: str) -> Iterator[ShmServer]:
    srv = ShmTransport().serve(name, EchoHandler(), channels=4, max_request_bytes=1 << 20)
    yield srv
    srv.stop()


def test_every_failing_call_repeated_leaves_nothing_behind(name: str, small_server: ShmServer) -> None:
    """Each error path of a call, 40 times: no channel, descriptor, mapping or thread more on
    either side (the server runs in this process: its counts are in these)."""
    x = np.zeros(3)
    calls: list[Callable[[Any], object]] = [
        lambda c: c.infer(InferenceRequest("nope", {"x": x})),  # ModelNotFound
        lambda c: c.infer(InferenceRequest("fail", {"x": x})),  # HandlerError
        lambda c: c.infer(InferenceRequest("busy", {"x": x})),  # Overloaded
        lambda c: c.infer(InferenceRequest("echo", {"x": np.zeros(200_000)})),  # TooLarge (server)
        lambda c: c.infer(InferenceRequest("echo", {"x": np.zeros(400_000)})),  # TooLarge (client)
        lambda c: c.infer(InferenceRequest("echo", {"x": np.array([object()])})),  # InvalidInput
        # DeadlineExceeded, the request left with the server (the next call waits for its channel)
        lambda c: c.infer(InferenceRequest("sleep", {"x": x}, parameters={"ms": 20}), timeout=0.002),
        lambda c: c.metadata("nope"),
    ]
    import logging

    # the handler's tracebacks, 60 times, not shown; set (and put back) with setLevel, which
    # clears the loggers' cached levels: a bare .level kept them, and this process's later
    # tests saw no foundation_shm warning or error at all
    quiet = logging.getLogger("foundation_shm")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with ShmTransport().connect(name, channels=1, timeout=5) as client:

            def every(times: int) -> None:
                for _ in range(times):
                    for i, call in enumerate(calls):
                        try:
                            call(client)
                        except InferenceError:
                            continue
                        # a wait woken late may find the answer in (the deadline's call only)
                        assert i == 6, f"call {i} did not fail"

            every(3)
            client.infer(InferenceRequest("echo", {"x": x}))
            before = _counts(name) | {"channels": len(client._pool._all)}
            every(40)
            client.infer(InferenceRequest("echo", {"x": x}))
            assert len(client._pool._all) == before.pop("channels")
            assert _settled(name, before) == before
    finally:
        quiet.setLevel(level)
    # the next tests see this logger as its level says (a stale cache said "off" to them)
    effective = quiet.getEffectiveLevel()
    assert [quiet.isEnabledFor(lv) for lv in (logging.WARNING, logging.ERROR)] == [
        lv >= effective for lv in (logging.WARNING, logging.ERROR)
    ]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_loan_cycles_leave_nothing_behind(name: str, echo_server: EchoProcess) -> None:
    """Loans used, abandoned unsent, dropped unclosed, grown, and their views kept past close."""
    kept: list[object] = []
    with ShmTransport().connect(name) as client:

        def cycle(i: int) -> None:
            n = (8, 300_000)[i % 2] if i % 5 == 4 else 8
            loan = client.loan("echo", {"x": (DataType.FP32, (n,))})
            loan["x"][:] = i
            if i % 5 == 1:
                loan.close()  # abandoned, never sent
                return
            response = loan.infer()
            if i % 5 == 2:
                del loan  # dropped: its finalizer gives the channel back
                return
            if i % 5 == 3:
                kept[:] = [loan["x"], response.outputs["x"]]
            loan.close()

        for i in range(10):
            cycle(i)
        kept.clear()
        before = _counts(name, echo_server.pid)
        for i in range(300):
            cycle(i)
        kept.clear()
        assert _settled(name, before, echo_server.pid) == before


def test_serving_and_stopping_in_a_loop_leaves_this_process_as_it_was(name: str) -> None:
    def cycle() -> None:
        server = ShmTransport().serve(name, EchoHandler(), channels=4)
        with ShmTransport().connect(name) as client:
            client.infer(InferenceRequest("echo", {"x": X}))
        server.stop()

    cycle()
    before = _counts(name)
    for _ in range(100):
        cycle()
    # settled: a joined thread's task is listed in /proc until the thread has quite exited
    assert _settled(name, before) == before
    assert objects_of(name) == []


def test_clients_killed_mid_request_leave_the_server_as_it_was(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Clients SIGKILLed while their requests are with the server (or being answered): it
    reclaims every channel and unlinks every data segment; its descriptors, mappings and
    threads come back to what they were."""
    server = echo_process("--channels", "4")

    def killed(i: int) -> None:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(ready_r)
                client = ShmTransport().connect(name, channels=1)
                client.infer(InferenceRequest("echo", {"x": X}))
                os.write(ready_w, b"x")
                big = np.zeros(100_000 if i % 2 else 10)
                request = InferenceRequest("sleep" if i % 3 else "echo", {"x": big}, parameters={"ms": 2})
                while True:
                    client.infer(request)
            finally:
                os._exit(1)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        time.sleep(0.001 * (i % 4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def server_maps_no_client() -> bool:
        with open(f"/proc/{server.pid}/maps") as f:
            return read_region(name)["clients"] == [] and not any(f"fdn-{name}-d" in line for line in f)

    for i in range(4):
        killed(i)
    assert until(server_maps_no_client)
    before = _counts(name, server.pid)
    for i in range(60):
        killed(i)
    assert until(lambda: read_region(name)["clients"] == [])
    assert _settled(name, before, server.pid) == before
    with ShmTransport().connect(name, channels=4) as client:  # every channel claimable again
        client.infer(InferenceRequest("echo", {"x": X}))


def _here(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still held that were allocated from this file's lines: what the C functions called
    here allocate counts (it is traced to the calling line), while another thread's allocations
    (an earlier test's server or logging thread still winding down) do not."""
    mine = snapshot.filter_traces([tracemalloc.Filter(True, __file__)])
    return sum(stat.size for stat in mine.statistics("filename"))


@pytest.mark.skipif(hot is None, reason="the C hot path is not built")
def test_the_hot_paths_calls_keep_reference_counts_and_memory_as_they_were() -> None:
    """10 000 calls of each C function, returning results and raising: the arguments'
    reference counts do not move and traced memory does not grow by an object per call."""
    assert hot is not None
    ctl, req, resp = bytearray(4096), bytearray(65536), bytearray(65536)
    a = np.ones(10, np.float32)
    dst = np.frombuffer(req, np.float32, 10, 1024)
    out = np.frombuffer(resp, np.float32, 10, 1024)
    dst[:], out[:] = a, a
    marked = np.zeros(4, DataType.BF16.numpy)
    hot.seal(req, 1, 7, 2000, 0)
    hot.seal(resp, 2, 7, 2000, 0)
    cached, rcached, other = bytes(req[32:2032]), bytes(resp[32:2032]), bytes(2000)
    words = memoryview(ctl).cast("Q")
    dsts, srcs, outs, inputs = [dst], [a], [out], {"x": a}
    args = [ctl, req, resp, a, dst, out, marked, cached, rcached, other, dsts, srcs, outs, inputs]

    def pending() -> None:
        words[1], words[2] = 5, 0

    def answered() -> None:
        words[2] = 9

    def exchange(area: bytearray | bytes, dsts: Any, srcs: Any, payload: int = 2000) -> object:
        return hot.exchange(ctl, area, resp, dsts, srcs, 7, payload, 0, 1, 9, 20, 2, 0, 0, rcached)

    calls: list[tuple[Callable[[], None] | None, Callable[[], object], object]] = [
        (None, lambda: hot.repeat(req, 65536, cached, 80, 88), (1, 7, 0, 0)),
        (None, lambda: hot.repeat(req, 65536, other, 0, 0), None),
        (pending, lambda: hot.take(ctl, req, cached, 65536, 1, 2, 6, 4, 0), (5, 7, 0)),
        (answered, lambda: exchange(req, dsts, srcs), 0),
        (None, lambda: exchange(req, dsts, [marked]), -1),
        (pending, lambda: hot.answer(ctl, resp, outs, srcs, 7, 2000, 1, 2, 5, 6, 4, 20), 0),
        (pending, lambda: hot.answer(ctl, resp, outs, [np.ones(3)], 7, 2000, 1, 2, 5, 6, 4, 20), None),
        (None, lambda: hot.fill(dsts, inputs.values()), True),
        (None, lambda: hot.fill([marked], [np.zeros(4, np.uint16)]), False),
        (None, lambda: hot.poll(ctl, [1, 3], [2, 4], [30, 31], 0, 0, 0, 0, 0), 0),
        (None, lambda: hot.publish(ctl, 1, 5, 3), False),
        (None, lambda: hot.unguard(hot.guard(ctl)), None),
        # errors: each raises after taking (some of) its buffers and sequences
        (None, lambda: hot.poll(ctl, [1, 3], [2, 4], [30, "x"], 0, 0, 0, 0, 0), TypeError),
        (None, lambda: hot.poll(ctl, [1, 3], [2, 10**6], [30, 31], 0, 0, 0, 0, 0), IndexError),
        (None, lambda: hot.poll(ctl, [1, 3], [2, 4], [30], 0, 0, 0, 0, 0), ValueError),
        (None, lambda: exchange(req, dsts, srcs, payload=2), IndexError),
        (None, lambda: exchange(req, 5, srcs), TypeError),
        (None, lambda: exchange(cached, dsts, srcs), BufferError),  # a read-only request area
        (pending, lambda: hot.answer(ctl, resp, 5, srcs, 7, 2000, 1, 2, 5, 6, 4, 20), TypeError),
        (pending, lambda: hot.take(ctl, req, cached, 65536, 10**6, 2, 6, 4, 0), IndexError),
        (None, lambda: hot.fill(dsts, 5), TypeError),
        (None, lambda: hot.seal(req, 1, 7, 10**6, 0), IndexError),
    ]

    def once(prepare: Callable[[], None] | None, call: Callable[[], object]) -> object:
        if prepare is not None:
            prepare()
        try:
            return call()
        except Exception as exc:
            return type(exc)

    for prepare, call, expect in calls:
        assert once(prepare, call) == expect
        for _ in range(100):
            once(prepare, call)
        gc.collect()
        counts = [sys.getrefcount(o) for o in args]
        tracemalloc.start()
        try:
            start = _here(tracemalloc.take_snapshot())
            for _ in range(10_000):
                once(prepare, call)
            grown = _here(tracemalloc.take_snapshot()) - start
        finally:
            tracemalloc.stop()
        assert [sys.getrefcount(o) for o in args] == counts, call
        assert grown < 10_000, (call, grown)  # an object kept per call would be >= 10 000 x 28 bytes


def test_a_client_whose_server_restarts_keeps_no_mapping_of_the_old_one(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """A server killed and started again under its name, 8 times, under one client that keeps
    calling (its first call after each restart fails ServerUnavailable, the next reconnects)."""
    server = echo_process("--channels", "4")
    client = ShmTransport().connect(name, timeout=5)

    def restart() -> None:
        nonlocal server
        client.infer(InferenceRequest("echo", {"x": X}))  # views: the thread keeps the channel
        server.kill()
        for pipe in (server.proc.stdout, server.proc.stderr):
            assert pipe is not None
            pipe.close()  # the test's own descriptors, not the client's
        server = echo_process("--channels", "4")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                client.infer(InferenceRequest("echo", {"x": X}))
            except InferenceError:
                pass  # ServerUnavailable: the old server is gone; the next call reconnects
        client.infer(InferenceRequest("echo", {"x": X}))

    try:
        restart()
        before = _counts(name) | {"channels": len(client._pool._all)}
        for _ in range(8):
            restart()
        assert _counts(name) | {"channels": len(client._pool._all)} == before
    finally:
        client.close()
