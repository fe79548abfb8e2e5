"""Requests the shm server answers itself, never handing them to the handler (a deadline passed
before dispatch, the server stopping, a malformed message), are reported to the handler's
optional ``rejected``: the runtime's metrics count them, as they count the same request over
inproc or through a batcher."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._client import ShmClient
from foundation_shm._client_write import write
from foundation_shm._echo import EchoHandler
from foundation_shm._server import ShmServer

from foundation_ml import FunctionModel, InferenceRequest, InferenceResponse, MLRuntime, Respond
from foundation_ml.errors import DeadlineExceeded, InferenceError, InternalError, ShuttingDown

from .conftest import request_error_vectors, send_raw, until


def _x() -> np.ndarray:
    return np.ones((1, 4), np.float32)


def _send_expired(client: ShmClient, model: str, version: str = "") -> None:
    """A request for ``model`` whose deadline passed before the server took it."""
    ch = client._take(0)
    try:
        ch.wkey = None
        assert write(client, ch, [], 32 + 112, 5, model, version, time.monotonic_ns() - 1)
        client._exchange(ch, 5, model, 0, retry=False)
    finally:
        client._give(ch)


class _Runtime(MLRuntime):
    """The runtime, but a request for ``hold`` is kept unanswered (in flight) until the test
    answers it: a stop then drains while the serving loop is free to take later requests."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[int] = []
        self.held: list[tuple[InferenceRequest, Respond]] = []

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model == "hold":
            self.held.append((request, respond))
            return
        super().__call__(request, respond)


@pytest.fixture
def runtime(name: str) -> Iterator[_Runtime]:
    rt = _Runtime()

    def model(x: np.ndarray) -> dict[str, np.ndarray]:
        rt.ran.append(len(x))
        return {"y": x}

    rt.register_model("m", FunctionModel(model, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}))
    rt.ran.clear()  # (the warm-up's call)
    rt.start("shm", name, channels=4, max_request_bytes=1 << 20)
    try:
        yield rt
    finally:
        for request, respond in rt.held:  # a failed test must not leave close() draining
            respond(InferenceResponse(request.id, request.model, request.inputs))
        rt.close()


def test_a_request_expired_before_dispatch_counts_for_its_model(runtime: _Runtime, name: str) -> None:
    with ShmTransport().connect(name) as client:
        for version in ("", "1"):
            with pytest.raises(DeadlineExceeded, match="before the request ran"):
                _send_expired(client, "m", version)
        with pytest.raises(DeadlineExceeded):
            _send_expired(client, "nope")  # no such model: the server's
        stats = client.stats()
    m = stats["models"]["m"]
    assert (m["requests"], m["errors"], m["errors_by_code"]) == (2, 2, {"DEADLINE_EXCEEDED": 2})
    assert m["latency_us"] is None  # nothing measured: a refusal's latency is none
    assert stats["server"]["rejected"] == {"DEADLINE_EXCEEDED": 1}
    assert runtime.ran == []  # the model never ran
    series = f'foundation_errors_total{{server="{name}",model="m",version="1",code="DEADLINE_EXCEEDED"}}'
    assert f"{series} 2\n" in runtime.prometheus()


def test_malformed_requests_count_at_server_level_by_code(runtime: _Runtime, name: str) -> None:
    expected: Counter[str] = Counter()
    with ShmTransport().connect(name) as client:
        for path in request_error_vectors():
            expect = json.loads(path.read_text())["expect"]
            with pytest.raises(InferenceError) as info:
                send_raw(client, path.with_suffix(".bin").read_bytes(), expect["request_id"])
            assert info.value.code.name == expect["error"], path.stem
            expected[expect["error"]] += 1
        assert client.stats()["server"]["rejected"] == dict(expected)
    assert expected["BAD_MAGIC"] and expected["BAD_CHECKSUM"]
    assert runtime.stats()["models"]["m"]["requests"] == 0
    text = runtime.prometheus()
    assert f'foundation_rejected_total{{server="{name}",code="BAD_MAGIC"}} {expected["BAD_MAGIC"]}\n' in text


def test_a_request_refused_while_stopping_counts_as_shutting_down(runtime: _Runtime, name: str) -> None:
    server = runtime.servers[0][1]
    assert isinstance(server, ShmServer)
    held = ShmTransport().connect(name)
    late = ShmTransport().connect(name)
    results: list[object] = []
    call = threading.Thread(
        target=lambda: results.append(held.infer(InferenceRequest("hold", {"x": _x()}), timeout=30))
    )
    closer = threading.Thread(target=runtime.close, kwargs={"drain_timeout": 30})
    try:
        call.start()
        assert until(lambda: runtime.held), "the held request to reach the handler"
        closer.start()
        assert until(lambda: server._stopping), "the server to start stopping"
        with pytest.raises(ShuttingDown, match="stopping"):
            late.infer(InferenceRequest("m", {"x": _x()}), timeout=30)
        stats = runtime.stats()
        assert stats["server"]["rejected"] == {"SHUTTING_DOWN": 1}
        assert stats["models"]["m"]["requests"] == 0
        assert runtime.ran == []
    finally:
        request, respond = runtime.held.pop()
        respond(InferenceResponse(request.id, request.model, request.inputs))
        call.join(30)
        closer.join(30)
        held.close()
        late.close()
    assert len(results) == 1 and isinstance(results[0], InferenceResponse)


class _Reporting(EchoHandler):
    """The echo, recording what the server reports it refused."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.reports: list[tuple[str, str, Any]] = []
        self.fail = fail

    def rejected(self, model: str, version: str, error: InferenceError) -> None:
        self.reports.append((model, version, type(error)))
        if self.fail:
            raise RuntimeError("a bug in rejected")


def test_the_handler_is_told_not_called_and_one_whose_report_raises_is_still_served(name: str) -> None:
    for fail in (False, True):
        handler = _Reporting(fail)
        with ShmTransport().serve(name, handler) as _, ShmTransport().connect(name) as client:
            with pytest.raises(DeadlineExceeded):
                _send_expired(client, "echo", "3")
            assert handler.count == 0  # __call__ never ran: the report is a method of its own
            assert handler.reports == [("echo", "3", DeadlineExceeded)]
            x = np.arange(5)
            out = client.infer(InferenceRequest("echo", {"x": x})).outputs["x"]
            np.testing.assert_array_equal(out, x)
            assert len(handler.reports) == 1  # what the handler got is not reported


def test_a_refusal_whose_answer_failed_is_reported_once(name: str) -> None:
    """A refusal reported, then its answer raising (a bug of ours): the serving loop's ``_fail``
    answers INTERNAL instead, and reported the request a second time, so the runtime counted
    one request twice (its DEADLINE_EXCEEDED and an INTERNAL)."""
    handler = _Reporting()
    with ShmTransport().serve(name, handler) as server, ShmTransport().connect(name) as client:
        assert isinstance(server, ShmServer)
        answer = server._answer
        calls: list[object] = []

        def answer_fails_once(r: Any, value: Any) -> None:
            calls.append(value)
            if len(calls) == 1:
                raise RuntimeError("toy: answering failed")
            answer(r, value)

        server._answer = answer_fails_once  # type: ignore[method-assign]
        with pytest.raises(InferenceError, match="failed on this request"):
            _send_expired(client, "echo", "3")
        assert [type(v) for v in calls] == [DeadlineExceeded, InternalError]
        assert handler.reports == [("echo", "3", DeadlineExceeded)]
