"""The transport contract's derived ``ainfer`` (run on the inproc client): its timeout counts from
the call, as ``infer``'s does, and a bad timeout is refused as ``infer`` refuses it."""

from __future__ import annotations

import argparse
import asyncio
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import foundation_core
from foundation_core import Hub
from foundation_core.errors import PluginError
from foundation_ml import InferenceClient, InferenceRequest, InferenceResponse, MLRuntime, call_deadline
from foundation_ml import _plugin as ml_plugin
from foundation_ml._inproc import InprocTransport
from foundation_ml._transport import Respond, make_transport
from foundation_ml.errors import DeadlineExceeded

from .conftest import unique_name

X = np.ones((1, 4), np.float32)


class Echo:
    def __init__(self) -> None:
        self.requests: list[InferenceRequest] = []

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        self.requests.append(request)
        respond(InferenceResponse(request.id, request.model, dict(request.inputs)))

    def metadata(self, model: str) -> dict[str, Any]:
        return {}

    def stats(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize("timeout", [0.05, np.float64(0.05)])
def test_ainfer_that_waited_for_a_thread_past_its_timeout_is_not_sent(timeout: float) -> None:
    """The derived ``ainfer`` gave ``infer`` the whole timeout once a thread of the loop's executor
    came free, so a call could wait its timeout for a thread and then its timeout again (shm's own
    ``ainfer`` counts from the call already); a timeout of numpy's was given whole still."""
    echo = Echo()
    transport = InprocTransport()
    server = transport.serve(unique_name(), echo)
    client = transport.connect(server.address)

    go = threading.Event()

    def busy() -> None:  # holds the executor's only thread until the call's timeout is over
        assert go.wait(10)
        until = time.monotonic_ns() + int(timeout * 1e9)  # the call had started before `go`
        while time.monotonic_ns() <= until:
            time.sleep(0.01)

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        blocker = loop.run_in_executor(None, busy)
        late = asyncio.ensure_future(client.ainfer(InferenceRequest("m", {"x": X}, id=12), timeout=timeout))
        await asyncio.sleep(0)  # the call has started: its timeout runs from here
        go.set()
        return await asyncio.gather(blocker, late, return_exceptions=True)

    try:
        _, late = asyncio.run(main())
        sent = list(echo.requests)
        answer = asyncio.run(client.ainfer(InferenceRequest("m", {"x": X}), timeout=5))
    finally:
        server.stop()
    np.testing.assert_array_equal(answer.outputs["x"], X)
    assert isinstance(late, DeadlineExceeded), late
    assert str(late) == "model 'm': no thread free to send the request within 0.05s"
    assert late.request_id == 12  # the request's own id (it named the model, not the request)
    assert sent == []


@pytest.mark.parametrize("timeout", [-1, math.nan, math.inf])
def test_ainfer_refuses_a_bad_timeout_as_infer_does(timeout: float) -> None:
    echo = Echo()
    transport = InprocTransport()
    server = transport.serve(unique_name(), echo)
    client = transport.connect(server.address)
    try:
        with pytest.raises(ValueError) as sync:
            client.infer(InferenceRequest("m", {"x": X}), timeout=timeout)
        with pytest.raises(ValueError) as async_:
            asyncio.run(client.ainfer(InferenceRequest("m", {"x": X}), timeout=timeout))
    finally:
        server.stop()
    assert str(sync.value) == str(async_.value)
    assert echo.requests == []


def test_ainfer_with_a_timeout_of_zero_answers_as_infer_does() -> None:
    """0 is no wait for a thread: the call goes to ``infer`` as it is (which answers as for a
    synchronous call of timeout 0), not 'no thread free'."""
    transport = InprocTransport()
    server = transport.serve(unique_name(), Echo())
    client = transport.connect(server.address)
    errors: list[str] = []
    for call in (
        lambda: client.infer(InferenceRequest("m", {"x": X}), timeout=0),
        lambda: asyncio.run(client.ainfer(InferenceRequest("m", {"x": X}), timeout=0)),
    ):
        try:
            call()
        except DeadlineExceeded as exc:
            errors.append(str(exc).split(":", 1)[1])
    server.stop()
    assert errors == [" no response within 0s"] * 2


def test_async_with_closes_a_transport_client_off_the_event_loop() -> None:
    """A transport client had ``with`` but no ``async with`` nor ``aclose()``: a coroutine called
    the blocking ``close()`` (shm's may wait for the server's region mutex). The derived
    ``aclose`` runs ``close`` in a thread; the loop goes on meanwhile."""
    from foundation_ml.errors import ServerUnavailable

    transport = InprocTransport()
    server = transport.serve(unique_name(), Echo())
    client = transport.connect(server.address)
    close, loop_ran = client.close, threading.Event()

    def waits_for_the_loop() -> None:
        assert loop_ran.wait(10), "the event loop stood still while the client closed"
        close()

    client.close = waits_for_the_loop  # type: ignore[method-assign]

    async def main() -> InferenceResponse:
        async with client as entered:
            assert entered is client
            answer = await client.ainfer(InferenceRequest("m", {"x": X}))
            asyncio.get_running_loop().call_soon(loop_ran.set)
        return answer

    try:
        np.testing.assert_array_equal(asyncio.run(main()).outputs["x"], X)
        with pytest.raises(ServerUnavailable, match="is closed"):
            client.infer(InferenceRequest("m", {"x": X}))
    finally:
        server.stop()


@settings(max_examples=200, deadline=None)
@given(
    request_deadline=st.integers(0, 2**63),
    timeout=st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**70), 2**70),
        st.booleans(),
        st.text(max_size=3),
    ),
)
def test_call_deadline_is_the_sooner_of_the_requests_and_the_timeouts(
    request_deadline: int, timeout: Any
) -> None:
    """``call_deadline`` (shm and inproc alike): a timeout in [0, 1e9] s bounds the call from now,
    the request's own deadline bounds it if sooner, 0 is none; anything else is a ValueError."""
    good = timeout is None or (type(timeout) in (int, float) and 0 <= timeout <= 1e9)
    if not good:
        with pytest.raises(ValueError, match=r"timeout must be a number of seconds in \[0, 1e9\] or None"):
            call_deadline(request_deadline, timeout)
        return
    before = time.monotonic_ns()
    got = call_deadline(request_deadline, timeout)
    after = time.monotonic_ns()
    if timeout is None:
        assert got == request_deadline
        return
    lo, hi = before + int(timeout * 1e9), after + int(timeout * 1e9)
    if request_deadline and request_deadline < lo:
        assert got == request_deadline
    else:
        assert lo <= got <= hi or got == request_deadline


class _NeedsASetting(InprocTransport):
    """A third party's transport whose constructor fails (a setting it needs is missing)."""

    name = "needs-a-setting"

    def __init__(self) -> None:
        raise RuntimeError("FDN_UDS_DIR is not set")


class _Plugin:
    @foundation_core.hookimpl
    def foundation_register_transports(self, register: Any) -> None:
        register("needs-a-setting", _NeedsASetting)


@pytest.fixture
def broken_hub() -> Iterator[Hub]:
    with foundation_core.start(plugins=[ml_plugin, _Plugin()], entry_points=False) as hub:
        yield hub


_MADE = (
    r"^plugin '.*_Plugin.*' failed: transport 'needs-a-setting' cannot be made: RuntimeError: "
    r"FDN_UDS_DIR is not set$"
)


def test_a_transport_that_cannot_be_made_is_a_plugin_error_naming_it(broken_hub: Hub) -> None:
    """Its bare RuntimeError came out of MLRuntime.start and InferenceClient (a traceback from
    ``foundation serve``), naming neither the transport nor its plugin."""
    with MLRuntime(broken_hub) as runtime, pytest.raises(PluginError, match=_MADE) as info:
        runtime.start("needs-a-setting", unique_name())
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(PluginError, match=_MADE):
        InferenceClient(unique_name(), transport="needs-a-setting", hub=broken_hub)


def test_foundation_serve_names_a_transport_that_cannot_be_made(broken_hub: Hub) -> None:
    from foundation_ml._cli_serve import _check_options

    args = argparse.Namespace(transport="needs-a-setting", name="x")
    with pytest.raises(PluginError, match=_MADE):  # the CLI prints it on one line, exit 1
        _check_options(args, broken_hub)


def test_a_ctrl_c_while_a_transport_is_made_passes(broken_hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: _NeedsASetting) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_NeedsASetting, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_transport(broken_hub, "needs-a-setting")
