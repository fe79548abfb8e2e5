"""The client's channel pool under misuse: closing during a call, an interrupt between publishing
and noting a request, two loans on one thread, a fork. None may crash the process, lose a channel
for good or hand one process's channel to another."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler

from foundation_ml import DataType, InferenceRequest, InferenceResponse
from foundation_ml.errors import ServerUnavailable


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_closing_a_client_while_another_thread_waits_fails_that_call_not_the_process(name: str) -> None:
    done = _run(f"""
        import threading, time, numpy as np
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport
        from foundation_shm._echo import EchoHandler
        server = ShmTransport().serve({name!r}, EchoHandler())
        client = ShmTransport().connect({name!r})
        got = []
        def call():
            try:
                slow = InferenceRequest("sleep", {{"x": np.zeros(4)}}, parameters={{"ms": 300}})
                client.infer(slow, timeout=5)
                got.append("answered")
            except Exception as exc:
                got.append(type(exc).__name__ + ": " + str(exc))
        t = threading.Thread(target=call); t.start()
        time.sleep(0.1)
        client.close()
        t.join()
        time.sleep(0.4)  # the server answers the abandoned request, then reclaims the channel
        server.stop()
        print(got[0])
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ServerUnavailable: the client of shm server" in done.stdout or "answered" in done.stdout


def test_a_waiting_call_woken_by_the_reclaim_of_its_closed_client_does_not_read_the_channel(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order the test above leaves to the scheduler, forced: ``close()`` gives back the channel
    of a call still waiting, and the server's heartbeat reclaims it (``server_seq = client_seq``,
    spec 10.4) before the waiting thread looks again. That thread sees its sequence "answered",
    but nothing was written: it must fail ServerUnavailable, not decode the response area (it
    raised BadMagic on zeros, or, on a channel used before, returned the last response again)."""
    import foundation_shm._client as client_module

    reclaimed = threading.Event()
    real_wait = client_module.wait_seq

    def wait_after_the_reclaim(*args: Any) -> bool:
        assert reclaimed.wait(10)
        return real_wait(*args)

    server = ShmTransport().serve(name, EchoHandler())
    try:
        client = ShmTransport().connect(name, channels=1)
        x = np.arange(4, dtype=np.float32)
        client.infer(InferenceRequest("sleep", {"x": x}, parameters={"ms": 1}))  # a response there
        monkeypatch.setattr(client_module, "wait_seq", wait_after_the_reclaim)
        got: list[BaseException | InferenceResponse] = []

        def call() -> None:
            try:
                slow = InferenceRequest("sleep", {"x": x}, parameters={"ms": 300})
                got.append(client.infer(slow, timeout=5))
            except BaseException as exc:
                got.append(exc)

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 5
        while not client._pool._busy and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)  # published: the server holds the request
        client.close()
        server._reap()  # the heartbeat's reclaim, now rather than at its next beat
        reclaimed.set()
        t.join(10)
        assert len(got) == 1
        assert isinstance(got[0], ServerUnavailable), got[0]
        assert "closed during the call" in str(got[0])
    finally:
        server.stop()


def test_a_request_published_but_not_noted_does_not_lose_the_channel(name: str) -> None:
    """What a KeyboardInterrupt between ``hot.exchange`` publishing and ``ch.seq = seq`` leaves:
    client_seq one ahead of the client's note. The answer comes; the channel is usable again."""
    server = ShmTransport().serve(name, EchoHandler())
    try:
        with ShmTransport().connect(name, channels=1) as client:
            x = np.arange(4, dtype=np.float32)
            client.infer(InferenceRequest("echo", {"x": x}))
            ch = client._all[0]
            words = ch.words
            words[ch.cseq] = ch.seq + 1  # published; ch.seq not updated (the interrupt)
            server._bell.release()
            end = time.monotonic() + 5
            while words[ch.sseq] != words[ch.cseq] and time.monotonic() < end:
                time.sleep(0.001)
            out = client.infer(InferenceRequest("echo", {"x": x + 1}), timeout=2)
            np.testing.assert_array_equal(out.outputs["x"], x + 1)
    finally:
        server.stop()


def test_two_loans_open_on_one_thread_lose_no_channel(name: str) -> None:
    server = ShmTransport().serve(name, EchoHandler())
    spec = {"x": (DataType.FP32, (4,))}
    try:
        with ShmTransport().connect(name, channels=2) as client:
            for _ in range(3):  # before the fix, the second round found no free channel
                first = client.loan("echo", spec, timeout=2)
                second = client.loan("echo", spec, timeout=2)
                first.infer()
                second.infer()
                first.close()
                second.close()
            assert len(client._all) == 2
    finally:
        server.stop()


def test_a_forked_child_uses_channels_of_its_own(name: str) -> None:
    done = _run(f"""
        import os, numpy as np
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport
        from foundation_shm._echo import EchoHandler
        server = ShmTransport().serve({name!r}, EchoHandler(), channels=4)
        client = ShmTransport().connect({name!r}, channels=1)
        x = np.ones(4, np.float32)
        client.infer(InferenceRequest("echo", {{"x": x}}))
        pid = os.fork()
        if pid == 0:
            out = client.infer(InferenceRequest("echo", {{"x": x * 2}}), timeout=5)
            os._exit(0 if (out.outputs["x"] == 2).all() else 3)
        _, status = os.waitpid(pid, 0)
        out = client.infer(InferenceRequest("echo", {{"x": x * 3}}), timeout=5)
        print("child", os.waitstatus_to_exitcode(status), "parent", float(out.outputs["x"][0]))
        client.close()
        server.stop()
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "0", "parent", "3.0"]
    assert os.getpid()  # the test process itself never forked


def test_a_server_that_goes_away_while_a_client_connects_is_server_unavailable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops (removing its objects) between the client opening its control segment
    and its semaphores: posix_ipc.ExistentialError escaped untyped (and, a step earlier, the
    FileNotFoundError of a stat by name)."""
    import foundation_shm._channel as channel_module

    server = ShmTransport().serve(name, EchoHandler())
    real_open = channel_module.open_semaphore

    def stop_first(sem_name: str) -> Any:
        server.stop()
        return real_open(sem_name)

    monkeypatch.setattr(channel_module, "open_semaphore", stop_first)
    try:
        with pytest.raises(ServerUnavailable, match="went away while connecting"):
            ShmTransport().connect(name)
    finally:
        server.stop()


def test_calls_from_many_threads_while_the_server_stops_fail_typed(name: str) -> None:
    """Threads calling in a loop while the server stops: each call answers or raises an
    InferenceError (ServerUnavailable, ShuttingDown), never a RuntimeError of the pool's
    bookkeeping ("Set changed size during iteration": a drop copied the busy set while a give
    changed it) nor an untyped error of a channel retired under a call. Six rounds, the thread
    switch interval cut to 10 µs so that the threads interleave between bytecodes."""
    from foundation_ml.errors import InferenceError

    untyped: list[str] = []
    answered = 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for _ in range(6):
            server = ShmTransport().serve(name, EchoHandler(), channels=8)
            client = ShmTransport().connect(name, channels=4, timeout=2, connect_timeout=0.5)
            stop = threading.Event()

            def loop(c: Any = client, stop: threading.Event = stop) -> None:
                nonlocal answered
                x = np.ones(4, np.float32)
                while not stop.is_set():
                    try:
                        c.infer(InferenceRequest("echo", {"x": x}))
                        answered += 1
                    except InferenceError:
                        pass
                    except Exception as exc:
                        untyped.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=loop) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.05)
            server.stop()
            time.sleep(0.02)
            stop.set()
            for t in threads:
                t.join(30)
            client.close()
    finally:
        sys.setswitchinterval(interval)
    assert answered > 0
    assert untyped == []


def test_close_does_not_free_a_channel_a_call_has_taken_but_not_yet_published_on(name: str) -> None:
    """close() in one thread while another thread's call holds a channel it has not published on
    yet: close freed it (owner_pid = 0) as idle, another client could claim it, and the call then
    published its request onto that client's channel. Now close marks it for the server to
    reclaim (owner_start_time = 0), and the call publishes nothing: ServerUnavailable."""
    from foundation_shm import _layout as L

    server = ShmTransport().serve(name, EchoHandler())
    try:
        client = ShmTransport().connect(name, channels=1)
        pool = client._pool
        ch = pool.take(0)  # the call's first step; it would write and publish next
        owner_pid = (ch.base + L.ChannelField.OWNER_PID) // 4
        owner_start = (ch.base + L.ChannelField.OWNER_START) // 8
        ctl = ch.conn.ctl
        published = ctl.u64[ch.cseq]
        client.close()
        assert ctl.u32[owner_pid] == os.getpid()  # not free for another client to claim
        assert ctl.u64[owner_start] == 0  # the server's to reclaim
        with pytest.raises(ServerUnavailable, match="closed during the call"):
            client._exchange(ch, 1, "echo", time.monotonic_ns() + 2 * 10**9, retry=False)
        assert ctl.u64[ch.cseq] == published  # nothing published
        pool.give(ch)
    finally:
        server.stop()
