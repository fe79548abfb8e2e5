"""A client gives its channel back while its server is hung (stopped with SIGSTOP past its
heartbeat's staleness), without the region mutex, as the Rust client's drop does (spec 10.1:
``owner_start_time = 0``, its data segment unlinked); the server resumes and its heartbeat
reclaims the channel (10.4) while the serving loop goes on serving. Every interleaving leaves the
server serving everyone else, on the C and the pure-Python path: a fresh client is served, a
stop ends it with status 0, and its stderr never says the serving loop died."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._echo import EchoHandler
from foundation_shm._region import read_region
from foundation_shm._segments import Segment, unlink_segment

from foundation_ml import InferenceRequest, InferenceResponse, Respond
from foundation_ml.errors import DeadlineExceeded, InferenceError

from .conftest import EchoProcess, HeldHandler, until

pytestmark = pytest.mark.slow

REQUEST = InferenceRequest("echo", {"x": np.arange(4, dtype=np.float32)})
_C = L.ChannelField


@pytest.fixture(params=["c", "python"])
def echo(
    request: pytest.FixtureRequest, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> EchoProcess:
    """An echo server process on the C hot path, or on the pure-Python one."""
    if request.param == "python":
        monkeypatch.setenv("FDN_SHM_PURE", "1")
    else:
        monkeypatch.delenv("FDN_SHM_PURE", raising=False)
    return echo_process("--channels", "4")


def _stop(server: EchoProcess) -> None:
    os.kill(server.pid, signal.SIGSTOP)
    _, status = os.waitpid(server.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    assert until(lambda: read_region(server.name)["heartbeat_age_s"] > 1.01), "its heartbeat never went stale"


def _give_back_without_the_mutex(client: ShmClient) -> list[int]:
    """What the Rust client's drop does on a hung server: each channel's ``owner_start_time = 0``
    (no mutex), its data segment unlinked; then the client is closed without giving anything back
    again. The channels' indices."""
    conn = client._connection()
    u64, buf = conn.ctl.u64, conn.ctl.buf
    given = []
    for ch in client._all:
        u64[(ch.base + _C.OWNER_START) // 8] = 0
        raw = bytes(buf[ch.base + _C.DATA_NAME : ch.base + _C.DATA_NAME + 64]).partition(b"\0")[0]
        unlink_segment(raw.decode())
        given.append(ch.index)
    conn.alive = False
    client.close()
    return given


def _reclaimed(server: EchoProcess, given: list[int]) -> bool:
    return until(lambda: not set(given) & {i for i, _ in _owners(server.name)})


def _owners(name: str) -> list[tuple[int, int]]:
    ctl = Segment.open(L.control_name(name))
    try:
        count = ctl.u32[L.RegionField.CHANNEL_COUNT // 4]
        owners = []
        for i in range(count):
            pid = ctl.u32[(L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + _C.OWNER_PID) // 4]
            if pid:
                owners.append((i, pid))
        return owners
    finally:
        ctl.close()


def _serves_and_stops_cleanly(server: EchoProcess) -> None:
    with ShmTransport().connect(server.name, timeout=30, connect_timeout=30) as fresh:
        np.testing.assert_array_equal(fresh.infer(REQUEST).outputs["x"], REQUEST.inputs["x"])
    assert read_region(server.name)["state"] == "ready"
    server.proc.terminate()
    _, err = server.proc.communicate(timeout=60)
    assert "serving loop died" not in err, err
    assert server.proc.returncode == 0, err


def test_a_channel_given_back_while_the_server_is_hung_is_reclaimed_and_it_serves_on(
    echo: EchoProcess,
) -> None:
    client = ShmClient(echo.name, timeout=30)
    client.infer(REQUEST)
    _stop(echo)
    try:
        given = _give_back_without_the_mutex(client)
    finally:
        os.kill(echo.pid, signal.SIGCONT)
    assert _reclaimed(echo, given), "the channel given back was never reclaimed"
    _serves_and_stops_cleanly(echo)


def test_a_channel_given_back_with_its_request_pending_on_the_hung_server_is_reclaimed(
    echo: EchoProcess,
) -> None:
    """The request published while the server was stopped (the call ended DeadlineExceeded) is
    served from the unlinked segment once it resumes, and the channel reclaimed."""
    client = ShmClient(echo.name, timeout=30)
    client.infer(REQUEST)
    _stop(echo)
    try:
        with pytest.raises(DeadlineExceeded):
            client.infer(REQUEST, timeout=0.2)
        given = _give_back_without_the_mutex(client)
    finally:
        os.kill(echo.pid, signal.SIGCONT)
    assert _reclaimed(echo, given), "the channel given back was never reclaimed"
    _serves_and_stops_cleanly(echo)


class _Caller:
    """Another client calling the server all along (one thread, back to back)."""

    def __init__(self, name: str) -> None:
        self.answered = 0
        self.failures: list[BaseException] = []
        self._done = threading.Event()
        self._client = ShmClient(name, timeout=60)
        self._thread = threading.Thread(target=self._calls)
        self._thread.start()

    def _calls(self) -> None:
        while not self._done.is_set():
            try:
                out = self._client.infer(REQUEST).outputs["x"]
                np.testing.assert_array_equal(out, REQUEST.inputs["x"])
                self.answered += 1
            except BaseException as exc:
                self.failures.append(exc)
                return

    def served_more(self) -> bool:
        """Whether 10 more of its calls are answered (given up on after a minute)."""
        seen = self.answered
        return until(lambda: self.answered > seen + 10 or bool(self.failures))

    def finish(self) -> None:
        self._done.set()
        self._thread.join(60)
        self._client.close()
        assert not self.failures, self.failures


def test_channels_given_back_while_another_client_calls_all_along_leave_that_client_served(
    echo: EchoProcess,
) -> None:
    """Another client's calls are in flight (one waits with the stopped server) while two
    clients give their channels back, one just before the server resumes, one while it serves."""
    first = ShmClient(echo.name, timeout=30)
    first.infer(REQUEST)
    second = ShmClient(echo.name, timeout=30)
    second.infer(REQUEST)
    other = _Caller(echo.name)
    try:
        assert other.served_more()
        _stop(echo)
        try:
            given = _give_back_without_the_mutex(first)
        finally:
            os.kill(echo.pid, signal.SIGCONT)
        assert other.served_more(), "the other client was not served after the resume"
        given += _give_back_without_the_mutex(second)
        assert _reclaimed(echo, given), "the channels given back were never reclaimed"
        assert other.served_more(), "the other client was not served after the reclaims"
    finally:
        os.kill(echo.pid, signal.SIGCONT)  # (a failed test may have left it stopped)
        other.finish()
    _serves_and_stops_cleanly(echo)


class _Gate(EchoHandler):
    """Model "gate" holds the serving loop (the handler runs on its thread) until ``open``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model == "gate":
            self.entered.set()
            self.open.wait(60)
            respond(InferenceResponse(request.id, "gate", request.inputs))
        else:
            super().__call__(request, respond)


# --- a channel freed and claimed again before the serving loop notices ----------------------------

_HOSTILE = """
import os, sys
import numpy as np
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._echo import EchoHandler
from foundation_shm._ownership import region_mutex
from foundation_shm._segments import unlink_segment
from foundation_ml import InferenceRequest, InferenceResponse, Respond

client = ShmClient(sys.argv[1], timeout=30, channels=1)
client.infer(InferenceRequest("echo", {"x": np.full(4, 7, np.float32)}))
(ch,) = client._all
conn = client._connection()
print(ch.index, ch.gen, flush=True)
sys.stdin.readline()
with region_mutex(conn, 30):  # frees its channel, its generation set so that the next owner's
    conn.ctl.u64[(ch.base + L.ChannelField.DATA_GEN) // 8] = ch.gen - 1  # is the one mapped
    conn.ctl.u32[(ch.base + L.ChannelField.OWNER_PID) // 4] = 0
    conn.ctl.u64[L.RegionField.CONNECT_EPOCH // 8] += 1
unlink_segment(ch.data.name)
os._exit(0)
"""


class _Hostile:
    """A client in a process of its own, owning channel 0, that frees it on ``free()`` having set
    its ``data_gen`` one below the generation the server mapped, then exits."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOSTILE, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        index, gen = self.proc.stdout.readline().split()
        self.index, self.gen = int(index), int(gen)

    def free(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.wait(60) == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _claim_and_publish(name: str, x: np.ndarray) -> tuple[ShmClient, threading.Thread, list[object]]:
    """A new client (of this process) calling ``echo`` with ``x`` in a thread, once its request is
    published: the client, the thread, and what the call returned or raised."""
    client = ShmClient(name, timeout=30, channels=1)
    got: list[object] = []

    def call() -> None:
        try:
            got.append(client.infer(InferenceRequest("echo", {"x": x})))
        except BaseException as exc:
            got.append(exc)

    thread = threading.Thread(target=call)
    thread.start()

    def published() -> bool:
        chans = client._all
        return bool(got) or bool(chans and chans[0].words[chans[0].cseq] != chans[0].words[chans[0].sseq])

    assert until(published), "the new client never published its request"
    return client, thread, got


def _answered_its_own(got: list[object], x: np.ndarray) -> None:
    assert len(got) == 1 and isinstance(got[0], InferenceResponse), got
    np.testing.assert_array_equal(got[0].outputs["x"], x)


X_NEW = np.arange(4, dtype=np.float32)


def test_a_channel_claimed_again_while_the_loop_is_busy_maps_the_new_owners_segment(name: str) -> None:
    """A client freed its channel, having set data_gen so that the next owner's generation was
    the one the server had mapped, while the serving loop ran a long request of another client;
    a new client claimed the channel then. The loop kept the old owner's segment, whose
    generation matched: the new client's requests were read from, and answered into, the old
    owner's segment (the new one got nothing it could read). The server tells by the channel's
    owner, looked at when a connect or disconnect happened, and maps the new owner's segment."""
    handler = _Gate()
    server = ShmTransport().serve(name, handler, channels=2)
    hostile = _Hostile(name)
    try:
        blocker = ShmClient(name, timeout=60, channels=1)
        blocked = threading.Thread(target=lambda: blocker.infer(InferenceRequest("gate", {"x": X_NEW})))
        blocked.start()
        assert handler.entered.wait(60), "the gate request never reached the handler"
        hostile.free()
        client, thread, got = _claim_and_publish(name, X_NEW)
        (ch,) = client._all
        assert (ch.index, ch.gen) == (hostile.index, hostile.gen)  # the generation the server mapped
        handler.open.set()
        thread.join(60)
        blocked.join(60)
        client.close()
        blocker.close()
        _answered_its_own(got, X_NEW)
    finally:
        handler.open.set()
        hostile.close()
        server.stop()


def test_a_channel_claimed_again_during_the_loops_scan_maps_the_new_owners_segment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, with the free and the new claim and its request all landing while the loop
    scans its channels (the scan, finding the request, returns it without looking at the
    connect epoch): the loop, seeing the epoch moved, looks at that channel's owner first."""
    import foundation_shm._server as server_module

    real = server_module.poll_channels
    interleave: list[Callable[[], None]] = []

    def poll_channels(ctl: Segment) -> Callable[..., int]:
        poll = real(ctl)

        def scan(*args: object) -> int:
            if interleave and args[3]:  # the scan with a spin window, whose result is dispatched
                interleave.pop()()  # on the loop's thread, inside its scan
            return poll(*args)

        return scan

    monkeypatch.setattr(server_module, "poll_channels", poll_channels)
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    hostile = _Hostile(name)
    claimed: list[tuple[ShmClient, threading.Thread, list[object]]] = []
    try:

        def free_and_claim() -> None:
            hostile.free()
            claimed.append(_claim_and_publish(name, X_NEW))

        interleave.append(free_and_claim)
        assert until(lambda: bool(claimed) and not interleave)
        client, thread, got = claimed[0]
        thread.join(60)
        (ch,) = client._all
        client.close()
        assert (ch.index, ch.gen) == (hostile.index, hostile.gen)
        _answered_its_own(got, X_NEW)
    finally:
        hostile.close()
        server.stop()


_HOSTILE_PENDING = """
import os, sys, threading
import numpy as np
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._ownership import region_mutex
from foundation_shm._segments import unlink_segment
from foundation_ml import InferenceRequest

client = ShmClient(sys.argv[1], timeout=30, channels=1)
client.infer(InferenceRequest("echo", {"x": np.full(4, 7, np.float32)}), copy_outputs=True)
(ch,) = client._all
conn = client._connection()
held = InferenceRequest("held", {"x": np.full(4, 9, np.float32)})
threading.Thread(target=lambda: client.infer(held), daemon=True).start()
print(ch.index, ch.gen, flush=True)
sys.stdin.readline()  # the request is with the handler
with region_mutex(conn, 30):  # frees its channel with its request pending, as _HOSTILE does
    conn.ctl.u64[(ch.base + L.ChannelField.DATA_GEN) // 8] = ch.gen - 1
    conn.ctl.u32[(ch.base + L.ChannelField.OWNER_PID) // 4] = 0
    conn.ctl.u64[L.RegionField.CONNECT_EPOCH // 8] += 1
unlink_segment(ch.data.name)
os._exit(0)
"""


def test_the_late_answer_to_a_previous_owners_request_never_lands_on_the_new_owners_call(name: str) -> None:
    """A client freed its channel with a request still with the handler (and data_gen one
    below the generation mapped), a new client claimed it and published its own request under
    the same sequence number. The handler's late answer to the old request passed the answer's
    checks (same lease, client_seq its sequence number): it was written into the old owner's
    segment and published, and the new client's call read its own, empty, response area
    (BadMagic) in place of an answer to its request. The answer is dropped, and the new owner's
    request is served."""
    handler = HeldHandler()
    server = ShmTransport().serve(name, handler, channels=2)
    hostile = subprocess.Popen(
        [sys.executable, "-c", _HOSTILE_PENDING, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hostile.stdin is not None and hostile.stdout is not None
        index, gen = map(int, hostile.stdout.readline().split())
        assert until(lambda: bool(handler.held)), "the old owner's request never reached the handler"
        hostile.stdin.write("go\n")
        hostile.stdin.flush()
        assert hostile.wait(60) == 0
        client, thread, got = _claim_and_publish(name, X_NEW)
        (ch,) = client._all
        assert (ch.index, ch.gen) == (index, gen)  # the generation the server mapped
        request, respond = handler.held[0]
        respond(InferenceResponse(request.id, "held", request.inputs))  # late: the old owner is gone
        thread.join(60)
        client.close()
        _answered_its_own(got, X_NEW)
    finally:
        if hostile.poll() is None:
            hostile.kill()
        hostile.communicate()
        server.stop()


# --- a request whose client gave its channel back before the serving loop took it ------------------


class _GateCounting(_Gate):
    """``_Gate``, recording what the server reports as rejected (``RequestHandler.rejected``)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[tuple[str, InferenceError]] = []

    def rejected(self, model: str, version: str, error: InferenceError) -> None:
        self.refused.append((model, error))


def test_a_request_given_back_before_the_loop_took_it_is_no_internal_error(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A new client's first request waited behind a long one of another client, its call ended
    DeadlineExceeded, and it closed: the channel given back (owner_start_time = 0) and its data
    segment unlinked. The loop then took the request, could not map the segment, warned
    ``ExistentialError('No shared memory exists ...')`` and ``no data segment to answer in;
    parking the channel``, and counted an INTERNAL rejection (a soak's stats said ``rejected:
    INTERNAL``) for a client that had only timed out. Nobody waits for that request: it is
    dropped, as the reclaim drops it, without a word or a count; the channel is reclaimed."""
    handler = _GateCounting()
    # no beat meanwhile: the heartbeat's reclaim would otherwise race the loop for the request
    server = ShmTransport().serve(name, handler, channels=2, heartbeat_ms=60_000)
    blocker = ShmClient(name, timeout=60, channels=1)
    blocked = threading.Thread(target=lambda: blocker.infer(InferenceRequest("gate", {"x": X_NEW})))
    try:
        blocked.start()
        assert handler.entered.wait(60), "the gate request never reached the handler"
        late = ShmClient(name, timeout=30, channels=1)
        with pytest.raises(DeadlineExceeded):
            late.infer(REQUEST, timeout=0.2)
        (ch,) = late._all
        index = ch.index
        late.close()  # gives the channel back, its request pending, and unlinks its segment
        with caplog.at_level(logging.INFO, logger="foundation_shm"):
            handler.open.set()
            blocked.join(60)
            sch = server._channels[index]
            assert until(lambda: index in server._parked or server._u64[sch.sseq] == server._u64[sch.cseq])
            server._reap()  # the beat's reclaim, now
        assert handler.refused == [], handler.refused
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert index not in {i for i, _ in _owners(name)}, "the channel given back was not reclaimed"
        assert index not in server._parked
        with ShmTransport().connect(name, timeout=30) as fresh:
            np.testing.assert_array_equal(fresh.infer(REQUEST).outputs["x"], REQUEST.inputs["x"])
    finally:
        handler.open.set()
        blocked.join(60)
        blocker.close()
        server.stop()
