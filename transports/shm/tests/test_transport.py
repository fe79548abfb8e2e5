"""Round trips through a real server: every dtype, many processes and threads, loans, control calls."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import objects_of
from foundation_shm._options import ConnectOptions, ServeOptions
from foundation_shm._server import ShmServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from foundation_core import Hub
from foundation_ml import DataType, InferenceRequest, InferenceResponse
from foundation_ml.errors import InvalidInput, TooLarge

WORKER = str(Path(__file__).parent / "worker.py")


@pytest.fixture
def server(name: str) -> Iterator[ShmServer]:
    srv = ShmTransport().serve(name, EchoHandler(), channels=8)
    yield srv
    srv.stop()


def test_the_plugin_registers_the_transport_by_name() -> None:
    hub = Hub()
    hub.load_entry_points()
    hub.run_registration()
    assert hub.transports.get("shm") is ShmTransport


@pytest.mark.parametrize("address", ["", "a/b", "../etc", "x" * 33, "shm://" + "x" * 33, "shm://a b"])
def test_check_address_refuses_what_serve_and_connect_refuse(address: str) -> None:
    rule = "must be 1-32 characters of"
    with pytest.raises(ValueError, match=rule):
        ShmTransport().check_address(address)
    with pytest.raises(ValueError, match=rule):
        ShmTransport().serve(address, EchoHandler())
    with pytest.raises(ValueError, match=rule):
        ShmTransport().connect(address)
    ShmTransport().check_address("shm://ok_name_1")  # the prefix is allowed, as in serve


@pytest.mark.parametrize("address", [None, 5, b"name", ["name"]], ids=repr)
def test_an_address_that_is_not_a_str_is_a_type_error_naming_it(address: Any) -> None:
    """It was an AttributeError ('NoneType' object has no attribute 'removeprefix')."""
    rule = f"an shm address is a server name \\(str\\), not {type(address).__name__}"
    with pytest.raises(TypeError, match=rule):
        ShmTransport().check_address(address)
    with pytest.raises(TypeError, match=rule):
        ShmTransport().serve(address, EchoHandler())
    with pytest.raises(TypeError, match=rule):
        ShmTransport().connect(address)


def test_a_server_with_the_longest_name_serves_every_channel(name: str) -> None:
    """32 characters: each client's data name fits its channel block (it did not at 48)."""
    longest = (name + "_" * 32)[:32]
    srv = ShmTransport().serve(longest, EchoHandler(), channels=12)
    try:
        clients = [ShmTransport().connect(longest, channels=1) for _ in range(12)]
        try:
            for i, client in enumerate(clients):
                x = np.full(3, i, np.int32)
                resp = client.infer(InferenceRequest("echo", {"x": x}))
                np.testing.assert_array_equal(resp.outputs["x"], x)
        finally:
            for client in clients:
                client.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("dtype", list(DataType))
def test_every_datatype_round_trips(server: ShmServer, name: str, dtype: DataType) -> None:
    """BF16 and BYTES too: uint16 and uint8 of dtype ``DataType.BF16.numpy`` and
    ``DataType.BYTES.numpy`` come back BF16 and BYTES."""
    rng = np.random.default_rng(dtype.code)
    raw = rng.integers(0, 256, size=24 * dtype.itemsize, dtype=np.uint8)
    if dtype is DataType.BOOL:
        raw = raw % 2
    x = raw.view(dtype.numpy).reshape(2, 3, 4)
    with ShmTransport().connect(name) as client:
        resp = client.infer(InferenceRequest("echo", {"x": x, "scalar": x.reshape(-1)[:1].reshape(())}))
    np.testing.assert_array_equal(resp.outputs["x"], x)
    assert resp.outputs["x"].dtype == x.dtype and resp.outputs["scalar"].shape == ()
    assert DataType.from_numpy(resp.outputs["x"].dtype) is dtype
    assert DataType.from_numpy(resp.outputs["scalar"].dtype) is dtype


@pytest.mark.parametrize(
    ("marked", "plain"), [(DataType.BF16, DataType.UINT16), (DataType.BYTES, DataType.UINT8)]
)
def test_marked_and_plain_of_one_name_and_shape_keep_their_datatypes_call_after_call(
    server: ShmServer, name: str, marked: DataType, plain: DataType
) -> None:
    """BF16 bit patterns and UINT16 share numpy's uint16 and its buffer format, BYTES and UINT8
    uint8: the repeat paths (same names and shapes: only the data is copied) must not send one
    under the other's descriptor, in either direction, on the client's side or the server's."""
    bits = np.arange(6, dtype=plain.numpy).reshape(2, 3)
    with ShmTransport().connect(name, channels=1) as client:
        for i, dtype in enumerate([plain, marked, marked, plain] * 2):
            x = (bits + i).view(dtype.numpy)
            out = client.infer(InferenceRequest("echo", {"x": x})).outputs["x"]
            assert DataType.from_numpy(out.dtype) is dtype, (i, dtype)
            np.testing.assert_array_equal(out, bits + i)


def test_outputs_are_read_only_views_unless_copies_are_asked_for(server: ShmServer, name: str) -> None:
    x = np.arange(10.0)
    with ShmTransport().connect(name) as client:
        view = client.infer(InferenceRequest("echo", {"x": x})).outputs["x"]
        assert not view.flags.writeable and not view.flags.owndata
    with ShmTransport().connect(name, copy_outputs=True) as client:
        copy = client.infer(InferenceRequest("echo", {"x": x})).outputs["x"]
        assert copy.flags.owndata
        np.testing.assert_array_equal(copy, x)


def test_non_contiguous_and_empty_inputs(server: ShmServer, name: str) -> None:
    x = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    with ShmTransport().connect(name) as client:
        resp = client.infer(InferenceRequest("echo", {"x": x, "e": np.zeros((0, 3))}))
    np.testing.assert_array_equal(resp.outputs["x"], x)
    assert resp.outputs["e"].shape == (0, 3)


def test_metadata_and_stats_travel_as_json(server: ShmServer, name: str) -> None:
    with ShmTransport().connect(name) as client:
        client.infer(InferenceRequest("echo", {"x": np.zeros(1)}))
        assert client.metadata("echo")["name"] == "echo"
        assert client.stats()["requests"] >= 1


def test_a_handler_may_respond_later_from_another_thread(server: ShmServer, name: str) -> None:
    with ShmTransport().connect(name) as client:
        for i in range(20):
            resp = client.infer(InferenceRequest("later", {"x": np.array([i])}))
            assert resp.outputs["x"][0] == i


def test_threads_of_one_client_each_get_their_own_response(server: ShmServer, name: str) -> None:
    errors: list[BaseException] = []
    with ShmTransport().connect(name, channels=4) as client:

        def run(t: int) -> None:
            try:
                for i in range(100):
                    x = np.array([t, i])
                    resp = client.infer(InferenceRequest("echo", {"x": x}, id=t * 1000 + i + 1), timeout=20)
                    assert resp.id == t * 1000 + i + 1
                    np.testing.assert_array_equal(resp.outputs["x"], x)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]  # more threads than channels
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_outputs_stay_intact_until_the_same_threads_next_call(server: ShmServer, name: str) -> None:
    """Views on the response area: another thread's calls must never overwrite them, even with
    more threads than channels (no thread waits for one that is not calling)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    with ShmTransport().connect(name, channels=2) as client:

        def run(t: int) -> None:
            try:
                for i in range(30):
                    x = np.full(256, t * 1000 + i, dtype=np.int64)
                    y = client.infer(InferenceRequest("echo", {"x": x}), timeout=20).outputs["x"]
                    if i == 0:
                        barrier.wait(timeout=20)  # every thread holds a view while the others call
                    time.sleep(0.001)
                    np.testing.assert_array_equal(y, x)  # still this thread's own bytes
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_async_outputs_are_copies(server: ShmServer, name: str) -> None:
    import asyncio

    async def main() -> list[np.ndarray]:
        with ShmTransport().connect(name) as client:
            reqs = [InferenceRequest("echo", {"x": np.full(8, i)}) for i in range(6)]
            resps = await asyncio.gather(*(client.ainfer(r, timeout=20) for r in reqs))
            return [r.outputs["x"] for r in resps]

    outs = asyncio.run(main())
    for i, y in enumerate(outs):
        assert y.flags.owndata
        np.testing.assert_array_equal(y, np.full(8, i))


def test_async_timeout_runs_from_the_call_not_from_when_a_worker_thread_comes_free(
    server: ShmServer, name: str
) -> None:
    """``ainfer`` runs in the loop's executor: with its threads busy, a 0.2 s call waiting 0.6 s
    for one must fail DeadlineExceeded, not start its 0.2 s then."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from foundation_ml.errors import DeadlineExceeded

    async def main() -> object:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        with ShmTransport().connect(name) as client:
            busy = asyncio.create_task(asyncio.to_thread(time.sleep, 0.6))
            await asyncio.sleep(0.05)  # the executor's one thread sleeps
            try:
                return await client.ainfer(InferenceRequest("echo", {"x": np.ones(4)}), timeout=0.2)
            except DeadlineExceeded as exc:
                return exc
            finally:
                await busy

    assert isinstance(asyncio.run(main()), DeadlineExceeded)


class _Holding(EchoHandler):
    """Echoes, but keeps the answer to a request for model ``hold`` until ``release()``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.held: list[Any] = []

    def __call__(self, request: InferenceRequest, respond: Any) -> None:
        self.seen.append(request.model)
        answer = InferenceResponse(request.id, request.model, request.inputs)
        if request.model == "hold":
            self.held.append(lambda: respond(answer))
        else:
            respond(answer)


@pytest.mark.parametrize("api", ["InferenceClient", "ShmClient"])
def test_an_async_call_cancelled_while_it_waits_for_a_channel_is_never_sent(name: str, api: str) -> None:
    """With each of the client's channels taken, an ``ainfer`` waits in its thread for one.
    Cancelled then (``asyncio.wait_for`` or ``asyncio.timeout`` running out), it went on waiting
    and sent its request once a channel came free: the server ran a request nobody awaited,
    ahead of the calls behind it. It now gives up unsent; the next call gets the channel."""
    import asyncio

    from foundation_ml import InferenceClient
    from foundation_ml._client import registered_hub

    handler = _Holding()
    server = ShmTransport().serve(name, handler, channels=4)
    if api == "ShmClient":
        client: Any = ShmTransport().connect(name, channels=1)
        pool = client._pool

        async def call(model: str, x: np.ndarray) -> np.ndarray:
            return (await client.ainfer(InferenceRequest(model, {"x": x}), timeout=30)).outputs["x"]
    else:
        client = InferenceClient(name, transport="shm", hub=registered_hub(), timeout=30, channels=1)
        pool = client._client._pool

        async def call(model: str, x: np.ndarray) -> np.ndarray:
            return (await client.ainfer(model, {"x": x}))["x"]

    async def main() -> list[np.ndarray]:
        first = asyncio.ensure_future(call("hold", np.zeros(4)))
        while not handler.held:  # with the server: the client's one channel is taken
            await asyncio.sleep(0.001)
        abandoned = asyncio.ensure_future(call("abandoned", np.ones(4)))
        while pool._waiters != 1:  # its thread waits for the channel
            await asyncio.sleep(0.001)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        later = asyncio.ensure_future(call("echo", np.full(4, 2.0)))
        handler.held[0]()
        return [await first, await later, await call("echo", np.full(4, 3.0))]

    try:
        outs = asyncio.run(main())
        kept = (len(pool._all), len(pool._free), pool._waiters)
    finally:
        client.close()
        server.stop()
    for out, value in zip(outs, (0.0, 2.0, 3.0), strict=True):
        np.testing.assert_array_equal(out, np.full(4, value))
    assert handler.seen == ["hold", "echo", "echo"]
    assert kept == (1, 1, 0)


def test_an_async_call_cancelled_while_it_waits_for_the_answer_frees_its_thread(name: str) -> None:
    """A cancelled ``ShmClient.ainfer`` whose request was with the server kept its executor
    thread waiting for the answer nobody awaited: ``asyncio.run`` (which joins the loop's
    executor) did not return until the server answered, for ever with no timeout (the
    default). Its thread now stops waiting; the channel is the next call's once answered."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    handler = _Holding()
    server = ShmTransport().serve(name, handler, channels=4)
    client = ShmTransport().connect(name, channels=1)

    async def main() -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        held = asyncio.ensure_future(client.ainfer(InferenceRequest("hold", {"x": np.zeros(4)})))
        while not handler.held:  # with the server, its answer held back
            await asyncio.sleep(0.001)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        # the executor's one thread is free again while the answer is still held (the limit is
        # only where the test gives up: the old code's thread waited for the answer)
        try:
            free = await asyncio.wait_for(loop.run_in_executor(None, lambda: "free"), 60)
        finally:
            handler.held.pop()()  # the abandoned answer arrives; the channel serves the next call
        assert free == "free"
        later = await client.ainfer(InferenceRequest("echo", {"x": np.full(4, 2.0)}), timeout=30)
        return [later.outputs["x"]]

    try:
        outs = asyncio.run(main())
        kept = (len(client._pool._all), len(client._pool._free))
    finally:
        client.close()
        server.stop()
    np.testing.assert_array_equal(outs[0], np.full(4, 2.0))
    assert handler.seen == ["hold", "echo"]
    assert kept == (1, 1)


_BAD_TIMEOUTS = st.one_of(
    st.floats(max_value=-1e-300),  # any negative (-1e-9 included)
    st.floats(min_value=1e9, exclude_min=True),  # past 1e9 s, inf included
    st.just(float("nan")),
    st.booleans(),
    st.text(max_size=3),
    st.just(-1),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timeout=_BAD_TIMEOUTS)
@example(timeout=float("nan"))
@example(timeout=-1)
@example(timeout=-1e-9)
def test_async_bad_timeouts_are_the_value_error_infer_raises(
    echo_server: object, name: str, timeout: Any
) -> None:
    """``ainfer`` took ``max(0.0, timeout - waited)`` of any number: NaN, -1 and -1e-9 became 0
    and failed ``DeadlineExceeded`` where ``infer`` raises ``ValueError`` naming the timeout.
    Anything outside [0, 1e9] s (and a bool, a str) now reaches ``infer`` as it is."""
    import asyncio

    request = InferenceRequest("echo", {"x": np.ones(4)})
    with ShmTransport().connect(name) as client:
        with pytest.raises(ValueError) as sync:
            client.infer(request, timeout=timeout)
        with pytest.raises(ValueError) as async_:
            asyncio.run(client.ainfer(request, timeout=timeout))
        assert str(async_.value) == str(sync.value)
        assert repr(timeout) in str(async_.value)


def test_n_client_processes_times_m_requests_all_verified(echo_server: object, name: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, name, str(c), "300", "2"], stdout=subprocess.PIPE, text=True
        )
        for c in range(4)
    ]
    results = [p.communicate(timeout=240)[0].strip() for p in procs]
    assert results == ["ok 600"] * 4


def test_a_loan_writes_inputs_straight_into_shared_memory(server: ShmServer, name: str) -> None:
    with ShmTransport().connect(name) as client, client.loan("echo", {"x": (DataType.FP32, (3, 4))}) as loan:
        for i in range(3):
            loan["x"][:] = i
            resp = loan.infer()
            np.testing.assert_array_equal(resp.outputs["x"], np.full((3, 4), i, np.float32))


def test_a_loan_sends_its_version_outputs_and_parameters_with_every_request(name: str) -> None:
    seen: list[tuple[str, tuple[str, ...], dict[str, object]]] = []

    def handler(request: InferenceRequest, respond: Any) -> None:
        seen.append((request.version, tuple(request.outputs), dict(request.parameters)))
        respond(InferenceResponse(request.id, request.model, request.inputs))

    spec = {"x": (DataType.FP32, (2,))}
    with (
        ShmTransport().serve(name, handler),
        ShmTransport().connect(name) as client,
        client.loan("m", spec, version="3", outputs=["x"], parameters={"ms": 5}) as loan,
    ):
        for i in range(2):
            loan["x"][:] = i
            np.testing.assert_array_equal(loan.infer().outputs["x"], np.full(2, i, np.float32))
    assert seen == [("3", ("x",), {"ms": 5})] * 2


def test_a_response_bigger_than_the_response_area_grows_it_and_succeeds(server: ShmServer, name: str) -> None:
    x = np.arange(300_000, dtype=np.float64)  # 2.4 MB: over the 1 MiB default and the 4 KiB asked for
    with ShmTransport().connect(name, capacity=4096) as client:
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
        np.testing.assert_array_equal(
            client.infer(InferenceRequest("echo", {"x": x[:5]})).outputs["x"], x[:5]
        )


class _Sized(EchoHandler):
    """Echo, and model "sized" answers ``parameters["n"]`` zero bytes (output ``y``)."""

    def __call__(self, request: InferenceRequest, respond: Any) -> None:
        if request.model != "sized":
            return super().__call__(request, respond)
        y = np.zeros(int(request.parameters["n"]), np.uint8)
        respond(InferenceResponse(request.id, "sized", {"y": y}))


def test_a_response_over_max_response_bytes_is_too_large_and_the_area_is_not_grown(name: str) -> None:
    """A TOO_LARGE answer made the client grow its response area to the answer's
    ``required_bytes``, whatever it was: a hostile or broken server could have each client
    reserve all of /dev/shm. Up to ``max_response_bytes`` it still grows and re-sends; over it the
    call fails TOO_LARGE naming the bytes, the limit and the option, the area is left as it was,
    and the channel serves the next call."""
    page = 4096
    with (
        ShmTransport().serve(name, _Sized()),
        ShmTransport().connect(name, capacity=4 * page, max_response_bytes=8 * page, channels=1) as client,
    ):
        x = {"x": np.arange(4, dtype=np.float32)}
        grown = client.infer(InferenceRequest("sized", x, parameters={"n": 6 * page}))
        assert grown.outputs["y"].size == 6 * page  # over the 4 pages: grown (7 pages), within 8
        (ch,) = client._all
        cap, gen, data = ch.resp_cap, ch.gen, ch.data.name if ch.data else None
        assert 6 * page < cap <= 8 * page
        with pytest.raises(TooLarge) as caught:
            client.infer(InferenceRequest("sized", x, parameters={"n": 16 * page}))
        message = str(caught.value)
        assert re.search(r"the response needs (\d+) bytes", message), message
        assert int(re.search(r"needs (\d+) bytes", message).group(1)) > 16 * page  # type: ignore[union-attr]
        assert "max_response_bytes (32768)" in message
        assert (ch.resp_cap, ch.gen, ch.data.name if ch.data else None) == (cap, gen, data)
        assert [o for o in objects_of(name) if o.startswith(f"fdn-{name}-d")] == [data.lstrip("/")]  # type: ignore[union-attr]
        again = client.infer(InferenceRequest("sized", x, parameters={"n": 5 * page}))
        assert again.outputs["y"].size == 5 * page and client._all == [ch] and ch.gen == gen
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", x)).outputs["x"], x["x"])


def test_a_server_asking_a_tib_for_its_response_gets_too_large_not_a_tib(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server (hostile, or broken) answering TOO_LARGE with ``required_bytes`` of 1 TiB: the
    client tried to make a data segment that large, limited only by /dev/shm and fallocate. With
    the default options it refuses anything over 4 GiB before creating anything."""
    from foundation_shm import _answers, _channel

    write_error = _answers.Answers.write_error

    def tib(self: Any, ch: Any, r: Any, exc: Any, required: int = 0) -> None:
        write_error(self, ch, r, exc, 1 << 40 if required else 0)

    attached: list[tuple[int, int]] = []
    attach = _channel._Channel.attach

    def spy(self: Any, req_cap: int, resp_cap: int) -> None:
        attached.append((req_cap, resp_cap))
        if resp_cap > 4 << 30:  # never allocated, whatever the client under test does
            raise AssertionError(f"the client grew its response area to {resp_cap} bytes")
        attach(self, req_cap, resp_cap)

    monkeypatch.setattr(_answers.Answers, "write_error", tib)
    monkeypatch.setattr(_channel._Channel, "attach", spy)
    with ShmTransport().serve(name, _Sized()), ShmTransport().connect(name, channels=1) as client:
        x = {"x": np.arange(4, dtype=np.float32)}
        with pytest.raises(
            TooLarge,
            match=r"the response needs 1099511627776 bytes, more than this client's max_response_bytes "
            r"\(4294967296\)",
        ):
            client.infer(InferenceRequest("sized", x, parameters={"n": 2 << 20}))
        assert attached == [(1 << 20, 1 << 20)]  # the claim's areas only
        assert client.infer(InferenceRequest("sized", x, parameters={"n": 8})).outputs["y"].size == 8


def test_a_server_default_capacity_over_max_response_bytes_is_not_taken(name: str) -> None:
    """The areas of a claim were the server's ``default_capacity`` (a header word): a server
    could have every claim reserve what ``max_response_bytes`` refuses to grow to. A client takes
    at most ``max_response_bytes`` (the areas grow on demand)."""
    page = 4096
    with (
        ShmTransport().serve(name, EchoHandler(), default_capacity=64 * page),
        ShmTransport().connect(name, max_response_bytes=3 * page + 1, channels=1) as client,
    ):
        x = np.arange(4, dtype=np.float32)
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
        (ch,) = client._all
        assert (ch.req_cap, ch.resp_cap) == (4 * page, 4 * page)  # 3 pages and a byte, in pages


def test_a_large_request_grows_the_response_area_no_further_than_max_response_bytes(name: str) -> None:
    """A request larger than the areas grows the response area as big, as a guess at its answer,
    but not past ``max_response_bytes``: a larger answer is refused, not made room for."""
    page = 4096
    with (
        ShmTransport().serve(name, _Sized()),
        ShmTransport().connect(name, capacity=page, max_response_bytes=4 * page, channels=1) as client,
    ):
        x = np.zeros(16 * page, np.uint8)
        resp = client.infer(InferenceRequest("sized", {"x": x}, parameters={"n": 8}))
        assert resp.outputs["y"].size == 8
        (ch,) = client._all
        assert ch.req_cap > 16 * page and ch.resp_cap == 4 * page


def test_max_response_bytes_defaults_to_the_server_s_default_max_request_bytes() -> None:
    assert ConnectOptions().max_response_bytes == ServeOptions().max_request_bytes == 4 << 30


def test_data_crc_covers_the_tensor_bytes_end_to_end(name: str) -> None:
    with (
        ShmTransport().serve(name, EchoHandler(), data_crc=True),
        ShmTransport().connect(name, data_crc=True) as c,
    ):
        x = np.arange(1000, dtype=np.int16)
        for _ in range(2):  # the second call takes the cached path: its CRC still covers the data
            np.testing.assert_array_equal(c.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)


def test_the_client_refuses_parameters_over_1_mib_before_sending(server: ShmServer, name: str) -> None:
    """TOO_LARGE as the server would answer (spec 11), but raised by the client: its message says
    so, and the next call on the same client goes through."""
    big = {"p": "x" * (1 << 20)}  # {"p":"..."}: 1 MiB + 8 bytes of JSON
    x = np.arange(4, dtype=np.float32)
    with ShmTransport().connect(name) as client:
        with pytest.raises(TooLarge, match="parameters of 1048584 bytes as JSON \\(at most 1048576\\)"):
            client.infer(InferenceRequest("echo", {"x": x}, parameters=big))
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)


def test_the_server_answers_parameters_over_1_mib_too_large(
    server: ShmServer, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import foundation_shm._codec as codec

    monkeypatch.setattr(codec, "_MAX_PARAMS", 1 << 30)  # a client that does not check
    x = np.arange(4, dtype=np.float32)
    with ShmTransport().connect(name) as client:
        with pytest.raises(TooLarge, match="params_size 1048584 bytes \\(at most 1048576\\)"):
            client.infer(InferenceRequest("echo", {"x": x}, parameters={"p": "x" * (1 << 20)}))
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000, b'{"a":' * 3000 + b"1" + b"}" * 3000], ids=["arrays", "objects"]
)
def test_the_server_answers_deeply_nested_parameters_invalid_input_not_internal(
    server: ShmServer, name: str, monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    import foundation_shm._codec as codec

    monkeypatch.setattr(codec, "encode_params", lambda _: raw)  # what a foreign client sends
    x = np.arange(4, dtype=np.float32)
    with ShmTransport().connect(name) as client:
        with pytest.raises(InvalidInput, match="params"):
            client.infer(InferenceRequest("echo", {"x": x}, parameters={"p": 1}))
        monkeypatch.undo()
        np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
