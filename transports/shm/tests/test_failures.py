"""Failure injection into the shm server: a handler that raises anything, a serving loop that
dies, a region mutex left taken by no one, a /dev/shm without room, segments left behind."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import posix_ipc
import pytest
from foundation_shm import ShmTransport, _accel, _segments
from foundation_shm import _layout as L
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import objects_of, remove_objects
from foundation_shm._server import ShmServer

from foundation_ml import InferenceRequest, Respond
from foundation_ml.errors import HandlerError, Overloaded, ServerUnavailable, TooLarge

from .conftest import EchoProcess, until


class RaisingHandler(EchoHandler):
    """The echo handler, except that model "raise" raises the exception it was given."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model == "raise":
            raise self.exc
        super().__call__(request, respond)


@pytest.mark.parametrize(
    "exc", [SystemExit(3), KeyboardInterrupt("handler"), GeneratorExit()], ids=lambda e: type(e).__name__
)
def test_a_handler_raising_a_base_exception_fails_one_request_and_the_loop_serves_on(
    name: str, exc: BaseException
) -> None:
    server = ShmTransport().serve(name, RaisingHandler(exc), channels=2)
    try:
        x = np.arange(4.0)
        with ShmTransport().connect(name, timeout=10) as client:
            with pytest.raises(HandlerError, match=type(exc).__name__):
                client.infer(InferenceRequest("raise", {"x": x}))
            resp = client.infer(InferenceRequest("echo", {"x": x}))
            np.testing.assert_array_equal(resp.outputs["x"], x)
        assert server.failed is None
    finally:
        server.stop()


@pytest.fixture
def dying_server(name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShmServer]:
    def die(self: ShmServer) -> None:
        raise KeyboardInterrupt("injected")

    monkeypatch.setattr(ShmServer, "_serve_loop", die)
    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=50)
    yield server
    server.stop(0.1)


def test_a_serving_loop_that_dies_says_so_and_clients_are_told(dying_server: ShmServer, name: str) -> None:
    deadline = time.monotonic() + 60  # where a loop that never dies is given up on
    while dying_server.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(dying_server.failed, KeyboardInterrupt)
    with pytest.raises(ServerUnavailable):
        with ShmTransport().connect(name, timeout=2) as client:
            client.infer(InferenceRequest("echo", {"x": np.arange(2.0)}))


def test_an_echo_server_whose_serving_loop_dies_stops_and_exits_1_saying_why(name: str) -> None:
    """The test echo server (that the Rust, Go and C suites start) waited for a stop signal only:
    with its serving loop dead it kept running, its region STOPPED, until its parent gave up. It
    stops, removes its objects and exits 1; its stderr has the loop's traceback."""
    code = (
        "import sys\n"
        "from foundation_shm._server import ShmServer\n"
        "def die(self):\n"
        "    raise RuntimeError('injected into the serving loop')\n"
        "ShmServer._serve_loop = die\n"
        "from foundation_shm._echo import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=60)  # where a server that never exits is given up on
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            remove_objects(name)
    assert out == "ready\n"
    assert proc.returncode == 1, err
    assert "the serving loop died: RuntimeError('injected into the serving loop')" in err
    assert "Traceback" in err and "stopped, its serving loop having died" in err
    assert objects_of(name) == []


def _data_segments(name: str) -> list[str]:
    return sorted(e for e in os.listdir("/dev/shm") if e.startswith(f"fdn-{name}-d"))


@pytest.fixture
def echo(name: str) -> Iterator[ShmServer]:
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    yield server
    server.stop()


def _echo_once(name: str, **options: object) -> None:
    x = np.arange(4.0)
    with ShmTransport().connect(name, timeout=5, **options) as client:
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)


def test_a_capacity_dev_shm_can_never_hold_is_too_large_and_the_next_claim_works(
    echo: ShmServer, name: str
) -> None:
    room = os.statvfs("/dev/shm")
    capacity = 1 << 46
    if capacity * 2 <= room.f_blocks * room.f_frsize:
        pytest.skip("/dev/shm is larger than 2**47 bytes")
    with pytest.raises(TooLarge, match=f"capacities {capacity}\\+{capacity} bytes.*/dev/shm"):
        _echo_once(name, capacity=capacity, max_response_bytes=capacity)
    assert _data_segments(name) == []
    _echo_once(name)  # the same process claims again


_MORE_ROOM = r"bytes free\); give /dev/shm more room \(docker run --shm-size=1g"


def test_no_room_in_dev_shm_is_overloaded_naming_the_segment_and_nothing_is_left(
    echo: ShmServer, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, size: int) -> int:
        return errno.ENOSPC

    monkeypatch.setattr(_segments, "_fallocate", full)
    with pytest.raises(
        Overloaded,
        match=rf"no room: cannot allocate shared memory segment /fdn-{name}-d0-.* of \d+ bytes in /dev/shm.*"
        + _MORE_ROOM,
    ):
        _echo_once(name)
    assert _data_segments(name) == []
    monkeypatch.undo()
    _echo_once(name)


def test_a_server_without_room_for_its_control_segment_says_so_and_leaves_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, size: int) -> int:
        return errno.ENOSPC

    monkeypatch.setattr(_segments, "_fallocate", full)
    with pytest.raises(
        OSError, match=rf"segment /fdn-{name} of \d+ bytes in /dev/shm: .*{_MORE_ROOM}"
    ) as err:
        ShmTransport().serve(name, EchoHandler(), channels=2)
    assert err.value.errno == errno.ENOSPC
    assert objects_of(name) == []


def test_a_server_without_room_for_a_semaphore_says_so_and_leaves_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each semaphore is a page of /dev/shm: a full one failed the start with a bare
    '[Errno 28] No space left on device', naming neither the object nor /dev/shm."""
    real = posix_ipc.Semaphore

    def semaphore(sem_name: str, *args: object, **kwargs: object) -> posix_ipc.Semaphore:
        if sem_name == L.channel_sem_name(name, 1):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(sem_name, *args, **kwargs)

    monkeypatch.setattr(_segments.posix_ipc, "Semaphore", semaphore)
    with pytest.raises(OSError, match=rf"semaphore /fdn-{name}-c1 .* in /dev/shm: .*{_MORE_ROOM}") as err:
        ShmTransport().serve(name, EchoHandler(), channels=3)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert objects_of(name) == []


def test_segments_are_allocated_not_sparse(echo: ShmServer, name: str) -> None:
    """A sparse segment on a full /dev/shm maps, then SIGBUSes the server at its first write."""
    with ShmTransport().connect(name, timeout=5) as client:
        client.infer(InferenceRequest("echo", {"x": np.arange(2.0)}))
        for entry in [*_data_segments(name), f"fdn-{name}"]:
            st = os.stat(f"/dev/shm/{entry}")
            assert st.st_blocks * 512 >= st.st_size, entry


def test_a_data_segment_of_ours_left_from_a_failed_claim_is_replaced(echo: ShmServer, name: str) -> None:
    stale = posix_ipc.SharedMemory(L.data_name(name, 0, os.getpid(), 1), posix_ipc.O_CREX, size=4096)
    stale.close_fd()
    _echo_once(name)
    assert _data_segments(name) == []


def test_a_region_mutex_held_by_no_one_is_freed_and_clients_connect_again(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client killed between taking the mutex and storing its pid (or between clearing it and
    releasing) leaves it taken with mutex_holder_pid 0: the server frees it after a while."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=20)
    try:
        server.stuck_mutex_s = 0.2
        mutex = posix_ipc.Semaphore(L.mutex_name(name))
        mutex.acquire(30)  # taken, and nobody named as its holder
        mutex.close()
        time.sleep(0.5)
        _echo_once(name, connect_timeout=60)  # the mutex is freed at a beat, however late it comes
        assert "region mutex was held by no one" in caplog.text
    finally:
        server.stop()


def test_a_dead_pid_written_as_holder_of_a_free_mutex_does_not_release_it_again(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each beat "released" it: the mutex became a counting semaphore (value 6 after 5 writes)
    and two clients could hold it, and claim one channel, together."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=20)
    mutex = posix_ipc.Semaphore(L.mutex_name(name))
    try:
        holder = int(L.RegionField.MUTEX_HOLDER) // 4
        for _ in range(3):
            server._ctl.u32[holder] = dead.pid
            # a beat clears the dead pid (and used to post the mutex with it): wait for that
            # beat, however late it comes on a loaded machine, then for a few more
            deadline = time.monotonic() + 10
            while server._ctl.u32[holder] and time.monotonic() < deadline:
                time.sleep(0.005)
            assert server._ctl.u32[holder] == 0
            time.sleep(0.1)  # several beats
            assert mutex.value == 1
        assert "died holding the region mutex" not in caplog.text
        _echo_once(name)
    finally:
        mutex.close()
        server.stop()


def _drain_waits(server: ShmServer, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of ``server.stop()``'s drain loop (its ``time.sleep`` on the stopping thread),
    as they happen: an empty list says the drain saw nothing in flight and did not wait. (A
    bound on how long ``stop()`` took said the same, and failed on a loaded machine.)"""
    from foundation_shm import _server

    waits: list[float] = []
    stopping, real_sleep = threading.get_ident(), time.sleep

    def sleep(seconds: float) -> None:
        if threading.get_ident() == stopping:
            waits.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(_server.time, "sleep", sleep)
    return waits


def test_a_parked_channel_does_not_hold_a_graceful_stop_for_the_whole_drain_timeout(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    ch = server._channels[0]
    server._fail(ch, 1)  # no client's data segment to answer in: the channel is parked (busy)
    assert ch.busy and server.in_flight() == 0
    waits = _drain_waits(server, monkeypatch)
    server.stop(5.0)
    monkeypatch.undo()
    assert waits == []  # nothing in flight: no drain
    assert server.abandoned == 0


def test_a_stop_interrupted_in_its_drain_still_releases_every_object(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    server._channels[0].busy = True  # a request in flight, as far as the drain can tell

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt("a second Ctrl-C")

    monkeypatch.setattr(time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        server.stop(5.0)
    monkeypatch.undo()
    server._channels[0].busy = False
    assert not [e for e in os.listdir("/dev/shm") if name in e]


def test_hurry_ends_a_drain_that_stop_waits_on(name: str) -> None:
    """A second signal (``MLRuntime.hurry``) calls ``hurry()`` on a server whose ``stop()`` waits
    for a request in flight: the drain ends at once, the request is abandoned and every object
    released. (The end-to-end signal tests tell a hurried stop from a timed-out one only by the
    runtime's warning, which names the hurry whether the server honoured it or not.) The drain
    here is 10 minutes, and the stop is waited for one: it ends by the hurry or not at all."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    server._channels[0].busy = True  # a request in flight, as far as the drain can tell
    stopping = threading.Thread(target=server.stop, args=(600.0,))
    try:
        stopping.start()
        deadline = time.monotonic() + 60
        while server._ctl.u32[L.RegionField.STATE // 4] != L.RegionState.STOPPING:
            assert time.monotonic() < deadline, "the stop never began its drain"
            time.sleep(0.001)
        server.hurry()
        stopping.join(60)
        assert not stopping.is_alive(), "hurry() did not end the drain"
        assert server.abandoned == 1
        assert not [e for e in os.listdir("/dev/shm") if name in e]
    finally:
        server._channels[0].busy = False  # a stop still waiting (the failure above) ends now
        stopping.join(60)


def test_a_busy_word_a_client_clears_is_set_again_not_spun_on(name: str) -> None:
    """The busy word is the server's: a client clearing it while its request is held (a batching
    or asynchronous model) made poll find the channel again at once, for ever (100 % CPU)."""
    import threading

    from foundation_ml import InferenceResponse

    held: list[tuple[InferenceRequest, Respond]] = []
    arrived = threading.Event()

    def hold(request: InferenceRequest, respond: Respond) -> None:
        held.append((request, respond))
        arrived.set()

    server = ShmTransport().serve(name, hold, channels=2)
    got: list[object] = []
    try:
        with ShmTransport().connect(name) as client:
            call = threading.Thread(
                target=lambda: got.append(client.infer(InferenceRequest("m", {"x": np.ones(2)}), timeout=10))
            )
            call.start()
            assert arrived.wait(10)
            ch = next(c for c in server._channels if c.busy)
            u32 = server._ctl.u32
            for _ in range(3):
                u32[ch.busy_word] = 0
                deadline = time.monotonic() + 60  # the server's loop may come late, not never
                while u32[ch.busy_word] == 0 and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert u32[ch.busy_word] == 1
            request, respond = held[0]
            respond(InferenceResponse(request.id, "m", {"y": np.zeros(1)}))
            call.join(10)
        assert len(got) == 1
    finally:
        server.stop()


def test_a_data_segment_that_cannot_be_mapped_parks_the_channel_and_a_stop_does_not_wait_for_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client naming a data segment that is not its channel's: there is nowhere to answer. The
    channel stayed busy and unparked, so a graceful stop waited its whole drain timeout (5 s)."""
    from foundation_shm import _vector_messages

    from foundation_ml.errors import DeadlineExceeded

    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    stopped = False
    try:
        with ShmTransport().connect(name, timeout=5) as client:
            ch = client._take(0)
            try:
                ctl, at = ch.conn.ctl, ch.base + L.ChannelField.DATA_NAME
                ctl.buf[at : at + 64] = b"/fdn-not-this-channel".ljust(64, b"\0")
                gen = (ch.base + L.ChannelField.DATA_GEN) // 8
                ctl.u64[gen] += 1
                area = _vector_messages._request(
                    {"x": np.arange(3, dtype=np.int32)}, request_id=7, model="echo"
                )
                ch.wkey = None
                ch.req[: len(area)] = area
                with pytest.raises(DeadlineExceeded):
                    client._exchange(ch, 7, "echo", time.monotonic_ns() + 300_000_000, retry=False)
                # parked in the serving thread's own time: on a loaded machine after the deadline
                assert until(lambda: ch.index in server._parked)
                waits = _drain_waits(server, monkeypatch)
                server.stop(drain_timeout=5.0)
                stopped = True
                monkeypatch.undo()
                assert waits == []  # the parked channel is not in flight: no drain
                assert server.abandoned == 0
            finally:
                client._give(ch)
    finally:
        if not stopped:
            server.stop()


def test_a_data_segment_that_is_a_hard_link_to_another_file_is_not_mapped_or_written(name: str) -> None:
    """A client may name, with its channel's prefix, a hard link to another file in /dev/shm
    (another server's control segment, say): the server wrote its answer into that file."""
    from foundation_shm import _vector_messages

    from foundation_ml.errors import DeadlineExceeded

    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    target = f"/dev/shm/fdn-{name}-target"
    try:
        with open(target, "wb") as f:
            f.write(b"\xaa" * 16384)
        with ShmTransport().connect(name, timeout=5) as client:
            ch = client._take(0)
            link = f"/dev/shm/fdn-{name}-d{ch.index}-{os.getpid()}-999"
            os.link(target, link)
            try:
                ctl, base = ch.conn.ctl, ch.base
                ctl.buf[base + L.ChannelField.DATA_NAME : base + L.ChannelField.DATA_NAME + 64] = (
                    link[len("/dev/shm") :].encode().ljust(64, b"\0")
                )
                ctl.u64[(base + L.ChannelField.REQUEST_CAPACITY) // 8] = 8192
                ctl.u64[(base + L.ChannelField.RESPONSE_CAPACITY) // 8] = 8192
                ctl.u64[(base + L.ChannelField.DATA_GEN) // 8] += 1
                area = _vector_messages._request({"x": np.arange(3, dtype=np.int32)}, request_id=7)
                with open(link, "r+b") as f:  # the request, where the server will read it
                    f.write(area)
                ch.wkey = None
                with pytest.raises(DeadlineExceeded):
                    client._exchange(ch, 7, "echo", time.monotonic_ns() + 300_000_000, retry=False)
                with open(target, "rb") as f:
                    assert f.read()[8192:] == b"\xaa" * 8192  # no answer written there
            finally:
                client._give(ch)
                os.unlink(link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        server.stop()


_SHRINKER = """
import os, sys, time
import numpy as np, posix_ipc
from foundation_shm import ShmTransport, _vector_messages
from foundation_ml import InferenceRequest
client = ShmTransport().connect(sys.argv[1], timeout=5)
client.infer(InferenceRequest("echo", {"x": np.arange(1000, dtype=np.float32)}))  # mapped now
ch = client._pool._all[0]
shm = posix_ipc.SharedMemory(ch.data.name)
os.ftruncate(shm.fd, 4096)  # the request's first page only: the response area is past the end
area = _vector_messages._request({"x": np.arange(4, dtype=np.float32)}, request_id=9, model="echo")
ch.req[: len(area)] = area
ch.wkey = None
print("shrunk", flush=True)
client._exchange(ch, 9, "echo", time.monotonic_ns() + 2 * 10**9, retry=False)  # its own SIGBUS
"""


@pytest.mark.skipif(_accel.hot is None, reason="the SIGBUS guard is the C hot path's")
def test_a_client_that_shrinks_its_data_segment_does_not_kill_the_server(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's answer went past the end of the file: SIGBUS, the end of the server (and
    of every other client's service). Now its pages become zeros, and the channel is parked."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=20)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SHRINKER, name], capture_output=True, text=True, timeout=60
        )
        assert "shrunk" in proc.stdout, proc.stderr  # it got that far; how it ended is its own affair
        deadline = time.monotonic() + 60
        while "shrank its data segment" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "shrank its data segment" in caplog.text
        _echo_once(name)  # and everyone else is served
    finally:
        server.stop()


@pytest.mark.skipif(_accel.hot is None, reason="the SIGBUS guard is the C hot path's")
def test_a_shrunk_control_segment_fails_the_server_by_name_and_it_still_releases_everything(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A same-user process truncating the server's control segment ended it with SIGBUS, its
    objects left in /dev/shm; now the server is marked failed (serve exits 1) and stops cleanly."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=20)
    try:
        subprocess.run(
            [sys.executable, "-c", f"import os; os.truncate('/dev/shm/fdn-{name}', 0)"],
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 60
        while server.failed is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.failed is not None and "control segment" in str(server.failed)
        assert "the region is lost; the server stops" in caplog.text
    finally:
        server.stop()


@pytest.mark.skipif(_accel.hot is None, reason="the SIGBUS guard is the C hot path's")
def test_a_guarded_segment_dropped_without_close_gives_its_guard_back(name: str) -> None:
    import gc

    seg = _segments.Segment.create(f"/fdn-{name}-g", 8192, 0o600, guard=True)
    try:
        slot = seg.guard
        assert slot >= 0
        del seg
        gc.collect()
        again = _segments.Segment.create(f"/fdn-{name}-h", 8192, 0o600, guard=True)
        assert again.guard <= slot  # the lowest free slot: the dropped one's (or one freed since)
        again.close()
        assert again.guard == -1
    finally:
        _segments.unlink_segment(f"/fdn-{name}-g")
        _segments.unlink_segment(f"/fdn-{name}-h")


_CLIENT_OF_A_SHRUNK_REGION = """
import os, sys
import numpy as np
from foundation_shm import ShmTransport
from foundation_ml import InferenceRequest
from foundation_ml.errors import ServerUnavailable
client = ShmTransport().connect(sys.argv[1], timeout=5)
request = InferenceRequest("echo", {"x": np.arange(4, dtype=np.float32)})
client.infer(request)
os.truncate("/dev/shm/fdn-" + sys.argv[1], 0)  # a process of the server's user could
try:
    client.infer(request)
except ServerUnavailable as exc:
    print("ServerUnavailable:", exc)
client.close()
"""


@pytest.mark.skipif(_accel.hot is None, reason="the SIGBUS guard is the C hot path's")
def test_a_control_segment_shrunk_under_a_client_is_server_unavailable_not_a_sigbus(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The client's next read of the region went past the end of the file: SIGBUS, the end of the
    client's process. Now its mapping becomes zero pages and the call fails by name."""
    echo_process("--channels", "2")
    argv = [sys.executable, "-c", _CLIENT_OF_A_SHRUNK_REGION, name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "ServerUnavailable: model 'echo': shm server" in done.stdout
    assert "its control segment was shrunk under this client" in done.stdout


def test_a_data_gen_left_at_the_largest_u64_wraps_and_the_channel_serves(name: str) -> None:
    """A previous owner left its channel's data_gen at 2^64 - 1 (a bug, or a hostile client of
    the user): every later connect took that channel (the lowest free one) and failed untyped
    (``ValueError: memoryview: invalid value for format 'Q'``), leaving a data segment named
    ``...-18446744073709551616`` behind. The generation wraps to 0 (spec 10.1), and the server maps
    a channel's segment anew whenever it has none mapped, whatever the generation."""
    server = ShmTransport().serve(name, EchoHandler(), channels=1)
    try:
        x = np.arange(5, dtype=np.float32)
        with ShmTransport().connect(name, timeout=5) as first:
            first.infer(InferenceRequest("echo", {"x": x}))
            ch = first._take(0)
            try:
                ch.conn.ctl.u64[(ch.base + L.ChannelField.DATA_GEN) // 8] = 2**64 - 1
            finally:
                first._give(ch)
        deadline = time.monotonic() + 60
        while server._channels[0].data is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # the server lets go of the first client's segment (10.4)
        with ShmTransport().connect(name, timeout=5) as second:
            ch = second._take(0)
            gen = ch.gen
            second._give(ch)
            out = second.infer(InferenceRequest("echo", {"x": x}))
            assert gen == 0
            np.testing.assert_array_equal(out.outputs["x"], x)
    finally:
        server.stop()
    assert not [f for f in os.listdir("/dev/shm") if name in f]
