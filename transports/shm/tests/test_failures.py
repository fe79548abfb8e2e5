"""Failure injection into the shm server: a handler that raises anything, a serving loop that
dies, a region mutex left taken by no one, a /dev/shm without room, segments left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
from foundation_shm._server import ShmServer

from foundation_ml import InferenceRequest, Respond
from foundation_ml.errors import HandlerError, ServerUnavailable


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
    deadline = time.monotonic() + 5
    while dying_server.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(dying_server.failed, KeyboardInterrupt)
    with pytest.raises(ServerUnavailable):
        with ShmTransport().connect(name, timeout=2) as client:
            client.infer(InferenceRequest("echo", {"x": np.arange(2.0)}))
