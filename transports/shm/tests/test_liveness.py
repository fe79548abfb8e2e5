"""Dead peers: kill -9 of a client or the server, restarts, stale objects, one server per name."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._echo import EchoHandler
from foundation_shm._log_throttle import LogFold
from foundation_shm._objects import objects_of
from foundation_shm._segments import Segment
from foundation_shm._server import ShmServer

from foundation_ml import InferenceRequest, InferenceResponse
from foundation_ml.errors import DeadlineExceeded, ServerUnavailable

from .conftest import EchoProcess, HeldHandler, dying, until

pytestmark = pytest.mark.slow

_VICTIM = """
import sys, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
c = ShmTransport().connect(sys.argv[1])
print("connected", flush=True)
c.infer(InferenceRequest("sleep", {"x": np.zeros(1000)}, parameters={"ms": 1500}))
"""


def _channel_words(name: str) -> list[dict[str, int]]:
    ctl = Segment.open(L.control_name(name))
    try:
        out = []
        for i in range(ctl.u32[L.RegionField.CHANNEL_COUNT // 4]):
            base = L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE
            out.append(
                {
                    "owner": ctl.u32[(base + L.ChannelField.OWNER_PID) // 4],
                    "pending": ctl.u64[(base + L.ChannelField.CLIENT_SEQ) // 8]
                    - ctl.u64[(base + L.ChannelField.SERVER_SEQ) // 8],
                }
            )
        return out
    finally:
        ctl.close()


def _until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    if not until(condition, limit):
        raise AssertionError(f"gave up waiting for {what}")


def _in_flight(name: str, pid: int) -> bool:
    return any(c["owner"] == pid and c["pending"] for c in _channel_words(name))


def test_kill_9_of_a_client_mid_request_leaves_others_served_and_its_channel_reclaimed(
    echo_server: EchoProcess, name: str
) -> None:
    victim = subprocess.Popen([sys.executable, "-c", _VICTIM, name], stdout=subprocess.PIPE, text=True)
    assert victim.stdout is not None and victim.stdout.readline().strip() == "connected"
    with ShmTransport().connect(name) as other:
        _until(lambda: _in_flight(name, victim.pid), "the victim's request to be in flight")
        victim.kill()
        victim.wait()
        x = np.arange(7)
        for _ in range(20):  # the dead client's request does not disturb anyone else
            np.testing.assert_array_equal(other.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
        _until(
            lambda: all(c["owner"] != victim.pid for c in _channel_words(name)), "the channel to be reclaimed"
        )
        assert not [o for o in objects_of(name) if f"-{victim.pid}-" in o], "the dead client's data segment"


def test_kill_9_of_the_server_fails_waiting_clients_with_server_unavailable(
    echo_server: EchoProcess, name: str
) -> None:
    client = ShmTransport().connect(name)
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            client.infer(InferenceRequest("sleep", {"x": np.zeros(1)}, parameters={"ms": 5000}), timeout=60)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=call)
    waiter.start()
    _until(lambda: _in_flight(name, os.getpid()), "the request to be in flight")
    echo_server.kill()
    waiter.join(30)
    assert not waiter.is_alive(), "the client hung after its server died"
    assert isinstance(outcome[0], ServerUnavailable)  # not DeadlineExceeded: it knew long before 60 s
    with pytest.raises(ServerUnavailable):  # its next call tries to reconnect: nobody there
        client.infer(InferenceRequest("echo", {"x": np.zeros(1)}))
    client.close()
    assert objects_of(name), "a killed server leaves its objects (for the next server or `shm clean`)"


def test_a_restarted_server_serves_clients_that_retry(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    first = echo_process()
    client = ShmTransport().connect(name)
    after_restart = threading.Event()
    served_after: list[int] = []
    failures: list[str] = []
    unexpected: list[BaseException] = []

    def loop() -> None:
        i = 0
        while len(served_after) < 20 and i < 100_000:
            i += 1
            try:
                resp = client.infer(InferenceRequest("echo", {"x": np.array([i])}), timeout=5)
            except ServerUnavailable as exc:
                failures.append(str(exc))
                time.sleep(0.01)
                continue
            except BaseException as exc:  # anything else ends the loop: the test reports it
                unexpected.append(exc)
                return
            if resp.outputs["x"][0] != i:
                unexpected.append(AssertionError(f"request {i} answered with {resp.outputs['x']}"))
                return
            if after_restart.is_set():
                served_after.append(i)

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.1)
    first.kill()
    _until(lambda: bool(failures), "the client to notice the dead server")
    echo_process()  # same name: removes the dead server's objects, starts afresh
    after_restart.set()
    t.join(60)
    client.close()
    assert not unexpected, (
        f"the client's loop raised {unexpected[0]!r} (after {len(failures)} ServerUnavailable)"
    )
    assert len(served_after) == 20


def test_the_first_call_after_a_graceful_restart_is_served_by_the_new_server(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """A server stopped (SIGTERM: it marks its region STOPPED and removes it) and started again
    under its name, as a deploy does: the client's next call failed ServerUnavailable "is gone"
    and only the call after it reconnected, while the C, Rust and Go clients reconnect first.
    The request was never sent (the client saw the region stopped before publishing it), so it
    is sent on a new connection; with no new server the call fails saying there is none. (A
    server killed instead leaves its region READY: a request published there may have reached
    the model before it died, and that call fails, test_a_restarted_server_serves_clients_that_retry.)"""
    x = np.arange(4, dtype=np.float32)
    server = echo_process()
    with ShmTransport().connect(name, timeout=10) as client:
        client.infer(InferenceRequest("echo", {"x": x}))
        for call in ("infer", "metadata", "stats"):
            server.stop()
            server = echo_process()
            if call == "infer":
                np.testing.assert_array_equal(
                    client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x
                )
            elif call == "metadata":
                assert client.metadata("echo")["name"] == "echo"
            else:
                assert client.stats()["requests"] == 0  # the new server's
        server.stop()
        with pytest.raises(ServerUnavailable, match=f"no shm server named '{name}'"):
            client.infer(InferenceRequest("echo", {"x": x}))


def test_one_live_server_per_name(echo_server: EchoProcess, name: str) -> None:
    with pytest.raises(FileExistsError, match=f"pid {echo_server.pid}\\) already serves '{name}'"):
        ShmTransport().serve(name, EchoHandler())
    with ShmTransport().connect(name) as client:  # the refused start disturbed nothing
        assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1


def test_a_stopped_server_fails_its_clients_with_server_unavailable(name: str) -> None:
    server = ShmTransport().serve(name, EchoHandler())
    client = ShmTransport().connect(name)
    server.stop()
    with pytest.raises(ServerUnavailable):
        client.infer(InferenceRequest("echo", {"x": np.ones(1)}), timeout=5)
    client.close()
    assert objects_of(name) == []


def test_a_stopping_server_takes_no_new_client(name: str) -> None:
    """Spec 10.1 step 2: connect needs READY; STOPPING still answers the clients it has."""
    with ShmTransport().serve(name, EchoHandler()) as server:
        words = server._ctl.u32  # type: ignore[attr-defined]
        with ShmTransport().connect(name) as client:
            words[L.RegionField.STATE // 4] = L.RegionState.STOPPING
            try:
                with pytest.raises(ServerUnavailable, match="is stopping"):
                    ShmTransport().connect(name)
                assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1
            finally:
                words[L.RegionField.STATE // 4] = L.RegionState.READY


def test_a_zombie_holding_the_region_mutex_is_released(name: str) -> None:
    """Spec 10.4: the mutex of a holder that died (a zombie counts as dead, 10.3) is posted."""
    server = ShmTransport().serve(name, EchoHandler(), heartbeat_ms=50)
    child_code = (
        "import mmap, os, struct, posix_ipc\n"
        f"posix_ipc.Semaphore({L.mutex_name(name)!r}).acquire()\n"
        f"m = posix_ipc.SharedMemory({L.control_name(name)!r})\n"
        "mm = mmap.mmap(m.fd, 256)\n"
        f"at = {int(L.RegionField.MUTEX_HOLDER)}\n"
        "mm[at : at + 4] = struct.pack('<I', os.getpid())\n"
        "os._exit(0)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", child_code])
    try:
        _until(lambda: _state_of(child.pid) == "Z", "the holder to become a zombie")
        with ShmTransport().connect(name, connect_timeout=30.0) as client:  # not Overloaded
            assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1
    finally:
        child.wait()
        server.stop()


def _state_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_connecting_to_no_server_is_server_unavailable(name: str) -> None:
    with pytest.raises(ServerUnavailable, match="no shm server"):
        ShmTransport().connect(name)


@pytest.mark.parametrize(("mode", "want"), [(None, 0o600), (0o660, 0o660)])
def test_objects_are_private_to_the_user_unless_a_group_mode_is_given(
    name: str, mode: int | None, want: int
) -> None:
    options = {} if mode is None else {"mode": mode}
    with ShmTransport().serve(name, EchoHandler(), **options), ShmTransport().connect(name):
        entries = objects_of(name)
        assert any(e.startswith(f"fdn-{name}-d0-") for e in entries)  # the client's data segment too
        for entry in entries:
            assert os.stat(f"/dev/shm/{entry}").st_mode & 0o777 == want, entry


def test_a_zombie_counts_as_dead() -> None:
    """A process killed but not yet reaped keeps its /proc entry and start time (spec 10.3)."""
    import signal

    from foundation_shm._liveness import is_alive, start_time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = start_time(child.pid)
        assert is_alive(child.pid, started)
        os.kill(child.pid, signal.SIGKILL)
        # the kernel makes it a zombie (we do not reap it yet): on a loaded machine that can take
        # a while, and checking before it has would find it alive
        _until(lambda: _state_of(child.pid) == "Z", "the killed child to become a zombie")
        assert start_time(child.pid) == started  # still there, same start time...
        assert not is_alive(child.pid, started)  # ...but gone
    finally:
        child.kill()
        child.wait()


class _Gated(EchoHandler):
    """The echo, on the serving thread, once ``open`` is set: later requests queue behind the
    first for as long as the test needs (each slept 0.2 s, and a loaded machine got to the call
    published after stop began only once the queued ones were answered and the server gone)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()

    def __call__(self, request: InferenceRequest, respond: Callable[..., None]) -> None:
        self.open.wait(60)
        super().__call__(request, respond)


def test_stop_answers_the_requests_already_queued_and_refuses_later_ones(name: str) -> None:
    from foundation_ml.errors import ShuttingDown

    handler = _Gated()
    server = ShmTransport().serve(name, handler)
    clients = [ShmTransport().connect(name) for _ in range(4)]
    results: dict[int, object] = {}

    def call(k: int) -> None:
        try:
            request = InferenceRequest("echo", {"x": np.full(1, k)})
            results[k] = clients[k].infer(request, timeout=10).outputs["x"][0]
        except Exception as exc:
            results[k] = exc

    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    _until(lambda: sum(c["pending"] for c in _channel_words(name)) == 3, "3 requests queued")
    stopper = threading.Thread(target=server.stop, kwargs={"drain_timeout": 10})
    stopper.start()
    _until(lambda: server._stopping, "the server to start stopping")  # type: ignore[attr-defined]
    late = threading.Thread(target=call, args=(3,))
    late.start()  # published after stop began: refused, while the queued three are still served
    _until(lambda: sum(c["pending"] for c in _channel_words(name)) == 4, "the fourth request")
    handler.open.set()
    late.join(15)
    for t in threads:
        t.join(15)
    stopper.join(15)
    assert {k: results[k] for k in range(3)} == {0: 0, 1: 1, 2: 2}
    assert isinstance(results[3], ShuttingDown), results[3]
    for c in clients:
        c.close()
    assert objects_of(name) == []


def test_the_server_names_itself_as_the_mutex_holder_while_it_reclaims(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec 10.1: whoever holds the region mutex stores its pid in ``mutex_holder_pid``, and 0
    before posting it; the server reclaiming a dead client's channel is no exception."""
    from foundation_shm import _server_liveness  # _reclaim's module: its drain

    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=60_000)
    seen: list[int] = []
    holder = int(L.RegionField.MUTEX_HOLDER) // 4

    def drain(sem: object) -> None:
        seen.append(server._ctl.u32[holder])

    monkeypatch.setattr(_server_liveness, "drain", drain)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        ch = server._channels[0]
        server._ctl.u32[ch.owner_word] = dead.pid
        server._reclaim(ch, dead.pid)
        assert seen == [os.getpid()]
        assert server._ctl.u32[holder] == 0 and server._ctl.u32[ch.owner_word] == 0
    finally:
        server.stop()


def test_the_reclaim_log_tells_a_channel_given_back_from_one_of_a_dead_client(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A live client that closes with a request pending marks its channel (owner_start_time 0,
    spec 10.1) for the server to reclaim: not "of dead client pid"."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=60_000)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        u32, u64 = server._ctl.u32, server._ctl.u64
        given, died = server._channels
        u32[given.owner_word] = os.getpid()
        u64[(given.base + L.ChannelField.OWNER_START) // 8] = 0
        u32[died.owner_word] = dead.pid
        u64[(died.base + L.ChannelField.OWNER_START) // 8] = 12345
        with caplog.at_level("INFO", logger="foundation_shm"):
            server._reap()
        lines = [r.getMessage() for r in caplog.records if "reclaimed" in r.getMessage()]
        assert lines == [
            f"shm {name}: reclaimed channel 0 given back by client pid {os.getpid()}",
            f"shm {name}: reclaimed channel 1 of dead client pid {dead.pid}",
        ]
        assert u32[given.owner_word] == 0 and u32[died.owner_word] == 0
    finally:
        server.stop()


_HELD_VICTIM = """
import sys, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
c = ShmTransport().connect(sys.argv[1], channels=1)
print("connected", flush=True)
c.infer(InferenceRequest("held", {"x": np.zeros(4)}))  # never answered: it is killed in it
"""


class _Clock(LogFold):
    """A fold whose clock is the test's: it moves only when the test moves it (``at``), so what
    the beats fold is the same however long each step takes on a loaded machine."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        super().__init__()
        self.at = 0.0

    def take(self, now: float | None = None) -> bool:
        return super().take(self.at)

    def due(self, now: float | None = None, *, final: bool = False) -> tuple[int, float]:
        return super().due(self.at, final=final)


def _give_back_after_a_timeout(name: str) -> None:
    """A client whose call timed out (its request still with the server), then closed: its
    channel given back (``owner_start_time = 0``, spec 10.1) for the server to reclaim."""
    with ShmTransport().connect(name, timeout=30, channels=1) as client:
        with pytest.raises(DeadlineExceeded):
            client.infer(InferenceRequest("held", {"x": np.zeros(4)}), timeout=0.05)


def _killed_mid_call(name: str, handler: HeldHandler, count: int) -> list[int]:
    """``count`` client processes killed (kill -9) while their call is with the handler."""
    victims = [
        subprocess.Popen([sys.executable, "-c", _HELD_VICTIM, name], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    seen = len(handler.held)
    for victim in victims:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "connected"
    _until(lambda: len(handler.held) == seen + count, "the victims' requests to reach the handler")
    for victim in victims:
        victim.kill()
        victim.wait()
        victim.stdout.close()  # type: ignore[union-attr]
    return [victim.pid for victim in victims]


def test_channels_given_back_or_of_dead_clients_are_summed_up_in_the_log(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A soak's server logged ~600 "reclaimed channel N given back" lines in 20 minutes: a busy
    service whose clients use short deadlines (a call that times out, then its client closes,
    gives its channel back); a preforking service recycling workers that never close their
    clients logged a "reclaimed channel N of dead client pid P" line per worker. Of each kind the
    first is logged; those after it in a minute are summed up in one line per kind (at stop at
    the latest), a line a minute while they go on; stats' ``reclaimed`` counts every one."""
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=8, heartbeat_ms=20)  # beats reclaim
    given = server._given_back_log = _Clock()
    dead_log = server._dead_client_log = _Clock()

    def at(seconds: float) -> None:
        given.at = dead_log.at = seconds

    def reclaimed(given_back: int, dead_client: int) -> None:
        want = {"given_back": given_back, "dead_client": dead_client}
        _until(lambda: server.stats()["reclaimed"] == want, f"the reclaims to count {want}")

    def lines() -> list[str]:
        return [
            re.sub(r"channel \d+ ", "channel _ ", r.getMessage())
            for r in caplog.records
            if "reclaimed" in r.getMessage()
        ]

    summed = "given back by clients in the last {} s (not logged one by one)"
    died = "of dead clients in the last {} s (not logged one by one)"
    try:
        with caplog.at_level(logging.INFO, logger="foundation_shm"):
            for _ in range(5):
                _give_back_after_a_timeout(name)
            reclaimed(5, 0)
            dead = _killed_mid_call(name, handler, 3)
            reclaimed(5, 3)
            assert lines()[0] == f"shm {name}: reclaimed channel _ given back by client pid {os.getpid()}"
            assert lines()[1] in [f"shm {name}: reclaimed channel _ of dead client pid {pid}" for pid in dead]
            assert len(lines()) == 2
            at(60.0)  # a minute on: the next beat sums the others of each kind up
            _until(lambda: len(lines()) == 4, "the summaries")
            assert lines()[2:] == [
                f"shm {name}: reclaimed 4 more channels " + summed.format(60),
                f"shm {name}: reclaimed 2 more channels " + died.format(60),
            ]
            for _ in range(3):  # still busy: folded into the next minute's lines
                _give_back_after_a_timeout(name)
            _killed_mid_call(name, handler, 1)
            reclaimed(8, 4)
            assert len(lines()) == 4
            at(90.0)
            server.stop()  # what is not yet summed up is said as it stops
            assert lines()[4:] == [
                f"shm {name}: reclaimed 3 more channels " + summed.format(30),
                f"shm {name}: reclaimed 1 more channel " + died.format(30),
            ]
            assert server.stats()["reclaimed"] == {"given_back": 8, "dead_client": 4}
    finally:
        server.stop()


_KILLED_MID_CLAIM = """
import mmap, os, struct, sys, posix_ipc
name, mutex_name, control_name, at_holder, at_data_name, gen = sys.argv[1:7]
posix_ipc.Semaphore(mutex_name).acquire()
ctl = posix_ipc.SharedMemory(control_name)
mm = mmap.mmap(ctl.fd, ctl.size)
mm[int(at_holder) : int(at_holder) + 4] = struct.pack("<I", os.getpid())
for g in (int(gen), int(gen) + 1):  # its claim's segment, published; a grow's, not yet
    seg = f"/fdn-{name}-d0-{os.getpid()}-{g}"
    posix_ipc.SharedMemory(seg, posix_ipc.O_CREX, size=8192).close_fd()
published = f"/fdn-{name}-d0-{os.getpid()}-{gen}".encode()
mm[int(at_data_name) : int(at_data_name) + 64] = published.ljust(64, b"\\0")
os._exit(0)  # killed here: before owner_pid, the mutex held
"""


def test_data_segments_a_dead_client_left_unnamed_are_removed(name: str) -> None:
    """Spec 10.4: a client killed between creating its data segment and publishing it (a claim
    or a grow), or between freeing its channel and unlinking it, leaves a segment no channel's
    reclaim finds: the server's sweep unlinks it (each stayed in /dev/shm until the server
    stopped); a running process's segments stay, and the next client connects."""
    import posix_ipc

    server = ShmTransport().serve(name, EchoHandler(), channels=2, heartbeat_ms=20)
    live = f"/fdn-{name}-d1-{os.getpid()}-99"  # this process runs: its segment is its own
    posix_ipc.SharedMemory(live, posix_ipc.O_CREX, size=4096).close_fd()
    base = L.CHANNELS_OFFSET
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLED_MID_CLAIM,
            name,
            L.mutex_name(name),
            L.control_name(name),
            str(int(L.RegionField.MUTEX_HOLDER)),
            str(base + L.ChannelField.DATA_NAME),
            "1",
        ],
        check=True,
    )
    assert child.returncode == 0
    dead = sorted(o for o in objects_of(name) if o.startswith(f"fdn-{name}-d0-"))
    try:
        assert len(dead) == 2, dead
        _until(lambda: not any(o in objects_of(name) for o in dead), "the dead client's segments to go")
        assert live.lstrip("/") in objects_of(name)
        with ShmTransport().connect(name, connect_timeout=30.0) as client:  # the mutex was freed
            assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1
    finally:
        posix_ipc.unlink_shared_memory(live)
        server.stop()


def _unshare_works() -> bool:
    try:
        probe = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_OTHER_NS_CLIENT = """
import sys
from foundation_ml.errors import ServerUnavailable
from foundation_shm import ShmTransport
try:
    ShmTransport().connect(sys.argv[1]).close()
except ServerUnavailable as exc:
    print(exc)
else:
    print("connected")
"""


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare(1) with PID namespaces (root)")
def test_a_client_in_another_pid_namespace_is_told_so(echo_server: EchoProcess, name: str) -> None:
    """A client in a container sharing /dev/shm but not the pids sees no live server pid: it was
    told "the server is gone" while the server ran; now it is told why, and what to share."""
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _OTHER_NS_CLIENT, name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"its pid {echo_server.pid} is not a live process seen from here" in out.stdout
    assert "another PID namespace" in out.stdout and "--pid=container:" in out.stdout
    ShmTransport().connect(name).close()  # from this namespace it is served


def test_a_server_pid_not_seen_while_its_lock_is_held_is_named_at_connect(
    echo_server: EchoProcess, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, wherever unshare is not at hand: the pid is not seen, the lock is held."""
    from foundation_shm import _channel

    monkeypatch.setattr(_channel, "is_alive", lambda pid, started: False)
    with pytest.raises(ServerUnavailable, match="another PID namespace"):
        ShmTransport().connect(name)


def test_a_dead_server_is_gone_not_in_another_namespace(echo_server: EchoProcess, name: str) -> None:
    """A killed server's lock is free (the kernel drops a dead process's flock): "gone"."""
    echo_server.kill()
    with pytest.raises(ServerUnavailable, match=rf"\(pid {echo_server.pid}\) is gone"):
        ShmTransport().connect(name)


def test_a_killed_server_whose_threads_still_hold_its_lock_is_gone_not_in_another_namespace(
    echo_server: EchoProcess, name: str
) -> None:
    """Right after a SIGKILL the server's pid is a zombie while its other threads still exit
    with the lock file held: a connect then said the server held its lock but lived in another
    PID namespace. A zombie of the server's start time is the server seen from here: "gone"."""
    with dying(echo_server):
        with pytest.raises(ServerUnavailable, match=rf"\(pid {echo_server.pid}\) is gone$"):
            ShmTransport().connect(name)


_CONNECTED = """
import sys, time
from foundation_shm import ShmTransport
c = ShmTransport().connect(sys.argv[1])
print("connected", flush=True)
time.sleep(60)
"""


def test_a_dead_clients_segment_another_user_owns_does_not_stop_the_reclaim(
    name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group-mode server cannot unlink a segment its client, another user, made (/dev/shm is
    sticky). The reclaim raised there, before it freed the channel: the channel stayed lost and
    "reaping dead clients failed" was logged every beat. Now it is freed, the segment named
    once, and the sweep does not try it again."""
    import posix_ipc
    from foundation_shm import _server_liveness

    def not_ours(segment: str) -> None:
        raise posix_ipc.PermissionsError("Permission denied")

    caplog.set_level(logging.INFO, logger="foundation_shm")
    monkeypatch.setattr(_server_liveness, "unlink_segment", not_ours)
    server = ShmTransport().serve(name, EchoHandler(), channels=1, heartbeat_ms=20)
    victim = subprocess.Popen([sys.executable, "-c", _CONNECTED, name], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "connected"
        left = [o for o in objects_of(name) if o.startswith(f"fdn-{name}-d0-{victim.pid}-")]
        assert len(left) == 1, left
        victim.kill()
        victim.wait()
        _until(lambda: _channel_words(name)[0]["owner"] == 0, "the dead client's channel to be freed")
        time.sleep(1.5)  # a sweep or more (every 10 beats) finds the segment again
        with ShmTransport().connect(name, connect_timeout=30.0) as client:  # the one channel serves
            assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1
    finally:
        victim.kill()
        victim.wait()
        server.stop()
        monkeypatch.undo()
        for o in left:  # (server.stop() removes what its name left, this included)
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory("/" + o)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "reaping dead clients failed" in m]
    said = [m for m in messages if "cannot remove data segment" in m]
    assert len(said) == 1 and left[0] in said[0] and "another user's" in said[0], said


def test_stop_releases_everything_else_when_a_clients_segment_is_another_users(
    name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group-mode server cannot unlink the data segment of a client that is another user
    (/dev/shm is sticky). stop() raised PermissionError at that entry: the semaphores sorted after
    it stayed in /dev/shm, the region and semaphores open, the name's lock held, and
    ``runtime.close()`` (``foundation serve``'s stop) failed there, its models never unloaded. Now
    the rest is released and the segment named once, with who can remove it."""
    from foundation_shm import _objects

    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    client = ShmTransport().connect(name)
    try:
        assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1
        theirs = [o for o in objects_of(name) if o.startswith(f"fdn-{name}-d0-")]
        assert len(theirs) == 1, objects_of(name)
        unlink = os.unlink

        def not_ours(path: str, *args: object, **kwargs: object) -> None:
            if os.path.basename(path) in theirs:
                raise PermissionError(1, "Operation not permitted", path)
            unlink(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(_objects.os, "unlink", not_ours)
        caplog.set_level(logging.WARNING, logger="foundation_shm")
        server.stop()
        monkeypatch.undo()
        assert objects_of(name) == theirs  # the lock file and every semaphore gone
        said = [r.getMessage() for r in caplog.records if theirs[0] in r.getMessage()]
        assert len(said) == 1 and "another user's" in said[0] and "foundation shm clean" in said[0], said
        again = ShmTransport().serve(name, EchoHandler(), channels=1)  # the name is free again
        again.stop()
    finally:
        monkeypatch.undo()
        client.close()
        server.stop()


_STOPPED_MID_RECLAIM = """
import subprocess, sys, threading
from foundation_shm import ShmTransport, _layout as L
from foundation_shm._echo import EchoHandler
server = ShmTransport().serve(sys.argv[1], EchoHandler(), channels=4, heartbeat_ms=20)
print("serving", flush=True)
sys.stdin.readline()  # the test's client now holds the region mutex, stopped (SIGSTOP)
dead = subprocess.Popen([sys.executable, "-c", "pass"])
dead.wait()
reclaiming = threading.Event()
reclaim = server._reclaim
def started(*args, **kwargs):
    reclaiming.set()
    reclaim(*args, **kwargs)
server._reclaim = started
u32, u64 = server._ctl.u32, server._ctl.u64
for ch in server._channels:  # four dead clients: a beat waits for the mutex for each in turn
    u64[(ch.base + L.ChannelField.OWNER_START) // 8] = 12345
    u32[ch.owner_word] = dead.pid
assert reclaiming.wait(60), "the beat never tried to reclaim"
server.stop(0)
print("stopped", flush=True)
server._beat_thread.join()  # whatever the beat does after stop(), it does before this exits
print("beat ended", flush=True)
"""

_HOLD_THE_MUTEX = """
import mmap, os, struct, sys, posix_ipc
posix_ipc.Semaphore(sys.argv[1]).acquire()
m = posix_ipc.SharedMemory(sys.argv[2])
mm = mmap.mmap(m.fd, 256)
at = int(sys.argv[3])
mm[at : at + 4] = struct.pack("<I", os.getpid())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("path", ["c", "python"])
def test_a_stop_while_the_beat_waits_for_a_mutex_a_stopped_client_holds_ends_the_beat_first(
    name: str, path: str
) -> None:
    """A client stopped (SIGSTOP) inside the region mutex while dead clients' channels wait to be
    reclaimed: the beat waited up to 1 s for the mutex per channel, stop() waited 2 s for the
    beat, then closed the mutex and unmapped the region under it, and the beat's wait woke on the
    closed semaphore: the server process died of a segfault after its stop (on both paths). Now
    stop() ends the beat's wait and waits for it before releasing anything."""
    env = (
        {**os.environ, "FDN_SHM_PURE": "1"}
        if path == "python"
        else {k: v for k, v in os.environ.items() if k != "FDN_SHM_PURE"}
    )
    server = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_MID_RECLAIM, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    holder = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "serving"
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _HOLD_THE_MUTEX,
                L.mutex_name(name),
                L.control_name(name),
                str(int(L.RegionField.MUTEX_HOLDER)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGSTOP)
        _, status = os.waitpid(holder.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        out, err = server.communicate("go\n", timeout=60)
        assert server.returncode == 0, f"the server process ended {server.returncode}: {err}"
        assert out.split() == ["stopped", "beat", "ended"], out
        assert "Traceback" not in err, err  # the beat logged no failure (a closed mmap, semaphore)
        assert objects_of(name) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
        if holder is not None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.communicate()


def test_a_ctrl_c_while_stop_waits_for_the_beat_still_releases_everything(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() now waits for the heartbeat with no timeout; a KeyboardInterrupt in that wait left
    every object in /dev/shm and the name held. It is raised once all is released."""
    server = ShmTransport().serve(name, EchoHandler(), channels=1, heartbeat_ms=20)
    beat = server._beat_thread
    join = beat.join
    calls = []

    def ctrl_c(timeout: float | None = None) -> None:
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt
        join(timeout)

    monkeypatch.setattr(beat, "join", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        server.stop(0)
    assert objects_of(name) == []
    assert not beat.is_alive()
    again = ShmTransport().serve(name, EchoHandler(), channels=1)  # the name is free again
    again.stop()


def test_a_batch_that_outlives_stops_wait_for_the_loop_is_no_dead_loop(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() waits 2 s for the serving loop, which runs the handler's batches (``flush``); a
    batch still running then returned to a loop that polled the released region: after a clean
    stop it logged (CRITICAL) that the serving loop died, with a traceback, and set ``failed``."""
    flushing, finish = threading.Event(), threading.Event()

    class SlowBatch(EchoHandler):
        armed = False

        def flush(self) -> int:
            if self.armed:
                self.armed = False
                flushing.set()
                finish.wait(60)  # a batch still running when stop() gives up waiting for the loop
            return 0

    handler = SlowBatch()
    server = ShmTransport().serve(name, handler, channels=1)
    try:
        with ShmTransport().connect(name) as client:
            handler.armed = True
            assert client.infer(InferenceRequest("echo", {"x": np.ones(1)})).outputs["x"][0] == 1
        _until(flushing.is_set, "the batch to start")
        caplog.set_level(logging.ERROR, logger="foundation_shm")
        server.stop(0)
    finally:
        finish.set()
    server._loop_thread.join(60)
    assert not server._loop_thread.is_alive()
    assert server.failed is None, server.failed
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert objects_of(name) == []


def _kill_once_sending(argv: list[str], reached: Callable[[], bool], what: str) -> None:
    """Run ``python -c *argv`` (a client that prints "sending" as it sends its request), wait
    until ``reached()`` (the server holds the request where the test wants the reclaim to land),
    then kill it (-9)."""
    victim = subprocess.Popen([sys.executable, "-c", *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "sending"
        _until(reached, what)
    finally:
        victim.kill()
        victim.wait()
        victim.stdout.close()  # type: ignore[union-attr]


def _next_client_answered_once(
    server: ShmServer,
    name: str,
    calls: list[tuple[float, Callable[[object], None]]],
    reclaimed: threading.Event,
) -> None:
    """Once the killed client's channel is reclaimed (then ``reclaimed`` set), a new client calls on
    it (x = 7); the dead client's late answers, if the handler had its request, come while the new
    request is in flight, and must leave it in flight; its own answer (14) is what it gets."""
    got: list[np.ndarray] = []
    _until(lambda: server._reclaimed["dead_client"] == 1, "the dead client's channel to be reclaimed")
    reclaimed.set()
    with ShmTransport().connect(name, channels=1) as client:  # the reclaimed channel
        caller = threading.Thread(
            target=lambda: got.append(
                client.infer(InferenceRequest("m", {"x": np.full(3, 7.0)}), timeout=30).outputs["y"]
            )
        )
        caller.start()
        _until(lambda: any(x == 7.0 for x, _ in calls), "the new client's request to reach the handler")
        ch = server._channels[0]
        for _, respond in calls[:-1]:  # the dead client's, late (if the handler had it)
            respond(InferenceResponse(1, "m", {"y": np.full(3, -1.0)}))
        assert ch.busy and server._ctl.u32[ch.busy_word] == 1  # the new request: still in flight
        calls[-1][1](InferenceResponse(1, "m", {"y": np.full(3, 14.0)}))
        caller.join(30)
    assert len(got) == 1, "the new client's call did not return"
    np.testing.assert_array_equal(got[0], np.full(3, 14.0))


_HOST_VICTIM = """
import sys, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
c = ShmTransport().connect(sys.argv[1], channels=1)
print("sending", flush=True)
c.infer(InferenceRequest("m", {"x": np.zeros(3)}), timeout=100)  # killed in it
"""


def test_a_client_killed_while_its_request_is_decoded_has_its_answer_dropped_not_its_successor_s(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client killed (kill -9) while the serving loop decoded its request, the handler not yet
    called: its request took the lease the reclaim began, so its late answer, on the channel now
    another client's with a request in flight, was not dropped by lease but as stale, which
    cleared the channel's busy flag under the new request: the loop took that request again and
    the handler ran it twice. The answer now carries the lease of its own request and is dropped
    as its client's, leaving the new client's request alone; a request whose lease ended as it was
    read is dropped there (what was read may be the next client's request, on its new segment:
    the handler ran that request twice)."""
    from foundation_shm import _readers

    calls: list[tuple[float, Callable[[object], None]]] = []

    class Handler:  # answers when the test says
        def __call__(self, request: InferenceRequest, respond: Callable[[object], None]) -> None:
            calls.append((float(request.inputs["x"][0]), respond))

    in_read, reclaimed = threading.Event(), threading.Event()
    read = _readers.RequestReader.read

    def held_read(self: _readers.RequestReader) -> object:
        if not in_read.is_set():  # the victim's request: the reclaim comes while it is decoded
            in_read.set()
            reclaimed.wait(30)
        return read(self)

    monkeypatch.setattr(_readers.RequestReader, "read", held_read)
    with ShmTransport().serve(name, Handler(), channels=1, heartbeat_ms=20) as server:
        _kill_once_sending([_HOST_VICTIM, name], in_read.is_set, "the victim's request to be decoded")
        try:
            _next_client_answered_once(server, name, calls, reclaimed)
            assert [x for x, _ in calls] == [7.0]  # the dead client's request dropped; the new one's ran once
        finally:
            reclaimed.set()


_HOST_VICTIM_2 = """
import sys, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
c = ShmTransport().connect(sys.argv[1], channels=1)
c.infer(InferenceRequest("m", {"x": np.ones(3)}), timeout=100)  # its segment mapped by the server
print("sending", flush=True)
c.infer(InferenceRequest("m", {"x": np.zeros(int(sys.argv[2]))}), timeout=100)  # killed in it
"""


class _HeldSet(set[int]):
    """A set whose looks (``in``) run ``hook``: where the loop looks at ``ServerCuda.channels``."""

    def __init__(self, hook: Callable[[], None]) -> None:
        super().__init__()
        self.hook = hook

    def __contains__(self, item: object) -> bool:
        self.hook()
        return super().__contains__(item)


@pytest.mark.parametrize("path", ["general", "repeat"])
def test_a_client_killed_as_the_loop_takes_its_request_leaves_its_successor_s_request_run_once(
    name: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """As above, the reclaim landing just after the loop marked the channel busy, before the
    request's lease was read (a request decoded in full, or one repeating the channel's last,
    the C lane's): the request took the lease the reclaim began, and its late answer cleared the
    busy flag of the next client's request on the channel, which ran twice. The loop reads the
    lease before it marks the channel busy, and a reclaim between the two ends the dispatch."""

    calls: list[tuple[float, Callable[[object], None]]] = []

    class Handler:  # answers when the test says (the victim's first request: at once)
        def __call__(self, request: InferenceRequest, respond: Callable[[object], None]) -> None:
            if float(request.inputs["x"][0]) == 1.0:
                respond(InferenceResponse(request.id, "m", {"y": request.inputs["x"]}))
                first.set()
                return
            calls.append((float(request.inputs["x"][0]), respond))

    first, taken, reclaimed = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:  # the victim's second request, its channel marked busy: reclaimed now
        if first.is_set() and not taken.is_set():
            taken.set()
            reclaimed.wait(30)

    with ShmTransport().serve(name, Handler(), channels=1, heartbeat_ms=20) as server:
        if path == "general":
            general = server._dispatch_general

            def held_general(*args: object) -> None:
                hold()
                general(*args)

            monkeypatch.setattr(server, "_dispatch_general", held_general)
        else:
            server._cuda.channels = _HeldSet(hold)
        argv = [_HOST_VICTIM_2, name, "4" if path == "general" else "3"]
        _kill_once_sending(argv, taken.is_set, "the victim's request to be taken")
        try:
            _next_client_answered_once(server, name, calls, reclaimed)
            assert [x for x, _ in calls if x == 7.0] == [7.0], [x for x, _ in calls]  # the new one ran once
        finally:
            reclaimed.set()
