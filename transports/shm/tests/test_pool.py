"""The client's channel pool under misuse: closing during a call, an interrupt between publishing
and noting a request, two loans on one thread, a fork. None may crash the process, lose a channel
for good or hand one process's channel to another."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler

from foundation_ml import DataType, InferenceRequest, InferenceResponse
from foundation_ml.errors import DeadlineExceeded, ServerUnavailable

from .conftest import EchoProcess, until


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
        client = ShmTransport().connect({name!r}, channels=1)
        ch = client._all[0]
        published = ch.words[ch.cseq]
        got = []
        def call():
            try:
                slow = InferenceRequest("sleep", {{"x": np.zeros(4)}}, parameters={{"ms": 300}})
                client.infer(slow, timeout=30)
                got.append("answered")
            except Exception as exc:
                got.append(type(exc).__name__ + ": " + str(exc))
        t = threading.Thread(target=call); t.start()
        # the call has published its request (a fixed sleep here let a slow thread call only
        # after the close: "the client is closed", not the close during the call under test)
        end = time.monotonic() + 60
        while ch.words[ch.cseq] == published and time.monotonic() < end:
            time.sleep(0.001)
        client.close()
        t.join()
        time.sleep(0.4)  # the server answers the abandoned request, then reclaims the channel
        server.stop()
        print(got[0])
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "ServerUnavailable: model 'sleep': the client of shm server" in done.stdout
        or "answered" in done.stdout
    ), done.stdout


def test_a_waiting_call_woken_by_the_reclaim_of_its_closed_client_does_not_read_the_channel(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order the test above leaves to the scheduler, forced: ``close()`` gives back the channel
    of a call still waiting, and the server's heartbeat reclaims it (``server_seq = client_seq``,
    spec 10.4) before the waiting thread looks again. That thread sees its sequence "answered",
    but nothing was written: it must fail ServerUnavailable, not decode the response area (it
    raised BadMagic on zeros, or, on a channel used before, returned the last response again)."""
    import foundation_shm._client as client_module

    waiting, reclaimed = threading.Event(), threading.Event()
    real_wait = client_module.wait_seq

    def wait_after_the_reclaim(*args: Any) -> bool:
        waiting.set()  # the request is published: the call waits for its answer
        assert reclaimed.wait(30)
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
        assert waiting.wait(30)  # published (a fixed sleep here let a slow thread publish later)
        client.close()
        server._reap()  # the heartbeat's reclaim, now rather than at its next beat
        reclaimed.set()
        t.join(30)
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


def test_forked_children_calling_with_the_parent_at_once_each_get_their_own_answers(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """A client made before the fork (channels=1, so a shared channel could not go unnoticed),
    used by the parent and three children at once against a real server process: every answer
    is the caller's own, each child claims a channel of its own, and the children's ``close()``
    and exit leave the parent on the channel it had, still answering (pins the fork hook)."""
    echo_process("--channels", "8")
    done = _run(f"""
        import os, numpy as np
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport
        client = ShmTransport().connect({name!r}, channels=1)

        def calls(tag):
            for i in range(300):
                x = np.full(16, tag * 1000 + i, np.float64)
                out = client.infer(InferenceRequest("echo", {{"x": x}}, id=tag * 1000 + i + 1), timeout=30)
                if out.id != tag * 1000 + i + 1 or not (out.outputs["x"] == x).all():
                    return False
            return True

        calls(0)
        mine = [ch.index for ch in client._all]
        go_r, go_w = os.pipe()
        kids = []
        for k in (1, 2, 3):
            pid = os.fork()
            if pid == 0:
                os.read(go_r, 1)  # all start together with the parent
                ok = calls(k) and [ch.index for ch in client._all] != mine
                client.close()
                os._exit(0 if ok else 3)
            kids.append(pid)
        os.write(go_w, b"xxx")
        ok = calls(4)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in kids]
        print(*codes, ok and calls(5), [ch.index for ch in client._all] == mine)
        client.close()
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "0", "0", "True", "True"]


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
            answered_before = answered
            for t in threads:
                t.start()
            end = time.monotonic() + 60  # the threads call (a fixed sleep: maybe not yet, loaded)
            while answered == answered_before and time.monotonic() < end:
                time.sleep(0.001)
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


def test_a_channel_taken_on_the_slow_path_is_busy_before_a_drop_can_retire_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No free channel at hand, a call takes one under the pool's lock (one claimed, or one found
    free there), but marked it busy only after letting the lock go: a drop in another thread in
    between (it found the server stopped, or ``close()``) took it for idle and retired it, its
    areas unmapped under the call, which failed untyped ('ValueError: offset must be non-negative
    and no greater than buffer length (0)'; seen under load in the test above). Now it is busy
    before the lock goes: the drop leaves it to the call, which fails ServerUnavailable."""
    import foundation_shm._pool as pool_module

    real = pool_module.ChannelPool._take_slow

    def then_dropped(self: Any, *args: Any) -> Any:
        ch = real(self, *args)
        with self._cond:  # another thread's drop, right after this one let the lock go
            self._drop_connection()
        return ch

    server = ShmTransport().serve(name, EchoHandler(), channels=4)
    try:
        with ShmTransport().connect(name, channels=2) as client:
            first = client._take(0)  # the free channel: the call below takes the slow path
            monkeypatch.setattr(pool_module.ChannelPool, "_take_slow", then_dropped)
            with pytest.raises(ServerUnavailable):
                client.infer(InferenceRequest("echo", {"x": np.ones(4, np.float32)}), timeout=30)
            monkeypatch.undo()
            client._give(first)
            assert client._pool._retiring == {}  # each retired by its call's give, the connection closed
    finally:
        server.stop()


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


# --- channels kept for views: only by threads that asked for views ----------------------------


def _kept(client: Any) -> int:
    """How many channels the client keeps for threads' output views."""
    return sum(1 for box in client._pool._holders if box[0] is not None)


def test_a_thread_that_ends_gives_back_the_channel_it_kept_for_its_views(
    echo_process: Any, name: str
) -> None:
    """The documented rule: a thread keeps its channel until its next call, or until it ends. The
    pool's list of holders referred to each thread's holder object, so the finalizer that gives
    the channel back when the thread-local goes never ran: every thread that ever got views kept
    a channel of the server until ``close()`` (a thread per request took them all)."""
    echo_process("--channels", "4")
    with ShmTransport().connect(name, channels=1) as client:
        for i in range(6):  # more threads, one after the other, than the server has channels
            got: list[Any] = []

            def call(i: int = i, got: list[Any] = got) -> None:
                try:
                    got.append(
                        client.infer(InferenceRequest("echo", {"x": np.full(3, i)})).outputs["x"].copy()
                    )
                except BaseException as exc:
                    got.append(exc)

            thread = threading.Thread(target=call)
            thread.start()
            thread.join()
            assert type(got[0]) is np.ndarray, got
            np.testing.assert_array_equal(got[0], i)
            assert _kept(client) == 0
            assert len(client._all) == 1  # the one channel, passed from thread to thread


def test_many_concurrent_ainfer_calls_keep_no_channels_and_leave_the_server_to_others(
    echo_process: Any, name: str
) -> None:
    """``ainfer`` copies its outputs, yet ran ``infer`` returning views in each executor thread,
    which then kept its channel (kept channels do not count against ``channels``): 40 calls from
    one client took all 8 channels of the server (a real process), some of its own calls failed
    ``Overloaded`` and no other client could connect. Now each call gives its channel back."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    echo_process("--channels", "8")

    async def calls(client: Any, n: int) -> tuple[list[Any], int]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))
        requests = [InferenceRequest("echo", {"x": np.full(16, i, np.int64)}) for i in range(n)]
        answers = await asyncio.gather(
            *(client.ainfer(r, timeout=30) for r in requests), return_exceptions=True
        )
        return answers, _kept(client)  # while the executor's threads live (their end gives back)

    with ShmTransport().connect(name, channels=2) as client:
        answers, kept = asyncio.run(calls(client, 40))
        assert kept == 0
        for i, answer in enumerate(answers):
            assert isinstance(answer, InferenceResponse), repr(answer)
            assert answer.outputs["x"].flags.owndata
            np.testing.assert_array_equal(answer.outputs["x"], np.full(16, i, np.int64))
        assert _kept(client) == 0
        assert len(client._all) <= 2  # its `channels`
        with ShmTransport().connect(name, channels=1) as other:  # the server has channels left
            np.testing.assert_array_equal(
                other.infer(InferenceRequest("echo", {"x": np.ones(3)})).outputs["x"], 1
            )


def test_threads_asking_for_copies_keep_no_channel_and_a_thread_asking_for_views_keeps_its_own(
    echo_process: Any, name: str
) -> None:
    """``copy_outputs=True`` per call (and ``infer_copy``): the outputs are the caller's own and the
    channel goes back to the pool, so 12 live threads calling once each hold none of the server's
    4 channels. A thread that asks for views keeps its channel: its views stay its own while the
    other threads call, until its next call."""
    echo_process("--channels", "4")
    with ShmTransport().connect(name, channels=2) as client:
        viewed = client.infer(InferenceRequest("echo", {"x": np.full(4, -1.0)}))  # views: kept
        assert not viewed.outputs["x"].flags.writeable
        called, checked = threading.Barrier(13), threading.Event()
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                request = InferenceRequest("echo", {"x": np.full(4, float(i))})
                if i % 2:
                    y = client.infer(request, timeout=30, copy_outputs=True).outputs["x"]
                else:
                    y = client.infer_copy(request, timeout=30).outputs["x"]
                assert y.flags.owndata and y.flags.writeable
                np.testing.assert_array_equal(y, float(i))
            except BaseException as exc:
                errors.append(exc)
            called.wait(30)
            checked.wait(30)  # alive until checked: a thread's end gives a kept channel back

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        called.wait(30)
        try:
            assert not errors, errors
            assert _kept(client) == 1  # this thread's, for `viewed`
            assert len(client._all) <= 3  # `channels`, and the one kept
            np.testing.assert_array_equal(viewed.outputs["x"], -1.0)  # still this thread's own
            with ShmTransport().connect(name, channels=1) as other:
                np.testing.assert_array_equal(
                    other.infer(InferenceRequest("echo", {"x": np.ones(2)})).outputs["x"], 1
                )
        finally:
            checked.set()
            for t in threads:
                t.join()
        with pytest.raises(TypeError, match="copy_outputs must be True, False or None, not 1"):
            client.infer(InferenceRequest("echo", {"x": np.ones(2)}), copy_outputs=1)  # type: ignore[arg-type]


def test_threads_keeping_channels_for_views_past_the_servers_count_get_an_overloaded_saying_so(
    echo_process: Any, name: str
) -> None:
    """Each thread that got views keeps its channel until its next call (the documented rule); a
    kept channel cannot be taken back, nor waited for (its thread may never call again). With more
    such threads than the server's channels, the call that needs one more fails ``Overloaded``
    naming the cause (a bare 'all 4 channels are in use' hid that the client itself took them) and
    what to do; the other threads' views stay their own."""
    from foundation_ml.errors import Overloaded

    echo_process("--channels", "4")
    with ShmTransport().connect(name, channels=1) as client:
        done = threading.Event()
        answered: list[threading.Event] = []
        outputs: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                outputs[i] = client.infer(
                    InferenceRequest("echo", {"x": np.full(4, float(i))}), timeout=30
                ).outputs["x"]
            except BaseException as exc:
                errors.append(exc)
            answered[i].set()
            done.wait(30)  # alive, keeping its channel for its views

        threads = []
        for i in range(5):  # one after the other: the fifth finds the server's 4 channels kept
            answered.append(threading.Event())
            threads.append(threading.Thread(target=call, args=(i,)))
            threads[-1].start()
            assert answered[i].wait(30)
        try:
            assert sorted(outputs) == [0, 1, 2, 3]
            assert len(errors) == 1 and type(errors[0]) is Overloaded, errors
            message = str(errors[0])
            assert (
                "all 4 channels are in use: this client keeps 4 of them for threads holding output views"
                in message
            )
            assert "copy_outputs=True" in message and "InferenceClient(copy=True)" in message
            for i, y in outputs.items():
                np.testing.assert_array_equal(y, float(i))
            assert _kept(client) == 4
        finally:
            done.set()
            for t in threads:
                t.join()
        # the threads ended: their channels went back, and a call gets one
        np.testing.assert_array_equal(
            client.infer(InferenceRequest("echo", {"x": np.ones(2)})).outputs["x"], 1
        )


@pytest.mark.parametrize("failure", ["missing", "no-descriptors"])
def test_a_connect_that_cannot_open_its_channel_semaphore_gives_the_channel_back(
    echo_process: Any, name: str, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Spec 10.1: the channel is claimed (owner_pid = this process) before its semaphore is opened.
    When that open failed (a semaphore unlinked, or EMFILE in a process out of descriptors) the
    channel stayed owned by this live process, which the server never reclaims: a service whose
    connects kept failing lost a channel per try, until every client got Overloaded. Now it is
    given back as a disconnect without the mutex does (owner_start_time = 0), and the server
    reclaims it: a later connect to this one-channel server is served."""
    import errno
    from pathlib import Path

    import foundation_shm._ownership as ownership_module
    from foundation_shm import _layout as L
    from foundation_shm._segments import Segment

    from foundation_ml.errors import Overloaded

    echo_process("--channels", "1")
    sem_name = L.channel_sem_name(name, 0)
    sem_path = Path("/dev/shm") / f"sem.{sem_name[1:]}"
    kept = sem_path.with_name(f"{sem_path.name}kept")  # a second link to the server's semaphore
    if failure == "missing":
        os.link(sem_path, kept)
        sem_path.unlink()
        says = "went away while connecting"
    else:
        real_open = ownership_module.open_semaphore

        def out_of_descriptors(opened: str) -> Any:
            if opened == sem_name:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return real_open(opened)

        monkeypatch.setattr(ownership_module, "open_semaphore", out_of_descriptors)
        says = f"cannot open the semaphore of channel 0 \\({sem_name}\\): .*Too many open files"
    try:
        with pytest.raises(ServerUnavailable, match=says):
            ShmTransport().connect(name)
        ctl = Segment.open(L.control_name(name))
        try:
            base = L.CHANNELS_OFFSET
            owner = ctl.u32[(base + L.ChannelField.OWNER_PID) // 4]
            started = ctl.u64[(base + L.ChannelField.OWNER_START) // 8]
        finally:
            ctl.close()
        assert owner == 0 or started == 0, f"channel 0 kept by this live process (pid {owner})"
    finally:
        monkeypatch.undo()
        if kept.exists():
            os.rename(kept, sem_path)
    end = time.monotonic() + 10  # the server reclaims it within a heartbeat (100 ms)
    while True:
        try:
            with ShmTransport().connect(name) as client:
                x = client.infer(InferenceRequest("echo", {"x": np.ones(2)})).outputs["x"]
                np.testing.assert_array_equal(x, 1)
            break
        except Overloaded:
            if time.monotonic() > end:
                raise
            time.sleep(0.01)


# --- a wait for the server's region mutex holds no lock of the client -------------------------


@contextlib.contextmanager
def _region_mutex_held(name: str) -> Iterator[None]:
    """The server's region mutex held by this process, as a client process stopped (SIGSTOP, a
    debugger) inside a claim holds it: its holder a live process, so the server never frees it
    (spec 10.4)."""
    from foundation_shm import _layout as L
    from foundation_shm._segments import Segment, open_semaphore

    mutex = open_semaphore(L.mutex_name(name))
    ctl = Segment.open(L.control_name(name))
    holder = L.RegionField.MUTEX_HOLDER // 4
    try:
        mutex.acquire(60)
        ctl.u32[holder] = os.getpid()
        try:
            yield
        finally:
            ctl.u32[holder] = 0
            mutex.release()
    finally:
        mutex.close()
        ctl.close()


def _call_in_thread(
    client: Any, failed: dict[str, BaseException], who: str, timeout: float | None
) -> threading.Thread:
    def run() -> None:
        try:
            client.infer(InferenceRequest("echo", {"x": np.ones(4, np.float32)}), timeout=timeout)
        except BaseException as exc:
            failed[who] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_claim_waiting_for_the_region_mutex_keeps_no_other_thread_waiting(
    echo_process: Callable[..., EchoProcess], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call claiming a channel waits for the server's region mutex, up to connect_timeout (10
    minutes here) while a stopped client holds it, and it waited holding the pool's lock: another
    thread's call that needed a channel too waited as long, past its own 0.2 s timeout. Now that
    call waits for the mutex within its own timeout (DeadlineExceeded, nothing claimed), and the
    first claims its channel once the mutex is free."""
    import foundation_shm._ownership as ownership_module

    echo_process("--channels", "4")
    client = ShmTransport().connect(name, channels=3, connect_timeout=600)
    waiting = threading.Event()
    region_mutex = ownership_module.region_mutex

    def watched(conn: Any, wait: float) -> Any:
        waiting.set()
        return region_mutex(conn, wait)

    failed: dict[str, BaseException] = {}
    try:
        client.infer(InferenceRequest("echo", {"x": np.ones(4, np.float32)}), timeout=30)
        first = client._take(0)  # the free channel: each call below claims one
        monkeypatch.setattr(ownership_module, "region_mutex", watched)
        with _region_mutex_held(name):
            a = _call_in_thread(client, failed, "a", None)
            assert waiting.wait(60), "the call never waited for the region mutex"
            b = _call_in_thread(client, failed, "b", 0.2)
            b.join(60)
            assert not b.is_alive(), "a call waits for another thread's wait for the region mutex"
            assert a.is_alive()
            assert isinstance(failed.get("b"), DeadlineExceeded), failed
            assert "region mutex still busy at the deadline" in str(failed["b"])
            assert len(client._pool._all) == 1  # b claimed nothing; a waits
        a.join(60)
        assert not a.is_alive() and failed == {"b": failed["b"]}, failed
        assert len(client._pool._all) == 2 and client._pool._claiming == {}
        client._give(first)
    finally:
        client.close()


def test_close_waiting_for_the_region_mutex_keeps_no_other_thread_waiting(
    echo_process: Callable[..., EchoProcess], name: str
) -> None:
    """close() waits for the region mutex to give the channels back (up to connect_timeout, 10
    minutes here, while a stopped client holds it), and it waited holding the pool's lock: a call
    from another thread meanwhile waited as long, past its own 0.2 s timeout, to be told the
    client is closed. Now it is told so at once; close() gives the channel back once the mutex
    is free."""
    from foundation_shm._region import read_region

    echo_process("--channels", "4")
    client = ShmTransport().connect(name, channels=2, connect_timeout=600)
    failed: dict[str, BaseException] = {}
    client.infer(InferenceRequest("echo", {"x": np.ones(4, np.float32)}), timeout=30)
    closing = threading.Thread(target=client.close)
    with _region_mutex_held(name):
        closing.start()
        assert until(lambda: client._pool._closed), "close() did not begin"
        b = _call_in_thread(client, failed, "b", 0.2)
        b.join(60)
        assert not b.is_alive(), "a call waits for close()'s wait for the region mutex"
        assert isinstance(failed.get("b"), ServerUnavailable), failed
        assert "is closed" in str(failed["b"]), failed
        assert closing.is_alive()  # it waits for the mutex, to free the channel under it
    closing.join(60)
    assert not closing.is_alive()
    assert read_region(name)["clients"] == []  # freed (owner_pid = 0), not left to be reclaimed


def test_a_forked_child_maps_none_of_the_parents_data_segments(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The child forgets the parent's channels (they are the parent's): their segments are
    unmapped in it once collected, not held for the child's whole life (the pages of every
    segment the parent ever had, unlinked by it since, stayed allocated while a worker lived).
    The registry of data segments by name (``_channel._NAMED``) kept them all."""
    echo_process()
    done = _run(f"""
        import gc, os, numpy as np
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport
        client = ShmTransport().connect({name!r}, channels=2)
        client.infer(InferenceRequest("echo", {{"x": np.ones(4)}}))
        data = client._all[0].data.name
        pid = os.fork()
        if pid == 0:
            gc.collect()
            with open("/proc/self/maps") as f:
                os._exit(3 if any(data in line for line in f) else 0)
        print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        client.close()
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "0"]  # 3: the parent's segment still mapped


def test_a_child_forked_while_another_thread_makes_a_data_segment_can_make_its_own(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """A fork while another thread of the parent held the lock of the registry of data
    segments (``_channel._NAMED_LOCK``: held while a segment is created, its pages allocated,
    or dropped): in the child that thread does not exist, and the lock stayed held for good,
    so the child's first connect (or a grow) hung for ever."""
    echo_process()
    done = _run(f"""
        import os, threading, numpy as np
        from foundation_ml import InferenceRequest
        from foundation_shm import ShmTransport, _channel
        held, go = threading.Event(), threading.Event()

        def creating():  # as a thread in Segment.create under the lock would
            with _channel._NAMED_LOCK:
                held.set()
                go.wait()

        t = threading.Thread(target=creating)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            with ShmTransport().connect({name!r}, timeout=5, connect_timeout=5) as client:
                out = client.infer(InferenceRequest("echo", {{"x": np.ones(4)}}))
            os._exit(0 if (out.outputs["x"] == 1).all() else 3)
        go.set()
        t.join()
        for _ in range(200):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                break
            threading.Event().wait(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("hung")
            raise SystemExit(0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "0"]
