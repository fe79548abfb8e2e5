"""Every ``InferenceError`` the client raises for a call names that call: ``model`` and
``request_id`` (with ``str()`` starting ``model 'NAME': ``), also for the errors made where the
call is not known (the client closed before or during the call, the server gone, no channel to
be had, a request too large). Run on both hot paths (the suite runs again under FDN_SHM_PURE=1)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport, _accel, _client_repeat
from foundation_shm._echo import EchoHandler
from foundation_shm._server import ShmServer

from foundation_ml import DataType, InferenceClient, InferenceRequest, InferenceResponse, Respond
from foundation_ml._client import registered_hub
from foundation_ml.errors import DeadlineExceeded, InferenceError, ServerUnavailable, TooLarge

from .conftest import EchoProcess, until

X = np.arange(4, dtype=np.float32)
SPEC = {"x": (DataType.FP32, (4,))}


def _names(exc: BaseException, kind: type[InferenceError], model: str, rid: int, says: str) -> None:
    assert type(exc) is kind, repr(exc)
    assert isinstance(exc, InferenceError)
    assert exc.model == model, repr(exc)
    assert exc.request_id == rid, repr(exc)
    assert str(exc) == f"model {model!r}: {exc.message}"
    assert says in exc.message, exc.message


def _raised(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError(f"{fn} returned")


class _Gated(EchoHandler):
    """The echo handler, but model "gated" answers only once ``open`` is set: its call is in
    flight for as long as the test needs (a request that slept 300 ms was answered before a
    loaded machine's test thread got to what it did during the call)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model != "gated":
            super().__call__(request, respond)
            return
        self.open.wait(60)
        respond(InferenceResponse(request.id, request.model, request.inputs))


@pytest.fixture
def server(name: str) -> Iterator[ShmServer]:
    handler = _Gated()
    srv = ShmTransport().serve(name, handler, channels=4, max_request_bytes=1 << 20)
    try:
        yield srv
    finally:
        handler.open.set()  # (a gated call not yet answered)
        srv.stop()


def _gate(server: ShmServer) -> threading.Event:
    handler = server.handler
    assert isinstance(handler, _Gated)
    return handler.open


def test_a_closed_clients_calls_name_their_model_and_request_id(server: ShmServer, name: str) -> None:
    """'the client of NAME is closed' (the pool's refusal) named no model and no request."""
    client = ShmTransport().connect(name)
    client.infer(InferenceRequest("echo", {"x": X}))
    client.close()
    closed = "is closed"
    _names(
        _raised(lambda: client.infer(InferenceRequest("echo", {"x": X}, id=41))),
        ServerUnavailable,
        "echo",
        41,
        closed,
    )
    _names(
        _raised(lambda: client.infer_copy(InferenceRequest("echo", {"x": X}, id=42))),
        ServerUnavailable,
        "echo",
        42,
        closed,
    )
    _names(
        _raised(lambda: asyncio.run(client.ainfer(InferenceRequest("echo", {"x": X}, id=43)))),
        ServerUnavailable,
        "echo",
        43,
        closed,
    )
    exc = _raised(lambda: client.metadata("echo"))
    assert type(exc) is ServerUnavailable and exc.model == "echo" and str(exc).startswith("model 'echo': ")
    exc = _raised(lambda: client.loan("echo", SPEC))
    assert type(exc) is ServerUnavailable and exc.model == "echo" and str(exc).startswith("model 'echo': ")


@pytest.mark.parametrize("repeat", [False, True], ids=["first", "repeated"])
@pytest.mark.parametrize("call", ["infer", "loan"])
def test_a_call_the_client_is_closed_under_names_its_model_and_request_id(
    server: ShmServer, name: str, call: str, repeat: bool
) -> None:
    """'the client of shm server NAME was closed during the call' named neither. ``repeated``: a
    request the channel sent before (the C path's one-call exchange)."""
    client = ShmTransport().connect(name, channels=1, copy_outputs=True)  # (no channel kept)
    gate = _gate(server)
    if call == "infer":

        def send(rid: int) -> Any:
            return client.infer(InferenceRequest("gated", {"x": X}, id=rid), timeout=10)

    else:
        loan = client.loan("gated", SPEC)
        loan["x"][:] = X

        def send(rid: int) -> Any:
            return loan.infer(request_id=rid, timeout=10)

    if repeat:
        gate.set()
        send(50)
        gate.clear()  # the call under test is answered only after the close
    got: list[BaseException] = []

    def run() -> None:
        try:
            send(51)
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert until(lambda: any(not ch.idle() for ch in list(client._pool._busy)) or not t.is_alive())
    client.close()
    t.join(10)
    if call == "loan":
        loan.close()
    assert not t.is_alive() and len(got) == 1, got
    _names(got[0], ServerUnavailable, "gated", 51, "closed during the call")


def test_a_call_to_a_server_that_died_names_its_model_and_request_id(
    name: str, echo_process: Callable[..., EchoProcess]
) -> None:
    """'shm server NAME (pid N) is gone' named neither."""
    server = echo_process("--channels", "2")
    client = ShmTransport().connect(name, channels=2, copy_outputs=True)
    try:
        client.infer(InferenceRequest("echo", {"x": X}))
        with client.loan("echo", SPEC) as loan:
            loan["x"][:] = X
            loan.infer()
            server.kill()
            gone = "is gone"
            _names(
                _raised(lambda: loan.infer(request_id=62, timeout=10)), ServerUnavailable, "echo", 62, gone
            )
        _names(
            _raised(lambda: client.infer(InferenceRequest("echo", {"x": X}, id=61), timeout=10)),
            ServerUnavailable,
            "echo",
            61,
            gone,
        )
        _names(_raised(lambda: client.loan("echo", SPEC, timeout=10)), ServerUnavailable, "echo", 0, gone)
        exc = _raised(lambda: client.metadata("echo", timeout=10))
        assert type(exc) is ServerUnavailable and exc.model == "echo", repr(exc)
    finally:
        client.close()


def test_a_call_that_finds_no_free_channel_names_its_model_and_request_id(
    server: ShmServer, name: str
) -> None:
    """'no free channel to NAME before the deadline' named neither."""
    client = ShmTransport().connect(name, channels=1)
    try:
        t = threading.Thread(target=client.infer, args=(InferenceRequest("gated", {"x": X}),))
        t.start()
        assert until(lambda: bool(client._pool._busy))
        exc = _raised(lambda: client.infer(InferenceRequest("echo", {"x": X}, id=71), timeout=0.05))
        _gate(server).set()
        t.join(10)
        _names(exc, DeadlineExceeded, "echo", 71, "no free channel")
    finally:
        client.close()


def test_a_request_too_large_for_the_server_names_its_model_and_request_id(
    server: ShmServer, name: str
) -> None:
    with ShmTransport().connect(name) as client:
        big = np.zeros(1 << 20, np.float32)  # 4 MiB: past the server's 1 MiB
        _names(
            _raised(lambda: client.infer(InferenceRequest("echo", {"x": big}, id=81))),
            TooLarge,
            "echo",
            81,
            "exceeds the server's",
        )


def test_inference_client_passes_on_the_model_and_request_id_of_a_call_closed_under_it(
    server: ShmServer, name: str
) -> None:
    """``InferenceClient.close()`` while a call is with the server (sync and async): the error
    names the model, and the request the transport sent."""
    client = InferenceClient(name, transport="shm", hub=registered_hub(), timeout=10, channels=2)
    got: list[BaseException] = []

    def sync() -> None:
        try:
            client.infer("gated", {"x": X})
        except BaseException as exc:
            got.append(exc)

    def asynchronous() -> None:
        try:
            asyncio.run(client.ainfer("gated", {"x": X}))
        except BaseException as exc:
            got.append(exc)

    threads = [threading.Thread(target=sync), threading.Thread(target=asynchronous)]
    for t in threads:
        t.start()
    pool = client._client._pool  # type: ignore[attr-defined]
    # both published (a fixed sleep here let a loaded machine close before one was, or after the
    # answers, when the server slept 100 ms on each): the server answers them after the close
    assert until(lambda: len(busy := tuple(pool._busy)) == 2 and not any(ch.idle() for ch in busy))
    client.close()
    for t in threads:
        t.join(10)
    assert len(got) == 2
    for exc in got:
        assert type(exc) is ServerUnavailable, repr(exc)
        assert exc.model == "gated" and exc.request_id > 0, repr(exc)
        assert str(exc) == f"model 'gated': {exc.message}"


def test_a_repeated_call_whose_one_c_call_ended_after_a_close_is_not_read(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C lane's guard (``exchange_repeat``): a close() in another thread gives the channel
    back, and the server's reclaim (server_seq = client_seq) can end ``_hot.exchange``'s spin; the
    response area still holds the previous answer, which the C call reads as an answer repeating
    the cached one (code 0). The call must fail 'closed during the call', not return the previous
    call's outputs as its own. (The close is made to land in the spin: a real one lands there
    only by chance. Both spin windows are long, so that the C call is answered as it spins.)"""
    if _accel.hot is None:
        pytest.skip("the C hot path is not in use (FDN_SHM_PURE=1): no one-call exchange")
    server = ShmTransport().serve(name, EchoHandler(), channels=1, spin_us=1_000_000)
    client = ShmTransport().connect(name, channels=1, copy_outputs=True, spin_us=200_000)
    real = _accel.hot.exchange
    ended: list[int] = []

    class _ClosedInTheSpin:
        def exchange(self, *args: Any) -> int:
            code = real(*args)
            ended.append(code)
            conn = client._pool._conn
            assert conn is not None
            conn.client_closed = True  # as close() sets it, in another thread, while this spun
            return code

    try:
        client.infer(InferenceRequest("echo", {"x": X}, id=70), timeout=10)
        monkeypatch.setattr(_client_repeat, "hot", _ClosedInTheSpin())
        exc = _raised(lambda: client.infer(InferenceRequest("echo", {"x": X + 1}, id=71), timeout=10))
    finally:
        monkeypatch.undo()
        conn = client._pool._conn
        if conn is not None:
            conn.client_closed = False  # close() below gives the channel back itself
        client.close()
        server.stop(5.0)
    assert ended == [0], ended  # the one C call answered: the case under test
    _names(exc, ServerUnavailable, "echo", 71, "closed during the call")
