"""``InferenceClient``'s own checks: arguments of the wrong type are refused by name, before
anything is sent, and the client stays usable after."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from foundation_ml import InferenceClient, MLRuntime

X = np.ones((1, 4), np.float32)

WRONG = [
    (("affine", [X]), {}, "inputs must be a mapping of input names to arrays, not list"),
    (("affine", {1: X}), {}, r"input names must be str, not int \(1\)"),
    ((5, {"x": X}), {}, r"model must be a str \(the model's name\), not int \(5\)"),
    (("affine", {"x": X}), {"version": 2}, r"version must be a str \('' for the latest\), not int \(2\)"),
    (("affine", {"x": X}), {"outputs": "y"}, r"outputs must be a sequence of output names, not the str 'y'"),
    # an output name of another type reached the server, which answered InternalError
    (("affine", {"x": X}), {"outputs": ["y", 1]}, r"output names must be str, not int \(1\)"),
    (("affine", {"x": X}), {"outputs": None}, r"outputs must be a sequence of output names, not NoneType"),
]


@pytest.mark.parametrize(("args", "kwargs", "message"), WRONG, ids=[m.split(" ")[0] for *_, m in WRONG])
def test_arguments_of_the_wrong_type_are_refused_by_name(
    served: InferenceClient, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        served.infer(*args, **kwargs)
    np.testing.assert_array_equal(served.infer("affine", {"x": X})["y"], X * 2 + 1)  # still usable


@pytest.mark.parametrize("copy", ["no", 0, None])
def test_a_copy_that_is_no_bool_is_refused_by_name(served: InferenceClient, copy: object) -> None:
    """``copy="no"`` copied every output (truthy) and ``copy=0`` handed out views, silently."""
    with pytest.raises(TypeError, match=rf"^InferenceClient: copy must be True or False, not {copy!r}$"):
        InferenceClient(served.name, transport="inproc", copy=copy)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", [["inproc"], None, 5])
def test_a_transport_that_is_no_str_is_refused_naming_it(
    runtime: MLRuntime, served: InferenceClient, transport: object
) -> None:
    """``transport=["inproc"]`` failed with 'unhashable type: 'list'' in the configuration's
    lookup, before the registry's check (cbee97f) that names it and what is registered."""
    assert runtime.hub.config is not None  # configured: its sections are looked up by the name
    told = rf"^a transport name is a str, not {type(transport).__name__} {re.escape(repr(transport))} "
    with pytest.raises(TypeError, match=told + r"\(registered: "):
        InferenceClient(served.name, transport=transport, hub=runtime.hub)  # type: ignore[arg-type]


def test_outputs_as_a_list_selects_them(served: InferenceClient) -> None:
    assert list(served.infer("affine", {"x": X}, outputs=["y"])) == ["y"]


def test_a_ragged_nested_list_input_is_refused_naming_the_input(served: InferenceClient) -> None:
    with pytest.raises(ValueError, match=r"^input x: setting an array element with a sequence"):
        served.infer("affine", {"x": [[1, 2, 3, 4], [5]]})


@pytest.mark.parametrize("transport", ["inproc", "shm"])
def test_a_model_taking_a_scalar_is_called_with_a_0_d_array(transport: str, name: str) -> None:
    """``np.ascontiguousarray`` made a 0-d input shape [1]: a model taking FP32[] refused every call."""
    from foundation_ml import FunctionModel, MLRuntime
    from foundation_ml._client import registered_hub

    hub = registered_hub()
    if transport not in hub.transports:
        pytest.skip(f"no {transport!r} transport is registered")
    with MLRuntime(hub) as runtime:
        runtime.register_model(
            "double", FunctionModel(lambda x: {"y": x * 2}, inputs={"x": "FP32[]"}, outputs={"y": "FP32[]"})
        )
        runtime.start(transport, name)
        with InferenceClient(name, transport=transport, hub=hub) as client:
            for x in (np.array(3.0, np.float32), np.float32(3.0)):
                y = client.infer("double", {"x": x})["y"]
                assert y.shape == () and y == 6.0


def test_ainfer_runs_the_call_in_the_callers_context(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``asyncio.to_thread`` does: a transport (or a tracer around it) sees the caller's context
    variables in ``ainfer``'s thread, as it does in ``infer``."""
    import asyncio
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="unset")
    seen = []
    send = served._client.infer

    def traced(request: Any, *, timeout: float | None = None) -> Any:
        seen.append(var.get())
        return send(request, timeout=timeout)

    monkeypatch.setattr(served._client, "infer", traced)

    async def call() -> dict[str, np.ndarray]:
        var.set("request-1")
        return await served.ainfer("affine", {"x": X})

    np.testing.assert_array_equal(asyncio.run(call())["y"], X * 2 + 1)
    assert seen == ["request-1"]


def test_closing_the_client_fails_waiting_ainfer_calls_with_server_unavailable_not_a_cancellation(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call still waiting for a thread when the client closes raises ``ServerUnavailable``: a
    ``CancelledError`` in a task nobody cancelled reads as a cancellation of the caller (a
    ``TaskGroup`` or ``asyncio.timeout`` around it would misjudge it). A call after ``close()``
    is refused the same way and starts no new threads."""
    import asyncio
    import threading

    from foundation_ml import _client
    from foundation_ml.errors import ServerUnavailable

    monkeypatch.setattr(_client, "AINFER_THREADS", 1)
    release = threading.Event()
    send = served._client.infer

    def held(request: Any, *, timeout: float | None = None) -> Any:
        answer = send(request, timeout=timeout)  # answered, then the thread is kept busy
        release.wait(10)
        return answer

    monkeypatch.setattr(served._client, "infer", held)

    async def close_while_waiting() -> list[Any]:
        running = asyncio.ensure_future(served.ainfer("affine", {"x": X}))
        queued = asyncio.ensure_future(served.ainfer("affine", {"x": X}))  # waits for the thread
        await asyncio.sleep(0.05)
        served.close()
        release.set()
        return await asyncio.gather(running, queued, return_exceptions=True)

    running, queued = asyncio.run(close_while_waiting())
    np.testing.assert_array_equal(running["y"], X * 2 + 1)  # already sent: answered
    assert isinstance(queued, ServerUnavailable), repr(queued)
    assert "closed" in str(queued)
    pool = served._pool
    with pytest.raises(ServerUnavailable, match="closed"):
        asyncio.run(served.ainfer("affine", {"x": X}))
    assert served._pool is pool  # no new pool for a closed client


def test_ainfer_returns_copies_also_with_copy_false(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``copy=False`` hands out the transport's views, valid until the next call on the same
    connection (shm: the same thread). In ``ainfer`` that next call is whichever coroutine's
    call the worker thread runs next, so its outputs are copies, or another caller overwrites
    them while they are read."""
    import asyncio
    import threading

    from foundation_ml import _client
    from foundation_ml._types import InferenceResponse

    monkeypatch.setattr(_client, "AINFER_THREADS", 1)
    monkeypatch.setattr(served, "copy", False)
    areas = threading.local()  # one response area per thread, as the shm client's held channel

    def into_the_area(request: Any, *, timeout: float | None = None) -> Any:
        area = getattr(areas, "y", None)
        if area is None:
            area = areas.y = np.zeros_like(X)
        area[...] = request.inputs["x"]
        return InferenceResponse(request.id, request.model, {"y": area[...]})

    monkeypatch.setattr(served._client, "infer", into_the_area)

    async def two_callers() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        first = await served.ainfer("affine", {"x": X})
        second = await served.ainfer("affine", {"x": X * 3})
        return first, second

    first, second = asyncio.run(two_callers())
    np.testing.assert_array_equal(first["y"], X)
    np.testing.assert_array_equal(second["y"], X * 3)
    np.testing.assert_array_equal(served.infer("affine", {"x": X * 5})["y"], X * 5)


def _closed(client: InferenceClient, *, pattern: bool = True) -> str:
    """The error of a call of ``client`` (affine, over inproc) once it is closed: it names the
    client (it said only "the client is closed", the same for every client); as a regex."""
    text = f"model 'affine': the InferenceClient of {client.name!r} (inproc) is closed"
    return f"^{re.escape(text)}$" if pattern else text


def test_infer_after_close_is_refused_as_ainfer_is(served: InferenceClient) -> None:
    """``ainfer`` after ``close()`` raised ``ServerUnavailable`` while ``infer`` went on calling
    the server (over inproc, whose client's ``close()`` did nothing): both now refuse alike."""
    import asyncio

    from foundation_ml.errors import ServerUnavailable

    served.close()
    with pytest.raises(ServerUnavailable) as sync:
        served.infer("affine", {"x": X})
    with pytest.raises(ServerUnavailable) as async_:
        asyncio.run(served.ainfer("affine", {"x": X}))
    assert str(sync.value) == str(async_.value) == _closed(served, pattern=False)
    with pytest.raises(ServerUnavailable, match="closed"):
        served.metadata("affine")


def test_ainfer_racing_a_close_in_another_thread_raises_server_unavailable(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``close()`` landing between ``ainfer`` finding its thread pool and submitting to it
    surfaced as the executor's bare ``RuntimeError('cannot schedule new futures after
    shutdown')``. The close is forced into that window here."""
    import asyncio

    from foundation_ml.errors import ServerUnavailable

    asyncio.run(served.ainfer("affine", {"x": X}))  # the pool exists
    threads = served._threads

    def then_closed(model: Any) -> Any:
        pool = threads(model)
        served.close()  # as another thread may, now
        return pool

    monkeypatch.setattr(served, "_threads", then_closed)
    with pytest.raises(ServerUnavailable, match=_closed(served)):
        asyncio.run(served.ainfer("affine", {"x": X}))


def _ainfer_threads(client: InferenceClient) -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith(f"foundation-ainfer-{client.name}_")]


def test_async_with_closes_the_client_once_ainfers_threads_have_ended(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There was no ``async with`` nor ``aclose()``: a coroutine could only call ``close()``,
    which returns with ``ainfer``'s threads still running their calls. Leaving ``async with``
    closes the client and returns once they have ended: here a call is still in the transport
    when the close begins (and fails ``ServerUnavailable``, the client closed under it)."""
    import asyncio
    import threading
    import time

    from foundation_ml.errors import ServerUnavailable

    in_call = threading.Event()
    send = served._client.infer

    def held(request: Any, *, timeout: float | None = None) -> Any:
        if request.inputs["x"][0, 0] == 7:  # the call left in flight
            in_call.set()
            while not served._closed:
                time.sleep(0.001)
            time.sleep(0.2)  # still in flight a while after the close began
        return send(request, timeout=timeout)

    monkeypatch.setattr(served._client, "infer", held)

    async def main() -> BaseException | None:
        async with served as client:
            assert client is served
            np.testing.assert_array_equal((await client.ainfer("affine", {"x": X}))["y"], X * 2 + 1)
            in_flight = asyncio.ensure_future(client.ainfer("affine", {"x": X * 7}))
            assert await asyncio.to_thread(in_call.wait, 10)
        assert _ainfer_threads(served) == []  # ended before the block was left
        with pytest.raises(ServerUnavailable, match=_closed(served)):
            await served.ainfer("affine", {"x": X})
        await served.aclose()  # again: nothing more to do
        (error,) = await asyncio.gather(in_flight, return_exceptions=True)
        return error

    in_flight_error = asyncio.run(main())
    assert isinstance(in_flight_error, ServerUnavailable), repr(in_flight_error)
    with pytest.raises(ServerUnavailable, match="closed"):
        served.infer("affine", {"x": X})


def test_aclose_keeps_the_event_loop_running_while_the_transport_closes(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport's ``close()`` may block (shm waits up to ``connect_timeout`` for the server's
    region mutex): ``aclose`` runs it in a thread, and the loop goes on meanwhile. Here the
    transport's close waits for a callback of the loop."""
    import asyncio
    import threading

    loop_ran = threading.Event()
    close = served._client.close

    def waits_for_the_loop() -> None:
        assert loop_ran.wait(10), "the event loop stood still while the transport closed"
        close()

    monkeypatch.setattr(served._client, "close", waits_for_the_loop)

    async def main() -> None:
        await served.ainfer("affine", {"x": X})  # ainfer's threads exist
        asyncio.get_running_loop().call_soon(loop_ran.set)
        await served.aclose()

    asyncio.run(main())
    assert loop_ran.is_set() and _ainfer_threads(served) == []


def test_an_ainfer_cancelled_while_it_waits_for_a_thread_is_never_sent(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serving.md promises that a cancelled call not sent yet is never sent: one still waiting
    for a thread (each taken) is dropped from the queue, and the next call is answered."""
    import asyncio
    import threading

    from foundation_ml import _client

    monkeypatch.setattr(_client, "AINFER_THREADS", 1)
    release, sent = threading.Event(), []
    send = served._client.infer

    def held(request: Any, *, timeout: float | None = None) -> Any:
        sent.append(float(request.inputs["x"][0, 0]))
        if sent == [1.0]:
            assert release.wait(10)  # the one thread stays busy
        return send(request, timeout=timeout)

    monkeypatch.setattr(served._client, "infer", held)

    async def main() -> list[dict[str, np.ndarray]]:
        running = asyncio.ensure_future(served.ainfer("affine", {"x": X}))
        while not sent:
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(served.ainfer("affine", {"x": X * 2}))
        await asyncio.sleep(0.01)  # queued for the thread
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        return [await running, await served.ainfer("affine", {"x": X * 3})]

    first, last = asyncio.run(main())
    assert sent == [1.0, 3.0]
    np.testing.assert_array_equal(first["y"], X * 2 + 1)
    np.testing.assert_array_equal(last["y"], X * 3 * 2 + 1)


def test_aclose_after_close_still_waits_for_ainfers_threads(
    served: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` (a synchronous clean-up, say) then ``await aclose()``: close() had let go of
    ``ainfer``'s threads, so aclose returned at once with a call still running in one of them,
    though it returns once they have ended."""
    import asyncio
    import threading
    import time

    in_call = threading.Event()
    send = served._client.infer

    def held(request: Any, *, timeout: float | None = None) -> Any:
        in_call.set()
        time.sleep(0.2)  # still in its thread a while after the close
        return send(request, timeout=timeout)

    monkeypatch.setattr(served._client, "infer", held)

    async def main() -> list[str]:
        call = asyncio.ensure_future(served.ainfer("affine", {"x": X}))
        assert await asyncio.to_thread(in_call.wait, 10)
        served.close()
        await served.aclose()
        running = _ainfer_threads(served)
        await asyncio.gather(call, return_exceptions=True)
        return running

    assert asyncio.run(main()) == []


def test_entering_a_closed_client_is_refused_as_a_closed_file_is(served: InferenceClient) -> None:
    """``with client:`` and ``async with client:`` on a closed client entered without a word, and
    only the first call inside failed; entering now raises, naming the client."""
    import asyncio

    from foundation_ml.errors import ServerUnavailable

    served.close()
    text = f"the InferenceClient of {served.name!r} (inproc) is closed"
    with pytest.raises(ServerUnavailable, match=f"^{re.escape(text)}$"):
        with served:
            pass

    async def enter() -> None:
        async with served:
            pass

    with pytest.raises(ServerUnavailable, match=f"^{re.escape(text)}$"):
        asyncio.run(enter())
