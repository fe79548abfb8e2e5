"""Native clients killed with SIGKILL (docs/protocol/shm.md 10.4): mid-request, idle, mid-loan;
and their servers killed and restarted (10.3).

Each client's ``fdn-client`` runs as a real process against a real server
(``clients/tests/gate_server.py``) and is killed at a point the test knows it has reached, with no
sleep: its request held at a gate of the server (which says so with a file), or the client held
by ``--hold STAGE`` (which says so on stderr). The server reclaims its channel at its next
heartbeat, unlinks its data segment, counts it in ``stats()``; the next client gets the channel
and clients beside it are answered as if nothing had happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _layout as L
from foundation_shm._objects import objects_of, remove_objects
from foundation_shm._region import read_region
from foundation_shm._segments import Segment

from foundation_ml._process import ServerProcess

if TYPE_CHECKING:
    from conftest import NativeClient

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PATIENCE = 60.0  # where a test gives up waiting; each wait returns as soon as its condition holds


class _GateServer(ServerProcess):
    """``gate_server.py NAME DIR --channels N`` in its own process."""

    ready_line = "ready"

    def __init__(self, name: str, gates: Path, channels: int) -> None:
        super().__init__([])
        self.args = [
            sys.executable,
            str(HERE / "gate_server.py"),
            name,
            str(gates),
            "--channels",
            str(channels),
        ]


@pytest.fixture
def gate_server(
    client: NativeClient, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[[int], str]]:
    """Start a gate server with N channels; it is stopped (SIGTERM) after the test, and neither it
    nor any client left anything in /dev/shm."""
    started: list[tuple[str, _GateServer]] = []

    def start(channels: int) -> str:
        name = unique_name(f"crash{len(started)}_{client.lang}")
        started.append((name, _GateServer(name, tmp_path, channels).start()))
        return name

    yield start
    for name, server in started:
        server.stop()
        (tmp_path / "all.release").touch()
        left = objects_of(name)
        remove_objects(name)
        assert left == [], f"left in /dev/shm after the server stopped: {left}"
        assert server.returncode == 0, server.output


def _until(condition: Callable[[], bool], what: str) -> None:
    if not _wait(condition):
        raise AssertionError(f"gave up after {PATIENCE:.0f} s waiting for {what}")


def _wait(condition: Callable[[], bool]) -> bool:
    end = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def _owners(name: str) -> list[int]:
    """The pids owning a channel of server ``name`` (its control segment's owner words)."""
    return list(read_region(name)["clients"])


def _beats(name: str) -> int:
    """Server ``name``'s heartbeat count (its region header's ``heartbeat``, spec section 3)."""
    ctl = Segment.open(L.control_name(name))
    try:
        return int(ctl.u64[L.RegionField.HEARTBEAT // 8])
    finally:
        ctl.close()


def _segments_of(name: str, pid: int) -> list[str]:
    """Data segments (``fdn-NAME-d{i}-{pid}-{gen}``) in /dev/shm created by process ``pid``."""
    return [o for o in objects_of(name) if o.startswith(f"fdn-{name}-d") and f"-{pid}-" in o]


def _stats(name: str) -> dict[str, Any]:
    """The gate server's stats, through a Python client (it takes a channel for the call)."""
    with ShmTransport().connect(name, channels=1) as c:
        return c.stats(timeout=PATIENCE)


def _input(tmp_path: Path, tag: str, values: list[float]) -> tuple[str, list[float]]:
    """An --input spec of an FP32 tensor ``x`` holding ``values``, and the values."""
    path = tmp_path / f"{tag}.bin"
    np.array(values, "<f4").tofile(path)
    return f"x:FP32:{len(values)}:{path}", values


def _argv(client: NativeClient, name: str, model: str, spec: str, *extra: str) -> list[str]:
    return [str(client.path), "infer", "--name", name, "--model", model, "--input", spec, *extra]


def _served(client: NativeClient, name: str, tmp_path: Path, tag: str) -> None:
    """One fdn-client call of the echo model on server ``name``: answered with its own input."""
    spec, values = _input(tmp_path, tag, [float(len(tag)), 2.5, -1.0])
    proc = subprocess.run(
        _argv(client, name, "echo", spec, "--timeout-ms", "30000"),
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout!r} {proc.stderr!r}"
    assert json.loads(proc.stdout)["outputs"]["x"]["data"] == values


def _killed_and_reclaimed(name: str, victim: subprocess.Popen[Any]) -> None:
    """Kill ``victim`` (which owns a channel, with a data segment) by SIGKILL; wait for the server
    to reclaim its channel; its data segment is then gone from /dev/shm."""
    assert victim.pid in _owners(name)
    assert _segments_of(name, victim.pid), "the victim's data segment (the check below would pass without)"
    victim.kill()
    victim.wait(PATIENCE)
    _until(lambda: victim.pid not in _owners(name), "the server to reclaim the killed client's channel")
    assert _segments_of(name, victim.pid) == [], "the killed client's data segment, once reclaimed"


def _reclaimed(name: str) -> dict[str, int]:
    return dict(_stats(name)["transport"]["reclaimed"])


@pytest.mark.parametrize("n", [2, 300_000], ids=["small", "grown"])
def test_a_client_killed_while_the_server_has_its_request_is_reclaimed_and_the_next_one_served(
    client: NativeClient, gate_server: Callable[[int], str], tmp_path: Path, n: int
) -> None:
    """One channel: the victim's request is at the gate when it is killed. The server reclaims
    the channel with the answer still owed; a following client is served on it; the late answer
    is then dropped, touching nothing, and the next client is served too. ``grown``: 1.2 MB of
    input, more than the default 1 MiB area, so the segment killed with is the client's second
    (the first unlinked by the client as it grew)."""
    name = gate_server(1)
    spec, _ = _input(tmp_path, "victim", [1.0] * n)
    victim = subprocess.Popen(_argv(client, name, "gate_v", spec), stdout=subprocess.PIPE, text=True)
    try:
        _until(lambda: (tmp_path / "gate_v.with-server").exists(), "the victim's request at the server")
        _killed_and_reclaimed(name, victim)
    finally:
        victim.kill()
        victim.communicate()
    _served(client, name, tmp_path, "next")  # the one channel, its late answer still owed
    (tmp_path / "gate_v.release").touch()
    _until(lambda: (tmp_path / "gate_v.answered").exists(), "the late answer")
    _served(client, name, tmp_path, "after_the_late_answer")
    assert _reclaimed(name) == {"dead_client": 1, "given_back": 0}
    assert _owners(name) == []


def test_clients_beside_a_killed_one_are_answered_as_if_nothing_happened(
    client: NativeClient, gate_server: Callable[[int], str], tmp_path: Path
) -> None:
    """Two channels: another client's request and the victim's are both at the server when the
    victim is killed; a third client gets the victim's channel while the other still waits, and
    the other gets its own answer once released."""
    name = gate_server(2)
    other_spec, other_values = _input(tmp_path, "other", [7.0, 8.0, 9.0])
    victim_spec, _ = _input(tmp_path, "victim", [1.0, 2.0])
    other = subprocess.Popen(_argv(client, name, "gate_o", other_spec), stdout=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_argv(client, name, "gate_v", victim_spec), stdout=subprocess.PIPE, text=True)
    try:
        for model in ("gate_o", "gate_v"):
            _until(
                lambda m=model: (tmp_path / f"{m}.with-server").exists(), f"{model}'s request at the server"
            )
        _killed_and_reclaimed(name, victim)
        assert _owners(name) == [other.pid]
        _served(client, name, tmp_path, "third")  # on the victim's channel: the other still has its own
        (tmp_path / "gate_v.release").touch()
        _until(lambda: (tmp_path / "gate_v.answered").exists(), "the victim's late answer")
        (tmp_path / "gate_o.release").touch()
        out, _ = other.communicate(timeout=PATIENCE)
    finally:
        for proc in (victim, other):
            proc.kill()
            proc.communicate()
    assert other.returncode == 0, out
    assert json.loads(out)["outputs"]["x"]["data"] == other_values
    assert _reclaimed(name) == {"dead_client": 1, "given_back": 0}


def _held(client: NativeClient, name: str, spec: str, stage: str, *more: str) -> subprocess.Popen[str]:
    """fdn-client calling echo with ``--hold STAGE`` (and ``more`` options), once it says it is
    held there."""
    extra = ["--hold", stage, *(["--loan"] if stage == "loaned" else []), *more]
    proc = subprocess.Popen(
        _argv(client, name, "echo", spec, "--timeout-ms", "30000", *extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # (a client that dies first gives "": failed below, not hung)
    if line != f"held {stage}\n":
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"want 'held {stage}', got {line!r}: {out!r} {err!r}")
    return proc


STAGES = ["connected", "answered", "loaned"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_held_client_goes_on_when_its_stdin_closes(
    client: NativeClient, gate_server: Callable[[int], str], tmp_path: Path, stage: str
) -> None:
    """``--hold STAGE`` (what the tests below kill at) changes nothing else: released, the call
    is made (the loan's inputs, written before the hold, are those sent) and answered. Held over
    several heartbeats, the live client's channel is not taken for a dead one's (its
    ``owner_start_time`` is its own, spec 10.3)."""
    name = gate_server(2)
    spec, values = _input(tmp_path, "held", [3.0, 1.0, 4.0, 1.0, 5.0])
    proc = _held(client, name, spec, stage)
    beat = _beats(name)
    _until(lambda: _beats(name) >= beat + 3, "three heartbeats of the server")
    assert _owners(name) == [proc.pid]
    assert _reclaimed(name) == {"dead_client": 0, "given_back": 0}
    out, err = proc.communicate("", timeout=PATIENCE)
    assert proc.returncode == 0, f"{out!r} {err!r}"
    assert json.loads(out)["outputs"]["x"]["data"] == values
    assert _owners(name) == [] and _segments_of(name, proc.pid) == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_client_killed_while_idle_or_mid_loan_is_reclaimed_and_the_next_one_served(
    client: NativeClient, gate_server: Callable[[int], str], tmp_path: Path, stage: str
) -> None:
    """One channel, whose owner is killed idle (connected, before its call; or after it, before
    its close) or with a loan open (inputs written into the area, not sent): the server reclaims
    the channel and unlinks its data segment, and the next client is served on it."""
    name = gate_server(1)
    spec, _ = _input(tmp_path, "victim", [1.0, 2.0])
    victim = _held(client, name, spec, stage)
    try:
        _killed_and_reclaimed(name, victim)
    finally:
        victim.kill()
        victim.communicate()
    _served(client, name, tmp_path, "next")
    assert _reclaimed(name) == {"dead_client": 1, "given_back": 0}
    assert _owners(name) == []


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["infer", "--hold", "later"], "--hold takes connected, answered"),
        (["infer", "--hold", "loaned"], "--hold loaned needs --loan"),
        (["bench", "--hold", "connected"], "--hold goes with infer"),
    ],
    ids=["unknown-stage", "loaned-without-loan", "bench"],
)
def test_a_bad_hold_is_a_usage_error(client: NativeClient, argv: list[str], why: str) -> None:
    cmd = [str(client.path), argv[0], "--name", "x", "--model", "m", *argv[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PATIENCE, check=False)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr


def test_clients_killed_at_any_point_leave_no_channel_and_no_segment(
    client: NativeClient, gate_server: Callable[[int], str], tmp_path: Path
) -> None:
    """Sixteen clients calling in a loop (half with 1.2 MB inputs: each grows its segment) are
    killed at staggered points: before, during or after a claim, a grow, a call. Where each was
    killed is left to chance (the stagger only spreads the points); what must hold does not
    depend on it: every channel is reclaimed, every data segment of theirs unlinked (by a
    reclaim, or the server's sweep of a dead pid's segments that no channel names, spec 10.4),
    and all four channels serve again."""
    name = gate_server(4)
    small, _ = _input(tmp_path, "small", [1.0, 2.0])
    big, _ = _input(tmp_path, "big", [1.0] * 300_000)
    pids = []
    for i in range(16):
        argv = [
            str(client.path),
            "bench",
            "--name",
            name,
            "--model",
            "echo",
            "--input",
            big if i % 2 else small,
        ]
        proc = subprocess.Popen(
            [*argv, "--iterations", "1000000000", "--warmup", "0"], stdout=subprocess.DEVNULL
        )
        time.sleep(0.003 * i)
        proc.kill()
        proc.wait(PATIENCE)
        pids.append(proc.pid)
    _until(lambda: not set(pids) & set(_owners(name)), "every killed client's channel to be reclaimed")
    _until(
        lambda: not [o for p in pids for o in _segments_of(name, p)], "every killed client's segment unlinked"
    )
    assert _reclaimed(name)["given_back"] == 0  # (dead_client: those killed after their claim)
    gates = [f"gate_{i}" for i in range(4)]  # four requests with the server at once: four channels
    procs = [
        subprocess.Popen(_argv(client, name, g, small), stdout=subprocess.PIPE, text=True) for g in gates
    ]
    try:
        for g in gates:
            _until(lambda g=g: (tmp_path / f"{g}.with-server").exists(), f"{g}'s request at the server")
        for g in gates:
            (tmp_path / f"{g}.release").touch()
        outs = [proc.communicate(timeout=PATIENCE)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert [proc.returncode for proc in procs] == [0] * 4, outs


# Killed (SIGKILL) and restarted under its name (shm.md 10.3): a request the dead server never
# dispatched (server_busy still 0) is sent once more to the new server, within the call's deadline;
# before, the first call of every idle client failed SERVER_UNAVAILABLE ('(pid N) is gone') although
# the new server was up. A dispatched request, a loan, or a call with no server to go to fails as
# before, and the new server never sees it. The client is held idle between two calls by
# ``--hold again``, or stopped (SIGSTOP) while its request is at the dead server's gate.
class _Servers:
    """Gate servers started one after another under one name (the previous one killed)."""

    def __init__(self, name: str, gates: Path) -> None:
        self.name, self.gates = name, gates
        self.all: list[_GateServer] = []

    def start(self) -> _GateServer:
        server = _GateServer(self.name, self.gates, 2)
        server.start()
        self.all.append(server)
        return server

    def kill(self) -> int:
        """SIGKILL the current server; its pid."""
        pid = self.all[-1].pid
        assert self.all[-1].stop(signal.SIGKILL) == -signal.SIGKILL
        return pid

    def requests(self) -> int:
        """The current server's count of requests its handler was given."""
        with ShmTransport().connect(self.name, channels=1) as c:
            return int(c.stats(timeout=PATIENCE)["requests"])


@pytest.fixture
def servers(client: NativeClient, unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[_Servers]:
    """Gate servers of one name; the last one is stopped after the test and nothing is left."""
    s = _Servers(unique_name(f"restart_{client.lang}"), tmp_path)
    yield s
    last = s.all[-1] if s.all else None
    if last is not None and last.proc is not None and last.proc.poll() is None:
        assert last.stop() == 0, last.output
        assert objects_of(s.name) == [], "left in /dev/shm by the last server"
    remove_objects(s.name)  # (a killed server's, none restarted)


def _answer(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate("", timeout=PATIENCE)
    assert out, err
    return dict(json.loads(out))


@pytest.mark.parametrize("loan", [False, True], ids=["copy", "loan"])
def test_an_idle_clients_next_call_after_a_crash_and_a_restart(
    client: NativeClient, servers: _Servers, tmp_path: Path, loan: bool
) -> None:
    """Held idle after one answered call; the server killed and another started: the next call is
    answered by the new server (its handler given that one request). A loan (its inputs written
    into the dead server's area) is not sent again: SERVER_UNAVAILABLE gone, the new server
    given nothing."""
    servers.start()
    spec, values = _input(tmp_path, "again", [3.0, 1.0, 4.0])
    extra = ["--loan"] if loan else []
    proc = _held(client, servers.name, spec, "again", *extra)
    dead = servers.kill()
    servers.start()
    got = _answer(proc)
    if loan:
        assert got["error"] == "SERVER_UNAVAILABLE" and f"(pid {dead}) is gone" in got["message"], got
        assert servers.requests() == 0
    else:
        assert got["ok"] and got["outputs"]["x"]["data"] == values, got
        assert servers.requests() == 1


def test_a_call_with_no_server_restarted_is_gone_as_before(
    client: NativeClient, servers: _Servers, tmp_path: Path
) -> None:
    servers.start()
    spec, _ = _input(tmp_path, "none", [1.0])
    proc = _held(client, servers.name, spec, "again")
    dead = servers.kill()
    got = _answer(proc)
    assert got["error"] == "SERVER_UNAVAILABLE", got
    assert f"(pid {dead}) is gone" in got["message"], got
    assert proc.returncode != 0


def test_a_request_the_dead_server_had_dispatched_is_not_sent_again(
    client: NativeClient, servers: _Servers, tmp_path: Path
) -> None:
    """The request is at the gate (with the handler, server_busy 1) when the server is killed;
    the client, stopped meanwhile, goes on only once the new server is up: it fails gone, and
    the new server never sees the request."""
    servers.start()
    spec, _ = _input(tmp_path, "gate", [1.0, 2.0])
    argv = _argv(client, servers.name, "gate_v", spec, "--timeout-ms", "30000")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        _until(lambda: (tmp_path / "gate_v.with-server").exists(), "the request at the server's gate")
        proc.send_signal(signal.SIGSTOP)
        dead = servers.kill()
        servers.start()
        proc.send_signal(signal.SIGCONT)
        got = _answer(proc)
    finally:
        proc.kill()
        proc.communicate()
    assert got["error"] == "SERVER_UNAVAILABLE" and f"(pid {dead}) is gone" in got["message"], got
    assert servers.requests() == 0


def test_a_call_after_a_graceful_stop_with_no_server_since_says_there_is_none(
    client: NativeClient, servers: _Servers, tmp_path: Path
) -> None:
    """Held idle after one answered call; the server stopped gracefully (SIGTERM: its region
    STOPPED, its objects removed) and none started since. The call, which found the region
    STOPPED before writing anything, fails as its reconnect did: 'no shm server named NAME', the
    words every client (Python too) gives a connect to a name nobody serves (spec 10.1,
    Reconnect), not the '... is gone; not sent again' of a call whose server died. The Rust client
    added its OS error, '(No such file or directory (os error 2))'."""
    servers.start()
    spec, _ = _input(tmp_path, "stopped", [1.0])
    proc = _held(client, servers.name, spec, "again")
    assert servers.all[-1].stop() == 0, servers.all[-1].output
    got = _answer(proc)
    named = f"'{servers.name}'" if client.lang == "c" else f'"{servers.name}"'
    assert (got["error"], got["message"]) == ("SERVER_UNAVAILABLE", f"no shm server named {named}"), got
    assert proc.returncode != 0
