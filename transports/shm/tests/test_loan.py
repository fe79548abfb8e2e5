"""A loan dropped without ``close()`` gives its channel back, as a dropped client does: against a
real server process, more dropped loans than channels leave the client able to call, a loan left
in a traceback or a reference cycle comes back when collected, a closed loan is not given back a
second time, and a dropped loan whose request is still with the server is not used before the
answer is in. A loan call that fails with its request still with the server ends the loan: its
inputs are lent out no more, and the channel waits for that answer. Views (loaned inputs,
outputs) kept past a call, a grow or ``close()`` never fault."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport, _channel
from foundation_shm._client import ShmClient

from foundation_ml import DataType, InferenceRequest
from foundation_ml.errors import DeadlineExceeded, InvalidInput, ServerUnavailable

from .conftest import EchoProcess, stopped

SPEC = {"x": (DataType.FP32, (4,))}


def _echo(client: ShmClient, value: float) -> None:
    x = np.full(4, value, np.float32)
    out = client.infer(InferenceRequest("echo", {"x": x}), timeout=5)
    np.testing.assert_array_equal(out.outputs["x"], x)


def _loan_and_drop(client: ShmClient, value: float) -> None:
    loan = client.loan("echo", SPEC, timeout=2)
    loan["x"][:] = value
    np.testing.assert_array_equal(loan.infer(timeout=5).outputs["x"], np.full(4, value, np.float32))
    with pytest.warns(ResourceWarning, match="shm loan of model 'echo' .* was not returned"):
        del loan


def test_more_dropped_loans_than_channels_leave_the_client_able_to_call(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Before the fix the third loan found no channel (DeadlineExceeded): each dropped one kept its own."""
    echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=2) as client:
        for i in range(6):
            _loan_and_drop(client, float(i))
        _echo(client, 7.0)
        assert len(client._all) <= 2


def _raises_inside_a_loan(client: ShmClient) -> None:
    loan = client.loan("echo", SPEC, timeout=2)
    loan["x"][:] = 1.0
    raise KeyError("user code failed while the loan was open")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_loan_left_by_an_exception_or_in_a_cycle_comes_back_when_collected(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=1) as client:
        for _ in range(3):
            with pytest.raises(KeyError):  # the traceback, and the loan in its frame, go here
                _raises_inside_a_loan(client)
            _echo(client, 2.0)
        gc.disable()  # the cycle must wait for the collection below, not for an allocation
        try:
            loan = client.loan("echo", SPEC, timeout=2)
            cycle: list[Any] = [loan]
            cycle.append(cycle)
            del loan, cycle
            with pytest.raises(DeadlineExceeded):  # not collected yet: the one channel is lent
                _echo_with_timeout(client, 0.05)
            gc.collect()
        finally:
            gc.enable()
        _echo(client, 3.0)


def _echo_with_timeout(client: ShmClient, timeout: float) -> None:
    client.infer(InferenceRequest("echo", {"x": np.zeros(4, np.float32)}), timeout=timeout)


def test_a_closed_loan_is_not_given_back_again_when_dropped(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Given back twice, the channel would be in the free list twice: two calls at once on one channel."""
    echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=2) as client:
        for copy in (False, True):
            client.copy_outputs = copy
            with warnings.catch_warnings():
                warnings.simplefilter("error", ResourceWarning)  # a closed loan does not warn
                loan = client.loan("echo", SPEC, timeout=2)
                loan.infer(timeout=5)
                loan.close()
                loan.close()
                del loan
                gc.collect()
            free = client._pool._free
            assert len(free) == len(set(free))
            _echo(client, 4.0)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_dropped_loan_whose_request_is_with_the_server_is_used_again_only_once_answered(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The loan's call timed out while the server holds it (stopped); its channel comes back to
    the pool, but the next call waits for the server's answer before writing there."""
    server = echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=1) as client:
        loan = client.loan("echo", SPEC, timeout=2)
        with stopped(server):
            with pytest.raises(DeadlineExceeded):
                loan.infer(timeout=0.05)
            ch = loan._channel
            assert ch is not None and not ch.idle()  # with the server until it runs again
            del loan
            gc.collect()
            assert not ch.idle()
        _echo(client, 5.0)  # before the fix: DeadlineExceeded, the channel was the loan's for ever
        assert client._all == [ch]


def test_a_loan_left_open_at_interpreter_exit_or_in_a_forked_child_ends_quietly(name: str) -> None:
    code = f"""
        import os, numpy as np
        from foundation_ml import DataType
        from foundation_shm import ShmTransport
        from foundation_shm._echo import EchoHandler
        server = ShmTransport().serve({name!r}, EchoHandler(), channels=2)
        client = ShmTransport().connect({name!r}, channels=2)
        loan = client.loan("echo", {{"x": (DataType.FP32, (4,))}})
        loan.infer(timeout=5)
        pid = os.fork()
        if pid == 0:  # the parent's loan, dropped in the child: the parent's channel stays its own
            del loan
            os._exit(0)
        os.waitpid(pid, 0)
        out = loan.infer(timeout=5)
        print("parent", float(out.outputs["x"].sum()), loan._channel.conn is client._pool._conn)
        server.stop()
        LEFT = (client, loan)  # still open when the interpreter exits
    """
    argv = [sys.executable, "-W", "error", "-c", textwrap.dedent(code)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["parent", "0.0", "True"]
    assert done.stderr == ""


def test_a_loan_open_at_a_fork_lends_nothing_in_the_child_and_the_parents_stays_its_own(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Against a real server process: a loan open when the process forks is the parent's (its
    request area is shared with the parent). Before the fix the child's ``loan[name]``, an input
    array fetched before the fork and ``loan.infer()`` all wrote the parent's request area and
    published on its channel: the parent's loan then sent the child's 7s. Now the child's copy
    raises ``ValueError`` naming the fork, the arrays are read-only there, its ``close()`` gives
    nothing back, and the parent's loan sends its own inputs."""
    echo_process("--channels", "4")
    code = f"""
        import os, numpy as np
        from foundation_ml import DataType
        from foundation_shm import ShmTransport
        client = ShmTransport().connect({name!r}, channels=2)
        loan = client.loan("echo", {{"x": (DataType.FP32, (4,))}}, timeout=5)
        kept = loan["x"]
        kept[:] = 1
        loan.infer(timeout=5)
        pid = os.fork()
        if pid == 0:
            said = []
            for attempt in (lambda: loan["x"], lambda: loan.infer(timeout=5), lambda: kept.fill(7)):
                try:
                    attempt()
                    said.append("used")
                except ValueError as exc:
                    said.append("fork" if "before os.fork()" in str(exc) else "read-only")
            loan.close()
            x = np.full(4, 3, np.float32)
            with client.loan("echo", {{"x": (DataType.FP32, (4,))}}, timeout=5) as own:
                own["x"][:] = x
                ok = (own.infer(timeout=5).outputs["x"] == x).all()
            client.close()
            print("child", *said, ok, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        out = loan.infer(timeout=5).outputs["x"]
        print("parent", loan["x"].tolist() == [1] * 4, out.tolist() == [1] * 4)
        loan.close()
        client.close()
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["child", "fork", "fork", "read-only", "True", "parent", "True", "True"]


def test_views_kept_past_the_next_call_a_grow_or_close_show_bytes_and_never_crash(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """Outputs and loaned inputs are views on the mapping: the next call on the channel rewrites
    what an output shows (documented: valid until then), and a grow, ``close()`` or the server's
    end leaves what a view still uses mapped until the view goes, never unmapped under it."""
    server = echo_process("--channels", "2")
    client = ShmTransport().connect(name, channels=1)
    first = client.infer(InferenceRequest("echo", {"x": np.full(4, 1.0, np.float32)}), timeout=5)
    kept = first.outputs["x"]
    _echo(client, 2.0)
    np.testing.assert_array_equal(kept, np.full(4, 2.0, np.float32))  # the next call's bytes
    client.infer(InferenceRequest("echo", {"x": np.ones(1 << 19, np.float32)}), timeout=5)  # grows
    with client.loan("echo", SPEC, timeout=2) as loan:
        loaned = loan["x"]
        loaned[:] = 3.0
        out = loan.infer(timeout=5).outputs["x"]
    client.close()
    server.stop()
    del client, loan
    gc.collect()
    loaned[:] = 4.0  # the old mappings: still there, written and read without a fault
    assert float(kept.sum()) == 8.0 and float(out.sum()) == 12.0 and float(loaned.sum()) == 16.0


def test_a_loan_whose_request_is_still_with_the_server_lends_its_inputs_no_more(
    name: str, echo_process: Callable[..., EchoProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fix the views stayed writable and the next infer() rewrote the request area and
    published a new request at once, while the server could still be reading the old one's inputs
    (it dropped that answer as stale and answered the rewritten inputs)."""
    # the stopped server is late here, not hung (10.3): a loaded machine that took over a second
    # to get to the new loan saw it hung (ServerUnavailable, not the wait for the channel), and
    # once resumed, not yet beating again within connect_timeout
    monkeypatch.setattr(_channel, "HUNG_MIN_NS", 600 * 10**9)
    server = echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=1, connect_timeout=0.05) as client:
        loan = client.loan("echo", SPEC, timeout=2)
        x = loan["x"]
        x[:] = 1.0
        np.testing.assert_array_equal(loan.infer(timeout=5).outputs["x"], np.ones(4, np.float32))
        with stopped(server):
            with pytest.raises(DeadlineExceeded) as failed:
                loan.infer(timeout=0.02)
            rid = failed.value.request_id
            assert rid is not None
            ended = f"this loan ended when its request {rid} failed while still with the server"
            with pytest.raises(InvalidInput, match=ended):
                loan["x"]
            with pytest.raises(InvalidInput, match=ended):
                loan.infer(timeout=5)
            with pytest.raises(ValueError, match="read-only"):
                x[:] = 2.0  # the view handed out: the server may be reading it
            assert loan.inputs == {}
            loan.close()
            # the one channel is still with the server: a new loan waits connect_timeout for it
            pending = r"the previous request on channel 0 .* is still with the server"
            with pytest.raises(DeadlineExceeded, match=pending):
                client.loan("echo", SPEC)
        _echo(client, 7.0)  # takes the channel once the late answer is in
        with client.loan("echo", SPEC, timeout=2) as again:
            again["x"][:] = 2.0
            np.testing.assert_array_equal(again.infer(timeout=5).outputs["x"], np.full(4, 2.0, np.float32))


def test_a_call_waiting_for_a_channel_whose_server_died_fails_server_unavailable(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """The one channel's request was left with the server (a call passed its deadline), then the
    server died: before the fix nothing watched that channel, and a call with no deadline waited
    for it for ever (one with a deadline failed 'no free channel' at it)."""
    server = echo_process("--channels", "2")
    with ShmTransport().connect(name, channels=1) as client:
        with stopped(server):
            with pytest.raises(DeadlineExceeded):
                _echo_with_timeout(client, 0.02)
            server.kill()
        for timeout in (None, 30.0):
            with pytest.raises(ServerUnavailable, match=r"\(pid \d+\) is gone"):
                client.infer(InferenceRequest("echo", {"x": np.zeros(4, np.float32)}), timeout=timeout)
            with pytest.raises(ServerUnavailable, match=r"\(pid \d+\) is gone"):
                client.loan("echo", SPEC, timeout=timeout)


def test_a_loan_call_after_its_server_stopped_gracefully_is_server_unavailable(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """A loan whose server was stopped gracefully (its region STOPPED) before its call: nothing
    was sent, and a loan's areas are the old connection's, so nothing sends it again; the call
    failed with the client's private ``_GoneBeforeSending`` (what ``infer`` sends once more
    after), and is now a plain ``ServerUnavailable`` naming the call."""
    server = echo_process()
    with ShmTransport().connect(name) as client:
        with client.loan("echo", SPEC, timeout=2) as loan:
            loan["x"][:] = 1.0
            loan.infer(timeout=5)
            server.stop()
            gone = rf"model 'echo'.*shm server '{name}'.* is gone"
            with pytest.raises(ServerUnavailable, match=gone) as got:
                loan.infer(timeout=5)
            assert type(got.value) is ServerUnavailable
