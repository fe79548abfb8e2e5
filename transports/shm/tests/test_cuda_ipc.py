"""CUDA IPC, the parts that need no GPU: descriptors, checks, typed errors, fallback, handle caches."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from foundation_shm import ClientCounters, ShmTransport, _cuda_client, _cuda_server
from foundation_shm import _cuda_driver as D
from foundation_shm import _cuda_ipc as C
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._codec import layout, request_payload_size
from foundation_shm._cuda_desc import (
    FLAG_CUDA_IPC,
    U64_MAX,
    CudaIpcRef,
    decode_cuda_ipc_tensor,
    pack_cuda_desc,
    write_mixed_request,
    write_mixed_response,
)
from foundation_shm._cuda_fake import FakeDeviceMemory
from foundation_shm._decoders import decode_request, decode_response
from foundation_shm._echo import EchoHandler
from foundation_shm._liveness import start_time
from foundation_shm._vectors import CUDA_CASES, CUDA_DIR, decoded_json, generate
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml import DataType, InferenceRequest
from foundation_ml.errors import (
    BadChecksum,
    CudaUnavailable,
    DeadlineExceeded,
    InferenceError,
    InternalError,
    InvalidInput,
    ServerUnavailable,
)

from .conftest import CudaServeProcess, until

torch = pytest.importorskip("torch")

AREA = 1 << 16
HANDLE = bytes(range(1, 65))
NO_DEVICE = not torch.cuda.is_available()


def _ref(**kw: Any) -> CudaIpcRef:
    fields: dict[str, Any] = dict(
        name="x", dtype=DataType.FP32, shape=(2, 3), device=0, handle=HANDLE, offset=512, size=24
    )
    fields.update(kw)
    return CudaIpcRef(**fields)


# --- descriptors: round trips ---------------------------------------------------------------------

DTYPES = [d for d in DataType]


@st.composite
def cuda_refs(draw: st.DrawFn, name: str) -> CudaIpcRef:
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(
        draw(st.lists(st.integers(1, 64), min_size=0, max_size=8).filter(lambda s: math.prod(s) < 1 << 24))
    )
    size = math.prod(shape) * dtype.itemsize
    offset = draw(st.integers(0, (U64_MAX - size) // dtype.itemsize)) * dtype.itemsize
    handle = draw(st.binary(min_size=64, max_size=64).filter(lambda b: any(b)))
    device = draw(st.integers(0, 2**31 - 1))
    return CudaIpcRef(name, dtype, shape, device, handle, offset, size)


@st.composite
def mixed_inputs(draw: st.DrawFn) -> list[Any]:
    """A request's inputs: CUDA_IPC refs and small HOST arrays, in any order."""
    n = draw(st.integers(1, 6))
    out: list[Any] = []
    for i in range(n):
        if draw(st.booleans()):
            out.append(draw(cuda_refs(f"d{i}")))
        else:
            count = draw(st.integers(0, 16))
            out.append((f"h{i}", np.arange(count, dtype=np.float32) + i))
    return out


def _encode_request(inputs: list[Any], flags: int = FLAG_CUDA_IPC, buf: bytearray | None = None) -> bytearray:
    host = [(n, DataType.from_numpy(a.dtype), a.shape) for n, a in (t for t in inputs if type(t) is tuple)]
    refs, end = layout(host, request_payload_size(len(inputs), 1, 0))
    buf = buf if buf is not None else bytearray(max(AREA, end))
    it = iter(refs)
    tensors = []
    for t in inputs:
        if type(t) is tuple:
            ref = next(it)
            buf[ref.offset : ref.offset + ref.size] = t[1].tobytes()
            tensors.append(ref)
        else:
            tensors.append(t)
    write_mixed_request(buf, tensors=tensors, request_id=9, model="m", outputs=("y",), flags=flags)
    return buf


@settings(max_examples=150, deadline=None)
@given(mixed_inputs(), st.sampled_from([0, FLAG_CUDA_IPC, FLAG_CUDA_IPC | 1]))
def test_mixed_requests_round_trip(inputs: list[Any], flags: int) -> None:
    dec = decode_request(_encode_request(inputs, flags))
    assert (
        dec.flags == flags
        and dec.outputs == ("y",)
        and list(dec.inputs) == [t[0] if type(t) is tuple else t.name for t in inputs]
    )
    for t in inputs:
        if type(t) is tuple:
            np.testing.assert_array_equal(dec.inputs[t[0]], t[1])
        else:
            assert dec.inputs[t.name] == t


@settings(max_examples=100, deadline=None)
@given(st.lists(cuda_refs("o"), min_size=1, max_size=1), st.binary(max_size=40))
def test_responses_with_device_outputs_round_trip(refs: list[CudaIpcRef], text: bytes) -> None:
    buf = bytearray(AREA)
    host = np.arange(5, dtype=np.int64)
    (href,), _ = layout([("h", DataType.INT64, (5,))], 112 + 2 * 256 + 0)
    buf[href.offset : href.offset + href.size] = host.tobytes()
    write_mixed_response(buf, tensors=[refs[0], href], request_id=3, model="m")
    dec = decode_response(buf)
    assert dec.status == 0 and dec.request_id == 3
    assert dec.outputs["o"] == refs[0]
    np.testing.assert_array_equal(dec.outputs["h"], host)


def test_the_descriptor_bytes_are_the_spec_s() -> None:
    buf = bytearray(256)
    pack_cuda_desc(buf, 0, _ref(device=3, offset=1024))
    fields = L.DESC.unpack_from(buf, 0)
    assert fields[0].rstrip(b"\0") == b"x" and fields[1] == DataType.FP32.code and fields[2] == 2
    assert fields[3:5] == (2, 3) and fields[5:11] == (0,) * 6
    assert fields[11] == 0 and fields[12] == 24  # data_offset 0, data_size
    assert fields[13] == L.Location.CUDA_IPC and fields[14] == 0 and fields[15] == 3
    assert fields[17] == HANDLE and fields[18] == 1024
    assert buf[240:] == bytes(16)  # reserved


def test_data_crc_covers_the_host_data_only() -> None:
    inputs = [_ref(name="d"), ("h", np.arange(4, dtype=np.float32))]
    buf = _encode_request(inputs, flags=1 | FLAG_CUDA_IPC)
    assert decode_request(buf).inputs["d"] == inputs[0]
    (href,), _ = layout([("h", DataType.FP32, (4,))], request_payload_size(2, 1, 0))
    buf[href.offset] ^= 0xFF
    with pytest.raises(BadChecksum):
        decode_request(buf)


def test_device_bytes_count_toward_the_request_limit() -> None:
    from foundation_shm._codec import Limits

    buf = _encode_request([_ref(shape=(1000,), size=4000)])
    from foundation_ml.errors import TooLarge

    with pytest.raises(TooLarge, match="4000 bytes"):
        decode_request(buf, limits=Limits(max_bytes=1000))


# --- descriptors: checks (spec 15.3) ------------------------------------------------------------


def _raw_desc(**kw: Any) -> tuple[Any, ...]:
    """The fields a decoder sees for a hand-made CUDA_IPC descriptor (no encoder checks)."""
    f: dict[str, Any] = dict(
        name="x",
        dtype=DataType.FP32.code,
        shape=(2, 3),
        data_offset=0,
        size=24,
        device=0,
        handle=HANDLE,
        off=64,
    )
    f.update(kw)
    buf = bytearray(256)
    shape = tuple(f["shape"]) + (0,) * (8 - len(f["shape"]))
    L.DESC.pack_into(
        buf, 0, f["name"].encode(), f["dtype"], len(f["shape"]), *shape, f["data_offset"], f["size"],
        L.Location.CUDA_IPC, 0, f["device"], 0, f["handle"], f["off"],
    )  # fmt: skip
    fields = L.DESC.unpack_from(buf, 0)
    return (f["name"], *fields[1:])


BAD: dict[str, dict[str, Any]] = {
    "unknown dtype code 99": dict(dtype=99),
    "data_size 25 != 6 elements x 4 bytes": dict(size=25),
    "a CUDA_IPC tensor has data": dict(shape=(0, 3), size=0),
    "data_offset 4096 must be 0": dict(data_offset=4096),
    "CUDA device -1 < 0": dict(device=-1),
    "handle is all zeros": dict(handle=bytes(64)),
    "ipc_offset 66 not aligned to 4": dict(off=66),
    "overflows 64 bits": dict(off=U64_MAX - 7),
}


@pytest.mark.parametrize("message", BAD)
def test_a_bad_cuda_descriptor_is_invalid_input_saying_why(message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_cuda_ipc_tensor(_raw_desc(**BAD[message]), b"", 0, 7)


def test_a_bad_descriptor_in_a_request_fails_the_decoder_with_its_request_id() -> None:
    buf = _encode_request([_ref()])
    L.DESC.pack_into(
        buf, 144, b"x", DataType.FP32.code, 2, 2, 3, 0, 0, 0, 0, 0, 0, 0, 24, L.Location.CUDA_IPC, 0, 0, 0,
        bytes(64), 64,
    )  # fmt: skip
    from foundation_shm._codec import write_header

    write_header(buf, 1, 9, request_payload_size(1, 1, 0), 0, [])
    with pytest.raises(InvalidInput, match="all zeros") as info:
        decode_request(buf)
    assert info.value.request_id == 9


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (_ref(handle=bytes(64)), "all zeros"),
        (_ref(size=23), "data_size 23"),
        (_ref(device=-2), "device -2"),
        (_ref(name="n" * 64), "at most 63"),
        (_ref(shape=(1,) * 9, size=4), "9 dimensions"),
    ],
)
def test_the_encoder_refuses_what_the_decoder_would(ref: CudaIpcRef, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        pack_cuda_desc(bytearray(256), 0, ref)


# --- without CUDA: clear errors ------------------------------------------------------------------


@pytest.mark.skipif(not NO_DEVICE, reason="checks the error raised where there is no CUDA device")
def test_a_client_asking_for_cuda_ipc_without_a_device_fails_at_once(name: str) -> None:
    with pytest.raises(CudaUnavailable, match=r"^CUDA IPC requested but no CUDA device$"):
        ShmClient(name, cuda_ipc=True)  # before connecting: no server is needed to say so


def test_an_unknown_fallback_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cuda_fallback"):
        ShmClient(name, cuda_fallback="gpu")


@pytest.fixture
def serve(name: str) -> Iterator[Callable[[str], CudaServeProcess]]:
    from foundation_shm._objects import remove_objects

    started: list[CudaServeProcess] = []

    def start(mode: str) -> CudaServeProcess:
        started.append(CudaServeProcess(name, mode))
        return started[-1]

    yield start
    for p in started:
        p.stop()
    remove_objects(name)


def _send_cuda_descriptor(client: ShmClient) -> None:
    """A hand-encoded request with one CUDA_IPC input (a handle nobody exported)."""
    ch = client._take(0)
    try:
        ch.wkey = None
        write_mixed_request(ch.req, tensors=[_ref()], request_id=77, model="echo", flags=FLAG_CUDA_IPC)
        client._exchange(ch, 77, "echo", time.monotonic_ns() + 10**10, retry=False)
    finally:
        client._give(ch)


def _still_serves(client: ShmClient) -> None:
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)


@pytest.mark.skipif(not NO_DEVICE, reason="a server with a device accepts the descriptor (tested with CUDA)")
def test_a_server_without_a_device_answers_cuda_unavailable_and_goes_on(
    serve: Callable[[str], CudaServeProcess], name: str
) -> None:
    server = serve("on")
    assert server.feature == 0  # FDN_FEATURE_CUDA_IPC is not advertised
    with ShmTransport().connect(name) as client:
        assert not client._connection().ctl.u32[L.RegionField.FEATURES // 4] & L.Feature.CUDA_IPC
        with pytest.raises(CudaUnavailable) as info:
            _send_cuda_descriptor(client)
        assert info.value.message == "CUDA IPC requested but no CUDA device"
        assert info.value.request_id == 77
        _still_serves(client)
        with ShmTransport().connect(name) as other:
            _still_serves(other)


def test_a_server_that_refuses_cuda_ipc_says_so(serve: Callable[[str], CudaServeProcess], name: str) -> None:
    assert serve("off").feature == 0
    with ShmTransport().connect(name) as client:
        with pytest.raises(CudaUnavailable, match="refuses CUDA IPC"):
            _send_cuda_descriptor(client)
        _still_serves(client)
        y = client.infer(InferenceRequest("scale", {"x": np.arange(3.0)})).outputs["x"]
        assert y.tolist() == [0.0, 2.0, 4.0]  # host inputs: the test server's host path


def test_a_plain_host_server_answers_cuda_unavailable(echo_server: Any, name: str) -> None:
    with ShmTransport().connect(name) as client:
        with pytest.raises(CudaUnavailable, match="does not accept CUDA IPC"):
            _send_cuda_descriptor(client)
        _still_serves(client)


def test_a_repeated_cuda_payload_without_the_flag_is_caught_every_time(echo_server: Any, name: str) -> None:
    """The second one is decoded from the server's cache of the last payload: still refused."""
    with ShmTransport().connect(name, channels=1) as client:
        for rid in (41, 42, 43):
            ch = client._take(0)
            try:
                ch.wkey = None
                write_mixed_request(ch.req, tensors=[_ref()], request_id=rid, model="echo")
                with pytest.raises(CudaUnavailable, match="does not accept CUDA IPC"):
                    client._exchange(ch, rid, "echo", time.monotonic_ns() + 10**10, retry=False)
            finally:
                client._give(ch)
        _still_serves(client)


def test_the_flag_alone_is_harmless_on_a_host_server(echo_server: Any, name: str) -> None:
    with ShmTransport().connect(name) as client:
        client.flags = FLAG_CUDA_IPC
        client._all[0].wkey = None
        _still_serves(client)


# --- fallback through host memory (code path selection, with CPU tensors standing in) -----------


@pytest.fixture
def cpu_as_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat CPU torch tensors as device tensors: the path selection runs without a GPU."""
    for side in (_cuda_client, _cuda_server):  # the client's inputs, the server's outputs
        monkeypatch.setattr(side, "is_device_tensor", lambda v: isinstance(v, torch.Tensor))


def test_fallback_host_sends_device_tensors_through_host_memory(
    echo_server: Any, name: str, cpu_as_device: None
) -> None:
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    b = torch.tensor([1, 2], dtype=torch.bfloat16)
    with ShmTransport().connect(name, cuda_fallback="host") as client:
        out = client.infer(InferenceRequest("echo", {"x": x, "n": np.arange(3)})).outputs
        assert isinstance(out["x"], torch.Tensor) and out["x"].device == x.device
        torch.testing.assert_close(out["x"], x)
        assert isinstance(out["n"], torch.Tensor) and out["n"].tolist() == [0, 1, 2]
        first = out["x"].clone()
        client.infer(InferenceRequest("echo", {"x": x + 100}))
        torch.testing.assert_close(out["x"], first)  # not a view on the response area
        bits = client.infer(InferenceRequest("echo", {"b": b})).outputs["b"]
        assert bits.view(torch.bfloat16).tolist() == [1.0, 2.0]  # bf16 crosses as its bit patterns


def test_without_fallback_a_server_lacking_the_feature_is_a_clear_error(
    echo_server: Any, name: str, cpu_as_device: None
) -> None:
    with ShmTransport().connect(name) as client:
        with pytest.raises(
            CudaUnavailable, match=r"does not advertise FDN_FEATURE_CUDA_IPC.*cuda_fallback='host'"
        ):
            client.infer(InferenceRequest("echo", {"x": torch.zeros(2)}))
        _still_serves(client)


def test_an_error_of_a_call_with_device_tensors_names_its_model_and_request_id(
    echo_server: Any, name: str, cpu_as_device: None
) -> None:
    """The CUDA path's own errors named the model but not the request (it numbered the request
    inside), and a closed client's error named neither (as on the host path: test_error_fields)."""
    with ShmTransport().connect(name) as client:
        with pytest.raises(CudaUnavailable, match="does not advertise") as info:
            client.infer(InferenceRequest("echo", {"x": torch.zeros(2)}, id=93))
        assert (info.value.model, info.value.request_id) == ("echo", 93)
    with ShmTransport().connect(name, cuda_fallback="host") as client:
        client.close()
        with pytest.raises(ServerUnavailable, match="is closed") as closed:
            client.infer(InferenceRequest("echo", {"x": torch.zeros(2)}, id=94))
        assert (closed.value.model, closed.value.request_id) == ("echo", 94)


def test_a_closed_clients_call_with_device_tensors_opens_no_connection(
    echo_server: Any, name: str, cpu_as_device: None
) -> None:
    """The CUDA path looked up the server's features on ``client._connection()``, which on a
    closed client connected again: the call failed ``CudaUnavailable`` (not ``ServerUnavailable``,
    as every call of a closed client does) and left that connection open, its mapping and
    semaphores never closed."""
    client = ShmTransport().connect(name)
    client.close()
    with pytest.raises(ServerUnavailable, match="is closed") as info:
        client.infer(InferenceRequest("echo", {"x": torch.zeros(2)}, id=95))
    assert (info.value.model, info.value.request_id) == ("echo", 95)
    assert client._pool._conn is None


async def _ainfer_and_kept(client: Any, request: InferenceRequest) -> tuple[Any, int]:
    """``client.ainfer(request)``, and how many channels the client then keeps for threads' views
    (counted while the loop's executor threads live: a thread's end gives its channel back)."""
    answer = await client.ainfer(request)
    return answer, sum(1 for box in client._pool._holders if box[0] is not None)


def test_cuda_ipc_false_always_goes_by_host(echo_server: Any, name: str, cpu_as_device: None) -> None:
    with ShmTransport().connect(name, cuda_ipc=False) as client:
        # ainfer's copies by host: its thread (alive until asyncio.run ends) keeps no channel
        out, kept = asyncio.run(_ainfer_and_kept(client, InferenceRequest("echo", {"x": torch.ones(3) * 2})))
        assert out.outputs["x"].tolist() == [2.0, 2.0, 2.0]
        assert kept == 0
        out = client.infer(InferenceRequest("echo", {"x": torch.ones(3)})).outputs["x"]
        assert out.tolist() == [1.0, 1.0, 1.0]


def test_a_server_refusing_at_request_time_makes_the_client_fall_back_and_remember(
    name: str, cpu_as_device: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The region advertises CUDA IPC but the request is answered CUDA_UNAVAILABLE."""
    exported: list[str] = []

    def fake_export(n: str, t: Any) -> CudaIpcRef:
        exported.append(n)
        return _ref(name=n, shape=tuple(t.shape), size=t.numel() * t.element_size(), offset=0)

    monkeypatch.setattr(_cuda_client, "export_tensor", fake_export)
    monkeypatch.setattr(_cuda_client, "_synchronize", lambda devices: None)
    with ShmTransport().serve(name, EchoHandler(), channels=2) as server:
        server._ctl.u32[L.RegionField.FEATURES // 4] |= L.Feature.CUDA_IPC
        with ShmTransport().connect(name, cuda_fallback="host") as client:
            for _ in range(2):
                out = client.infer(InferenceRequest("echo", {"x": torch.arange(4.0)})).outputs["x"]
                assert out.tolist() == [0.0, 1.0, 2.0, 3.0]
            assert exported == ["x"]  # tried once by handle, then by host for this connection


def test_the_first_call_by_handle_after_a_graceful_restart_is_served_by_the_new_server(
    name: str, cpu_as_device: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stopped (its region STOPPED) and started again under its name: a call with
    host inputs is sent once more on a new connection (nothing was sent), but one by IPC handle
    failed with the private ``_GoneBeforeSending`` ('is gone'); it is sent once more too (here
    the new server refuses the fake handle, and the call falls back to host memory)."""

    def fake_export(n: str, t: Any) -> CudaIpcRef:
        return _ref(name=n, shape=tuple(t.shape), size=t.numel() * t.element_size(), offset=0)

    monkeypatch.setattr(_cuda_client, "export_tensor", fake_export)
    monkeypatch.setattr(_cuda_client, "_synchronize", lambda devices: None)

    def serve() -> Any:
        server = ShmTransport().serve(name, EchoHandler(), channels=2)
        server._ctl.u32[L.RegionField.FEATURES // 4] |= L.Feature.CUDA_IPC
        return server

    server = serve()
    try:
        with ShmTransport().connect(name, cuda_fallback="host") as client:
            client.infer(InferenceRequest("echo", {"x": np.arange(4.0)}))  # by host: not refused
            server.stop()
            server = serve()
            out = client.infer(InferenceRequest("echo", {"x": torch.arange(4.0)})).outputs["x"]
            assert out.tolist() == [0.0, 1.0, 2.0, 3.0]
    finally:
        server.stop()


def _serve_ipc(name: str, ipc: bool, handler: EchoHandler | None = None) -> Any:
    """An in-process echo server under ``name``, advertising CUDA IPC if ``ipc``."""
    server = ShmTransport().serve(name, handler or EchoHandler(), channels=2)
    if ipc:
        server._ctl.u32[L.RegionField.FEATURES // 4] |= L.Feature.CUDA_IPC
    return server


@pytest.fixture
def by_fake_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Device tensors exported as a fake handle (a server refuses it), nothing synchronized."""

    def fake_export(n: str, t: Any) -> CudaIpcRef:
        return _ref(name=n, shape=tuple(t.shape), size=t.numel() * t.element_size(), offset=0)

    monkeypatch.setattr(_cuda_client, "export_tensor", fake_export)
    monkeypatch.setattr(_cuda_client, "_synchronize", lambda devices: None)


def test_a_call_by_handle_moved_to_a_new_server_without_cuda_ipc_is_a_resend_by_host(
    name: str, cpu_as_device: None, by_fake_handle: None
) -> None:
    """A server stopped and started again under its name, the new one without CUDA IPC: the call
    found the region STOPPED before sending by handle, and went once more, by host, to the new
    server (spec 10.5: one reconnect, one resend). By host the moved call went through a call of
    its own (``client.infer``), which counted nothing: resends was 0."""
    server = _serve_ipc(name, ipc=True)
    try:
        with ShmTransport().connect(name, cuda_fallback="host") as client:
            client.infer(InferenceRequest("echo", {"x": np.arange(4.0)}))
            server.stop()
            server = _serve_ipc(name, ipc=False, handler=(second := EchoHandler()))
            out = client.infer(InferenceRequest("echo", {"x": torch.arange(4.0)})).outputs["x"]
            assert out.tolist() == [0.0, 1.0, 2.0, 3.0]
            assert client.counters() == ClientCounters(reconnects=1, resends=1)
            assert second.count == 1  # sent there once
    finally:
        server.stop()


def test_a_call_with_device_tensors_is_sent_once_more_at_most(
    name: str, cpu_as_device: None, by_fake_handle: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spec 10.3: a call goes to a new connection once. Moved by handle, then by host to a server
    that stops too before the request is published, it fails gone; by host it was a call of its
    own (``client.infer``), with a move of its own: it went a third time, to a third server."""
    servers = [_serve_ipc(name, ipc=True)]
    try:
        with ShmTransport().connect(name, cuda_fallback="host") as client:
            client.infer(InferenceRequest("echo", {"x": np.arange(4.0)}))
            first = client._pool._conn
            servers[-1].stop()
            servers.append(_serve_ipc(name, ipc=False))
            take, third = client._pool.take, EchoHandler()

            def take_then_restart(deadline_ns: int, pending_wait: float | None = None) -> Any:
                ch = take(deadline_ns, pending_wait)
                if ch.conn is not first and len(servers) == 2:  # the second server's channel
                    servers[-1].stop()  # its region STOPPED before the publish
                    servers.append(_serve_ipc(name, ipc=False, handler=third))
                return ch

            monkeypatch.setattr(client._pool, "take", take_then_restart)
            with pytest.raises(ServerUnavailable, match="is gone"):
                client.infer(InferenceRequest("echo", {"x": torch.arange(4.0)}))
            assert len(servers) == 3 and third.count == 0
            assert client.counters() == ClientCounters(reconnects=1, resends=0)
    finally:
        servers[-1].stop()


@pytest.mark.parametrize("cuda_ipc", [None, False], ids=["looks-at-the-connection", "by-host"])
def test_a_call_with_device_tensors_after_one_that_found_its_server_gone_says_it_was_not_sent(
    echo_process: Any, name: str, cpu_as_device: None, cuda_ipc: bool | None
) -> None:
    """Spec 10.3: the call after one whose server was killed (no server since) connects as it
    begins (by handle, to look at the server's features; by host, to take a channel) and finds
    the server gone: it wrote nothing, and said only '... is gone', as a call whose handler may
    have run it."""
    server = echo_process()
    with ShmTransport().connect(name, timeout=30, cuda_ipc=cuda_ipc, cuda_fallback="host") as client:
        client.infer(InferenceRequest("echo", {"x": np.arange(4.0)}))
        server.kill()
        gone = f"shm server '{name}' (pid {server.pid}) is gone"
        with pytest.raises(ServerUnavailable, match="; not sent again: "):
            client.infer(InferenceRequest("echo", {"x": torch.arange(4.0)}))
        with pytest.raises(ServerUnavailable) as got:
            client.infer(InferenceRequest("echo", {"x": torch.arange(4.0)}))
        assert type(got.value) is ServerUnavailable, repr(got.value)
        assert got.value.message == f"{gone}; not sent: no server has started under that name since"
        assert got.value.model == "echo" and got.value.request_id > 0


# --- the server's handle cache and its lifetime rules (a fake driver) -----------------------------


class _FakeDriver:
    """Opens every handle as an allocation of 1 MiB (``sizes`` says otherwise by handle).

    As a driver that maps a handle once per process, it refuses to open a handle again before its
    close has returned (CUDA_ERROR_ALREADY_MAPPED), and a close of what is not open is recorded
    in ``errors``. ``on_open`` and ``on_close`` (handle -> None) run inside the call, before it
    takes effect: a test blocks there to hold the driver in mid-call."""

    def __init__(self) -> None:
        self.opened: list[bytes] = []
        self.closed: list[int] = []
        self.sizes: dict[bytes, int] = {}
        self.handle_at: dict[int, bytes] = {}  # each mapping's pointer: its handle
        self.size_at: dict[int, int] = {}
        self.mapped: dict[tuple[int, bytes], int] = {}  # open now: (device, handle) -> pointer
        self.tried: list[bytes] = []  # every open called, refused ones too
        self.errors: list[str] = []
        self.on_open: Callable[[bytes], None] | None = None
        self.on_close: Callable[[bytes], None] | None = None
        self.next = 0x7000_0000

    def open(self, device: int, handle: bytes) -> tuple[int, int]:
        self.tried.append(handle)
        if self.on_open is not None:
            self.on_open(handle)
        if (device, handle) in self.mapped:
            raise D.CudaError(
                "cuIpcOpenMemHandle", 208, "CUDA_ERROR_ALREADY_MAPPED", "resource already mapped"
            )
        self.opened.append(handle)
        size = self.sizes.get(handle, 1 << 20)
        self.next += max(size, 1 << 20)
        self.handle_at[self.next], self.size_at[self.next] = handle, size
        self.mapped[device, handle] = self.next
        return self.next, size

    def close(self, device: int, ptr: int) -> None:
        handle = self.handle_at.get(ptr, b"")
        if self.on_close is not None:
            self.on_close(handle)
        if self.mapped.get((device, handle)) != ptr:
            self.errors.append(f"close of {ptr:#x} on device {device}, which is not open")
            return
        del self.mapped[device, handle]
        self.closed.append(ptr)

    def closed_handles(self) -> list[bytes]:
        gc.collect()  # a dropped mapping closes when its last reference goes
        return [self.handle_at[p] for p in self.closed]

    def open_bytes(self) -> int:
        """Bytes of the allocations open now: what the server keeps allocated."""
        gc.collect()
        return sum(self.size_at.values()) - sum(self.size_at[p] for p in self.closed)


class _Dec:
    """The fields of a DecodedRequest that ``on_request`` reads."""

    def __init__(self, inputs: dict[str, Any], flags: int = FLAG_CUDA_IPC) -> None:
        self.inputs, self.flags, self.model, self.request_id = inputs, flags, "m", 1

    def _replace(self, inputs: dict[str, Any]) -> _Dec:
        return _Dec(inputs, self.flags)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeDriver]:
    gc.collect()  # an earlier test's mappings closed (by its driver), none taken up here
    drv = _FakeDriver()
    monkeypatch.setattr(D, "_driver", drv)
    # the server's opens: the "tensor" holds its mapping
    monkeypatch.setattr(_cuda_server, "tensor_on", lambda mapping, ref: mapping)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    yield drv
    gc.collect()
    assert not drv.errors


def _enabled() -> C.ServerCuda:
    cuda = C.ServerCuda(False)
    cuda.enabled = True
    return cuda


def test_each_handle_is_opened_once_per_client_and_closed_when_the_client_goes(fake_gpu: _FakeDriver) -> None:
    cuda = _enabled()
    a, b = (1, 100), (2, 200)  # (pid, start time) of two clients
    h1, h2 = HANDLE, bytes([9]) * 64
    for _ in range(3):  # requests on channels 0 and 1 of client a re-use its mapping
        cuda.on_request(0, a, _Dec({"x": _ref(handle=h1)}))
        cuda.on_request(1, a, _Dec({"x": _ref(handle=h1), "y": _ref(name="y", handle=h2)}))
    cuda.on_request(2, b, _Dec({"x": _ref(handle=h1, device=1)}))
    assert fake_gpu.opened == [h1, h2, h1]
    assert cuda.clients() == {a: 2, b: 1}
    cuda.forget(0)  # client a still has channel 1
    assert cuda.clients() == {a: 2, b: 1} and not fake_gpu.closed
    held = cuda.on_request(1, a, _Dec({"x": _ref(handle=h1)})).inputs["x"]  # the handler keeps one
    cuda.forget(1)  # a's last channel: its mappings are dropped ...
    gc.collect()
    assert cuda.clients() == {b: 1} and len(fake_gpu.closed) == 1  # ... h2 closes now
    del held
    gc.collect()
    assert len(fake_gpu.closed) == 2  # ... and h1 once the handler let go of its tensor
    cuda.close()
    gc.collect()
    assert len(fake_gpu.closed) == 3


def test_the_server_refuses_a_device_it_does_not_have(fake_gpu: _FakeDriver) -> None:
    cuda = _enabled()
    with pytest.raises(InvalidInput, match="CUDA device 5, this server sees 2"):
        cuda.on_request(0, (1, 1), _Dec({"x": _ref(device=5)}))
    assert fake_gpu.opened == []
    # the error's reply synchronises the request's devices: never one that was refused (on a GPU,
    # torch.cuda.synchronize(5) would fail the reply itself with "invalid device ordinal")
    assert cuda.handles(0) and not cuda._devices[0]


def test_host_requests_leave_no_cuda_state(fake_gpu: _FakeDriver) -> None:
    cuda = _enabled()
    dec = _Dec({"x": np.zeros(2)}, flags=0)
    assert cuda.on_request(0, (1, 1), dec) is dec
    assert not cuda.channels and not cuda.handles(0)


def test_a_disabled_server_names_its_reason() -> None:
    with pytest.raises(CudaUnavailable, match="refuses"):
        C.ServerCuda(False).on_request(0, (1, 1), _Dec({"x": _ref()}))


def test_importing_the_transport_does_not_import_torch() -> None:
    code = (
        "import sys, foundation_shm._server, foundation_shm._client, foundation_shm._cuda_ipc;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_mode_needs_a_handler_that_takes_device_tensors() -> None:
    class Plain:
        pass

    class Takes:
        device_tensors = True

    plain = C.ServerCuda(None, Plain())
    assert not plain.enabled and "does not declare device_tensors" in plain.reason
    takes = C.ServerCuda(None, Takes())
    assert takes.enabled == (not NO_DEVICE) and takes.feature == (0 if NO_DEVICE else L.Feature.CUDA_IPC)
    if NO_DEVICE:
        assert takes.reason == C.NO_CUDA


# --- the driver plumbing, against a fake libcuda ------------------------------------------------


class _FakeLib:
    """Stands in for libcuda.so.1: records calls, answers like the driver."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.depth = 0

    def __getattr__(self, symbol: str) -> Any:
        if symbol.startswith("_") or symbol in ("cuIpcGetMemHandle_v2", "cuIpcCloseMemHandle_v2"):
            raise AttributeError(symbol)
        name = symbol.removesuffix("_v2")

        def call(*args: Any) -> int:
            self.calls.append(symbol)
            if name == self.fail:
                return 1  # CUDA_ERROR_INVALID_VALUE
            if name == "cuGetErrorName":
                args[1]._obj.value = b"CUDA_ERROR_INVALID_VALUE"
            elif name == "cuGetErrorString":
                args[1]._obj.value = b"invalid argument"
            elif name == "cuCtxPushCurrent":
                self.depth += 1
            elif name == "cuCtxPopCurrent":
                self.depth -= 1
            elif name == "cuMemGetAddressRange":
                args[0]._obj.value, args[1]._obj.value = 0x1000, 1 << 20
            elif name == "cuIpcGetMemHandle":
                args[0]._obj.reserved[:] = list(HANDLE)
            elif name == "cuIpcOpenMemHandle":
                assert bytes(args[1].reserved) == HANDLE and args[2] == 1  # by value, lazy peer access
                args[0]._obj.value = 0x9000
            return 0

        return call


def test_the_driver_calls_run_in_the_device_context(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = _FakeLib()
    monkeypatch.setattr("ctypes.CDLL", lambda path: lib)
    drv = D._Driver()
    assert drv.export(0, 0x1000 + 256) == (HANDLE, 256)
    assert drv.open(1, HANDLE) == (0x9000, 1 << 20)
    drv.close(1, 0x9000)
    assert lib.depth == 0  # every push popped
    assert "cuIpcOpenMemHandle_v2" in lib.calls and "cuMemGetAddressRange_v2" in lib.calls
    assert "cuIpcGetMemHandle" in lib.calls and "cuIpcCloseMemHandle" in lib.calls


def test_a_failing_driver_call_raises_cuda_error_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = _FakeLib(fail="cuIpcOpenMemHandle")
    monkeypatch.setattr("ctypes.CDLL", lambda path: lib)
    with pytest.raises(C.CudaError, match="cuIpcOpenMemHandle failed: CUDA_ERROR_INVALID_VALUE") as info:
        D._Driver().open(0, HANDLE)
    assert info.value.name == "CUDA_ERROR_INVALID_VALUE" and lib.depth == 0


def test_a_finalizer_run_while_a_context_is_made_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The garbage collector may run a finalizer (an _OwnBuffer's cuMemFree, a mapping's close)
    in the thread that is inside ``_context``, holding its lock: that finalizer's own ``_context``
    call must not wait for the lock its thread holds."""
    lib = _FakeLib()
    monkeypatch.setattr("ctypes.CDLL", lambda path: lib)
    drv = D._Driver()
    retain = lib.cuDevicePrimaryCtxRetain
    fired: list[bool] = []

    def retain_with_gc(ctx: Any, dev: Any) -> int:
        if not fired:
            fired.append(True)
            drv.free(1, 0x5000)  # as a finalizer would, on another device
        return int(retain(ctx, dev))

    drv.fns["cuDevicePrimaryCtxRetain"] = retain_with_gc
    worker = threading.Thread(target=drv.alloc, args=(0, 256), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "deadlocked: the finalizer waited for its own thread's lock"
    assert "cuMemFree_v2" in lib.calls and "cuMemAlloc_v2" in lib.calls and lib.depth == 0
    assert set(drv._ctx) == {0, 1}


# --- the section 15 test vectors (docs/protocol/vectors/cuda_ipc/) --------------------------------


CUDA_VECTORS = Path(__file__).resolve().parents[3] / "docs" / "protocol" / "vectors" / CUDA_DIR


def test_the_cuda_vectors_are_committed_and_byte_identical(tmp_path: Path) -> None:
    assert {p.stem for p in CUDA_VECTORS.glob("*.bin")} == set(CUDA_CASES)
    generate(tmp_path)
    for name in CUDA_CASES:
        for ext in ("bin", "json"):
            assert (CUDA_VECTORS / f"{name}.{ext}").read_bytes() == (
                tmp_path / CUDA_DIR / f"{name}.{ext}"
            ).read_bytes()


@pytest.mark.parametrize("vector", sorted(CUDA_CASES))
def test_a_cuda_vector_decodes_to_its_json(vector: str) -> None:
    doc = json.loads((CUDA_VECTORS / f"{vector}.json").read_text())
    area = (CUDA_VECTORS / f"{vector}.bin").read_bytes()
    assert decoded_json(doc["decode_as"], area) == doc["expect"]
    assert ("error" in doc["expect"]) == vector.startswith("error_")


def test_a_server_answers_the_cuda_error_vectors_and_goes_on(echo_server: Any, name: str) -> None:
    with ShmTransport().connect(name) as client:
        for vector in sorted(v for v in CUDA_CASES if v.startswith("error_")):
            expect = json.loads((CUDA_VECTORS / f"{vector}.json").read_text())["expect"]
            ch = client._take(0)
            try:
                ch.wkey = None
                area = (CUDA_VECTORS / f"{vector}.bin").read_bytes()
                ch.req[: len(area)] = area
                with pytest.raises(InferenceError) as info:  # InvalidInput, TooLarge
                    client._exchange(
                        ch, expect["request_id"], "raw", time.monotonic_ns() + 10**10, retry=False
                    )
                assert info.value.code.name == expect["error"]
            finally:
                client._give(ch)
            _still_serves(client)


# --- the whole IPC path in one process, CPU tensors standing in for device memory -----------------


class _TorchHandler:
    device_tensors = True

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, request: InferenceRequest, respond: Any) -> None:
        from foundation_ml import InferenceResponse

        self.seen.append(request.inputs["x"])
        respond(InferenceResponse(request.id, "m", {"y": request.inputs["x"] * 2, "n": np.array([7])}))


def test_the_ipc_path_end_to_end_with_fakes(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = FakeDeviceMemory().install(monkeypatch)
    handler = _TorchHandler()
    with ShmTransport().serve(name, handler, channels=2, cuda_ipc=False) as server:
        server._cuda.enabled = True
        server._ctl.u32[L.RegionField.FEATURES // 4] |= L.Feature.CUDA_IPC
        with ShmTransport().connect(name, channels=1) as client:
            x = torch.arange(6.0).reshape(2, 3)
            outputs = []
            for i in range(3):
                xi = x + i
                out = client.infer(InferenceRequest("m", {"x": xi})).outputs
                assert handler.seen[-1].data_ptr() == xi.data_ptr()  # the client memory itself, no copy
                torch.testing.assert_close(out["y"], xi * 2)
                assert isinstance(out["n"], torch.Tensor) and out["n"].tolist() == [7]
                outputs.append(out["y"])
            # the outputs are a copy in the channel's own buffer (one, reused: the client opens it
            # once), never the handler's tensor, whose allocation may hold other memory
            buf = server._cuda._buffers[0, 0]
            assert {memory.tensors.get(h) is None for h in memory.buffers} == {True}
            assert all(o.data_ptr() == buf.ptr for o in outputs)  # views: valid until the next call
            torch.testing.assert_close(outputs[0], (x + 2) * 2)
            assert handler.seen[-1].data_ptr() != buf.ptr
            assert fake_gpu.opened.count(buf.handle) == 1
            assert server._cuda.clients() == {(os.getpid(), start_time(os.getpid())): 3}  # 3 inputs
        deadline = time.monotonic() + 10
        while server._cuda.clients() and time.monotonic() < deadline:
            time.sleep(0.01)  # the loop sees the channel freed, then forgets the client's handles
        assert server._cuda.clients() == {} and not server._cuda._buffers


# --- the audit's findings, without a GPU (each failed on the code before) -------------------------


class _Handler:
    """Answers ``y = f(x)``; ``device_tensors`` as the runtime declares it."""

    device_tensors = True

    def __init__(self, f: Callable[[Any], Any], sleep: float = 0.0) -> None:
        self.f, self.sleep = f, sleep

    def __call__(self, request: InferenceRequest, respond: Any) -> None:
        from foundation_ml import InferenceResponse

        time.sleep(self.sleep)
        respond(InferenceResponse(request.id, "m", {"y": self.f(request.inputs["x"])}))


@contextlib.contextmanager
def _fake_ipc_server(name: str, handler: Any, **options: Any) -> Iterator[Any]:
    options.setdefault("channels", 2)
    with ShmTransport().serve(name, handler, cuda_ipc=False, **options) as server:
        server._cuda.enabled = True
        server._ctl.u32[L.RegionField.FEATURES // 4] |= L.Feature.CUDA_IPC
        yield server


def test_an_answer_that_cannot_be_sent_synchronises_before_its_error(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 2 holds for error answers: an output that cannot cross (complex64) failed the answer
    before the server's synchronise, so the client could free inputs the server still read."""
    FakeDeviceMemory().install(monkeypatch)
    synced: list[tuple[str, set[int]]] = []
    monkeypatch.setattr(  # the server's synchronise (the client's stays the fake's no-op)
        _cuda_server,
        "_synchronize",
        lambda devices: synced.append((threading.current_thread().name, set(devices))),
    )
    with _fake_ipc_server(name, _Handler(lambda x: x.to(torch.complex64))) as server:
        with ShmTransport().connect(name, channels=1) as client:
            with pytest.raises(InferenceError, match="complex64"):
                client.infer(InferenceRequest("m", {"x": torch.ones(2, 3)}))
    mine = threading.current_thread().name
    assert [d for who, d in synced if who != mine] == [{0}], synced  # the server's, before its answer
    assert server is not None


def test_a_timed_out_call_keeps_its_input_copies_until_the_channel_is_used_again(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 1: the server may still read a contiguous copy of a strided input after the client
    gave up waiting; it was freed at once (the server then wrote into reused memory)."""
    FakeDeviceMemory().install(monkeypatch)
    x = torch.arange(12.0).reshape(3, 4).t()  # not contiguous: the client sends a copy
    with _fake_ipc_server(name, _Handler(lambda x: x * 2, sleep=0.5)):
        with ShmTransport().connect(name, channels=1) as client:
            with pytest.raises(DeadlineExceeded):
                client.infer(InferenceRequest("m", {"x": x}), timeout=0.05)
            (ch,) = client._all
            assert ch.cuda_keep is not None and len(ch.cuda_keep) == 1
            torch.testing.assert_close(ch.cuda_keep[0], x)  # the copy the server reads
            deadline = time.monotonic() + 10
            while not ch.idle() and time.monotonic() < deadline:
                time.sleep(0.01)
            out = client.infer(InferenceRequest("m", {"x": x}), timeout=5).outputs["y"]
            torch.testing.assert_close(out, x * 2)
            assert ch.cuda_keep is None


class _Held:
    """Stands in for ``_DeviceView``: the tensor made from it keeps it, and so its mapping, alive
    (torch's ``__cuda_array_interface__`` tensors hold their object as this numpy one does)."""

    def __init__(self, t: Any, mapping: Any) -> None:
        self.mapping = mapping
        self.__array_interface__ = t.numpy().__array_interface__


class _LongKernels:
    """A device-tensor handler whose model queues kernels that read its input (``x * 2``), lets go
    of the input tensor, then runs on until ``go`` (a long model); ``events`` records, in order,
    the server's device synchronisations (``_synchronize``, patched), what the test adds (a
    close), and its return."""

    device_tensors = True

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        self.started, self.go, self.returned = threading.Event(), threading.Event(), threading.Event()
        # the server's synchronise (a client's stays the fake's no-op)
        monkeypatch.setattr(
            _cuda_server, "_synchronize", lambda devices: self.events.append(f"sync {sorted(devices)}")
        )

    def __call__(self, request: InferenceRequest, respond: Any) -> None:
        from foundation_ml import InferenceResponse

        y = request.inputs["x"] * 2  # on a GPU: kernels queued that read the client's memory
        request.inputs.clear()  # the handler holds no tensor of the input now; its kernels may
        self.started.set()
        self.go.wait(30)  # ... still run (a long model)
        respond(InferenceResponse(request.id, "m", {"y": y}))
        self.events.append("returned")
        self.returned.set()


def test_a_call_outliving_stop_keeps_its_cuda_inputs_open_until_answered_and_synchronised(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler still running when stop() gave up waiting for the serving loop (2 s) lost its
    inputs' mappings from the cache at stop, and its answer, dropped (the server stopped), never
    synchronised the request's devices: the input's handle was closed as soon as the handler let
    go of its tensor, while on a GPU the kernels it queued could still read it. The mapping now
    stays until the call answers, and its device is synchronised before the close."""
    memory = FakeDeviceMemory().install(monkeypatch)
    # the server's input tensors hold their mapping, as tensor_on's real ones do
    monkeypatch.setattr(
        _cuda_server,
        "tensor_on",
        lambda mapping, ref: torch.from_numpy(np.asarray(_Held(memory.tensors[ref.handle], mapping))),
    )
    handler = _LongKernels(monkeypatch)
    events, started, go, returned = handler.events, handler.started, handler.go, handler.returned

    x = torch.arange(6.0)
    got: list[BaseException] = []
    with _fake_ipc_server(name, handler) as server:
        with ShmTransport().connect(name, channels=1) as client:

            def call() -> None:
                try:
                    client.infer(InferenceRequest("m", {"x": x}), timeout=30)
                except InferenceError as exc:
                    got.append(exc)

            caller = threading.Thread(target=call)
            caller.start()
            assert started.wait(10)
            (handle,) = [h for h in fake_gpu.opened if h in memory.tensors]
            fake_gpu.on_close = lambda h: events.append("close") if h == handle else None
            server.stop(drain_timeout=0)  # the loop is in the handler: stop gives up on it
            caller.join(10)
            assert got and isinstance(got[0], ServerUnavailable), got
            gc.collect()
            assert handle not in fake_gpu.closed_handles()  # the handler's kernels may still read it
            ours = (f"fdn-{name}-", f"fdn-{name}.")  # its objects, data segments and lock file
            assert not [n for n in os.listdir("/dev/shm") if f"{n}.".removeprefix("sem.").startswith(ours)]
            go.set()
            assert returned.wait(10)
            server._loop_thread.join(10)
    gc.collect()
    assert handle in fake_gpu.closed_handles()
    assert events == ["sync [0]", "close", "returned"], events  # at its answer (dropped), synchronised
    fake_gpu.on_close = None


_CUDA_VICTIM = """
import sys, time
from foundation_ml import DataType
from foundation_shm import ShmTransport
from foundation_shm._cuda_desc import CudaIpcRef, write_mixed_request
c = ShmTransport().connect(sys.argv[1], channels=1)
ch = c._take(0)
ch.wkey = None
x = CudaIpcRef("x", DataType.FP32, (6,), 0, bytes.fromhex(sys.argv[2]), 0, 24)
write_mixed_request(ch.req, tensors=[x], request_id=5, model="m")
print("sending", flush=True)
c._exchange(ch, 5, "m", time.monotonic_ns() + 10**11, retry=False)  # killed in it
"""


def _killed_in_a_cuda_call(name: str, server: Any, reached: Callable[[], bool]) -> None:
    """A client process sends a request whose input ``x`` is the CUDA IPC handle ``HANDLE`` and is
    killed (kill -9) once the handler has it (``reached``); returns when the heartbeat has
    reclaimed its channel."""
    victim = subprocess.Popen(
        [sys.executable, "-c", _CUDA_VICTIM, name, HANDLE.hex()], stdout=subprocess.PIPE, text=True
    )
    try:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "sending"
        assert reached(), "the victim's request did not reach the handler"
    finally:
        victim.kill()
        victim.wait()
        victim.stdout.close()  # type: ignore[union-attr]
    assert until(lambda: server._reclaimed["dead_client"] == 1), "the dead client's channel was not reclaimed"


def test_a_reclaim_keeps_a_running_call_s_cuda_inputs_open_until_answered_and_synchronised(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client killed (kill -9) while its CUDA request was with the handler: the heartbeat's
    reclaim dropped the request's mappings, and its answer, dropped (the lease changed), never
    synchronised: the input's handle closed as soon as the handler let go of its tensor, while
    on a GPU the kernels it queued could still read it. The mapping now stays until the call
    answers, and its device is synchronised before the close."""
    dead = torch.arange(6.0)  # the dead client's allocation, as the server maps it
    monkeypatch.setattr(
        _cuda_server, "tensor_on", lambda mapping, ref: torch.from_numpy(np.asarray(_Held(dead, mapping)))
    )
    handler = _LongKernels(monkeypatch)
    events, started, go, returned = handler.events, handler.started, handler.go, handler.returned

    with _fake_ipc_server(name, handler, channels=1, heartbeat_ms=20) as server:
        fake_gpu.on_close = lambda h: events.append("close") if h == HANDLE else None
        try:
            _killed_in_a_cuda_call(name, server, lambda: started.wait(30))
            assert server._cuda.clients() == {}  # the dead client's mappings left the cache ...
            assert HANDLE not in fake_gpu.closed_handles() and events == []  # ... but not this one
            go.set()
            assert returned.wait(10)
        finally:
            go.set()
            fake_gpu.on_close = None
    assert HANDLE in fake_gpu.closed_handles()
    assert events == ["sync [0]", "close", "returned"], events  # at its answer (dropped), synchronised


def test_a_reclaimed_channel_serving_a_new_client_keeps_each_call_s_cuda_inputs_apart(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead client's channel, reclaimed with its CUDA request still with the handler, claimed
    again by a new client whose CUDA request is also with the handler when the old one answers:
    the old answer (dropped) synchronises and lets go of the old request's mappings only; the new
    request keeps its own, and its answer is right."""
    memory = FakeDeviceMemory().install(monkeypatch)
    dead = torch.arange(6.0)  # the dead client's allocation, as the server maps it

    def tensor_on(mapping: Any, ref: CudaIpcRef) -> Any:
        if ref.handle in memory.buffers:  # the server's own output buffer
            return memory.tensor_on(mapping, ref)
        t = dead if ref.handle == HANDLE else memory.tensors[ref.handle]
        return torch.from_numpy(np.asarray(_Held(t, mapping)))

    monkeypatch.setattr(_cuda_server, "tensor_on", tensor_on)
    events: list[str] = []

    def sync(devices: set[int]) -> None:  # the server's (a client's stays the fake's no-op)
        events.append(f"sync {sorted(devices)}")

    monkeypatch.setattr(_cuda_server, "_synchronize", sync)
    calls: list[tuple[threading.Event, threading.Event, threading.Event]] = []

    class Handler:
        """Each call computes in a thread of its own, lets go of its input and waits for the test."""

        device_tensors = True

        def __call__(self, request: InferenceRequest, respond: Any) -> None:
            from foundation_ml import InferenceResponse

            k = len(calls)
            started, go, returned = gates = threading.Event(), threading.Event(), threading.Event()
            calls.append(gates)

            def run() -> None:
                y = request.inputs["x"] * 2
                request.inputs.clear()
                started.set()
                go.wait(30)
                respond(InferenceResponse(request.id, "m", {"y": y}))
                events.append(f"returned {k}")
                returned.set()

            threading.Thread(target=run, daemon=True).start()

    x = torch.arange(6.0) + 10
    got: list[Any] = []
    with _fake_ipc_server(name, Handler(), channels=1, heartbeat_ms=20) as server:
        labels = {HANDLE: "old"}
        fake_gpu.on_close = lambda h: events.append(f"close {labels.get(h, h.hex()[:8])}")
        try:
            _killed_in_a_cuda_call(name, server, lambda: until(lambda: bool(calls)) and calls[0][0].wait(30))
            assert HANDLE not in fake_gpu.closed_handles()
            with ShmTransport().connect(name, channels=1) as client:  # the server's one channel

                def call() -> None:
                    out = client.infer(InferenceRequest("m", {"x": x}), timeout=30).outputs["y"]
                    got.append(out.clone())

                caller = threading.Thread(target=call)
                caller.start()
                assert until(lambda: len(calls) == 2) and calls[1][0].wait(30)
                (new,) = memory.tensors  # the new client's input went by handle
                labels[new] = "new"
                assert fake_gpu.opened == [HANDLE, new]
                calls[0][1].set()  # the old call answers, late: dropped
                assert calls[0][2].wait(10)
                assert HANDLE in fake_gpu.closed_handles() and new not in fake_gpu.closed_handles()
                assert events == ["sync [0]", "close old", "returned 0"], events
                calls[1][1].set()
                assert calls[1][2].wait(10)
                caller.join(30)
                assert len(got) == 1, "the new client's call did not return"
                torch.testing.assert_close(got[0], x * 2)
                assert new not in fake_gpu.closed_handles()  # cached for its client, till it goes
                assert events[3:] == ["sync [0]", "returned 1"], events
        finally:
            for _, go, _ in calls:
                go.set()
            fake_gpu.on_close = None


@pytest.mark.parametrize("when", ["after_open", "before_open"])
def test_a_reclaim_while_a_cuda_request_is_being_dispatched_keeps_its_inputs_till_its_answer(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The heartbeat reclaimed a killed client's channel while the serving loop was dispatching
    its CUDA request (its handles being opened, the handler not yet called): the answer carried
    the new lease, found the channel's owner gone and was dropped as stale, so what the reclaim
    kept for the request (reclaimed after the open) stayed kept till the process exited, never
    synchronised; reclaimed before the open, the mappings opened stayed marked in use and were
    closed at the next look of the loop, unsynchronised. Either way the answer now synchronises
    the request's device, then closes its input's handle, and nothing stays kept."""
    dead = torch.arange(6.0)
    monkeypatch.setattr(
        _cuda_server, "tensor_on", lambda mapping, ref: torch.from_numpy(np.asarray(_Held(dead, mapping)))
    )
    events: list[str] = []
    sync = lambda devices: events.append(f"sync {sorted(devices)}")  # noqa: E731
    monkeypatch.setattr(_cuda_server, "_synchronize", sync)
    in_dispatch, reclaimed, answered = threading.Event(), threading.Event(), threading.Event()

    class Handler:
        device_tensors = True

        def __call__(self, request: InferenceRequest, respond: Any) -> None:
            from foundation_ml import InferenceResponse

            y = request.inputs["x"] * 2
            request.inputs.clear()
            respond(InferenceResponse(request.id, "m", {"y": y}))
            events.append("returned")
            answered.set()

    with _fake_ipc_server(name, Handler(), channels=1, heartbeat_ms=20) as server:
        on_request = server._cuda.on_request

        def held_on_request(channel: int, client: Any, dec: Any) -> Any:
            if when == "before_open":
                in_dispatch.set()
                reclaimed.wait(30)
            try:
                return on_request(channel, client, dec)
            finally:
                if when == "after_open":
                    in_dispatch.set()
                    reclaimed.wait(30)

        monkeypatch.setattr(server._cuda, "on_request", held_on_request)
        fake_gpu.on_close = lambda h: events.append("close") if h == HANDLE else None
        try:
            _killed_in_a_cuda_call(name, server, lambda: in_dispatch.wait(30))
            reclaimed.set()
            assert answered.wait(10)
            assert server._cuda._kept == {}
        finally:
            reclaimed.set()
            fake_gpu.on_close = None
    assert HANDLE in fake_gpu.closed_handles()
    assert events == ["sync [0]", "close", "returned"], events


def test_a_dropped_answer_s_synchronise_holds_up_no_request_of_its_channel_s_new_client(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead client's CUDA request answered late (dropped) synchronised its devices holding its
    channel's lock: the channel's new client's host request, answered by the serving loop, waited
    on that lock for the whole synchronise (on a GPU, the dead client's model's queued kernels),
    and with it the loop, every client's requests. The synchronise now runs outside the lock."""
    dead = torch.arange(6.0)
    monkeypatch.setattr(
        _cuda_server, "tensor_on", lambda mapping, ref: torch.from_numpy(np.asarray(_Held(dead, mapping)))
    )
    syncing, synced = threading.Event(), threading.Event()

    def sync(devices: set[int]) -> None:  # the dropped answer's synchronise: held by the test
        if devices:
            syncing.set()
            synced.wait(30)

    monkeypatch.setattr(_cuda_server, "_synchronize", sync)
    started, go = threading.Event(), threading.Event()

    class Handler:
        device_tensors = True

        def __call__(self, request: InferenceRequest, respond: Any) -> None:
            from foundation_ml import InferenceResponse

            if "h" in request.inputs:  # the new client's host request: answered here, by the loop
                respond(InferenceResponse(request.id, "m", {"y": np.asarray(request.inputs["h"]) * 2}))
                return

            def run() -> None:  # the dead client's: late
                y = request.inputs["x"] * 2
                request.inputs.clear()
                started.set()
                go.wait(30)
                respond(InferenceResponse(request.id, "m", {"y": y}))

            threading.Thread(target=run, daemon=True).start()

    with _fake_ipc_server(name, Handler(), channels=1, heartbeat_ms=20) as server:
        try:
            _killed_in_a_cuda_call(name, server, lambda: started.wait(30))
            go.set()
            assert syncing.wait(10)  # the dead client's answer is synchronising now
            with ShmTransport().connect(name, channels=1) as client:  # the reclaimed channel
                h = np.arange(4, dtype=np.float32)
                out = client.infer(InferenceRequest("m", {"h": h}), timeout=10).outputs["y"]
                np.testing.assert_array_equal(out, h * 2)
            assert HANDLE not in fake_gpu.closed_handles()  # not before its synchronise returned
        finally:
            go.set()
            synced.set()
    assert HANDLE in fake_gpu.closed_handles()


def test_a_handler_changing_an_input_in_place_is_warned_about_once(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    FakeDeviceMemory().install(monkeypatch)
    x = torch.ones(2, 3)
    with _fake_ipc_server(name, _Handler(lambda t: t.mul_(3))):
        with ShmTransport().connect(name, channels=1) as client, caplog.at_level("WARNING", "foundation_shm"):
            for _ in range(2):
                client.infer(InferenceRequest("m", {"x": x}))
    assert x.tolist() == [[9.0] * 3] * 2  # the caller's own tensor: what the warning is about
    warned = [r.getMessage() for r in caplog.records if "in place" in r.getMessage()]
    assert len(warned) == 1 and "model 'm' changed a CUDA IPC input in place" in warned[0]


def test_outputs_go_to_a_buffer_of_the_channel_that_grows_and_is_freed_with_it(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = FakeDeviceMemory().install(monkeypatch)
    with _fake_ipc_server(name, _Handler(lambda x: torch.cat([x, x + 1]))) as server:
        with ShmTransport().connect(name, channels=1) as client:
            small = client.infer(InferenceRequest("m", {"x": torch.ones(4)})).outputs["y"]
            assert small.tolist() == [1.0] * 4 + [2.0] * 4
            first = server._cuda._buffers[0, 0]
            assert first.size == 2 << 20  # the least a buffer takes
            big = torch.ones(1 << 19)  # 2 MiB in, 4 MiB out: a bigger buffer
            out = client.infer(InferenceRequest("m", {"x": big})).outputs["y"]
            assert out.shape == (1 << 20,) and float(out[-1]) == 2.0
            grown = server._cuda._buffers[0, 0]
            assert grown.size >= 4 << 20 and server._cuda._outgrown[0] == [first]  # kept till it goes
            del small  # the last view of the first buffer: the client has it open no more
            gc.collect()
            assert (0, first.handle) not in fake_gpu.mapped and (0, grown.handle) in fake_gpu.mapped
            assert client._cuda.mappings() == {(0, 0): (grown.handle, 1 << 20)}  # the fake's size
        deadline = time.monotonic() + 10
        while server._cuda._buffers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server._cuda._buffers and not server._cuda._outgrown
    assert len(memory.buffers) == 2


def test_what_a_running_call_keeps_is_its_lease_s_when_its_channel_s_next_lease_ends_too(
    fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel reclaimed with a call running (lease 0), claimed by another client whose call is
    running when the server stops (lease 1): each late answer synchronises and lets go of its own
    call's mappings, never the other's (kept by channel alone, the stop's would replace the
    reclaim's, closing the first call's input under its kernels, and the first answer would let
    go of the second call's)."""
    synced: list[set[int]] = []
    monkeypatch.setattr(_cuda_server, "_synchronize", lambda devices: synced.append(set(devices)))
    cuda = _enabled()
    a, b, h2 = (1, 100), (2, 200), bytes([9]) * 64
    cuda.on_request(0, a, _Dec({"x": _ref(handle=HANDLE, device=1)}))  # the handler lets go of it
    cuda.forget(0, 0)  # a died: reclaimed, its call still running
    cuda.on_request(0, b, _Dec({"x": _ref(handle=h2)}))
    cuda.stopping(0, 1)
    cuda.close()
    assert not fake_gpu.closed_handles()
    cuda.dropped(0, 0)  # a's call answers
    assert synced == [{1}] and fake_gpu.closed_handles() == [HANDLE]
    cuda.dropped(0, 0)  # (once)
    cuda.dropped(0, 1)  # b's
    assert synced == [{1}, {0}] and fake_gpu.closed_handles() == [HANDLE, h2]


def test_stats_count_what_a_running_call_keeps_past_its_lease_outside_the_cache(
    fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead client's call still running when its channel was reclaimed keeps its input's
    allocation open (till its answer), but the reclaim took it out of the cache: stats said
    nothing was mapped (mapped_bytes 0) while it stayed open, outside cuda_cache_bytes. They say
    how many calls keep mappings so, and the bytes open for them alone."""
    monkeypatch.setattr(_cuda_server, "_synchronize", lambda devices: None)
    cuda = _enabled()
    a, b = (1, 100), (2, 200)
    cuda.on_request(0, a, _Dec({"x": _ref(handle=HANDLE)}))
    cuda.on_request(1, b, _Dec({"x": _ref(handle=bytes([9]) * 64)}))
    bound = cuda.stats()["cache_bytes"]
    assert cuda.stats() == {
        "mappings": 2,
        "mapped_bytes": 2 * MiB,
        "cache_bytes": bound,
        "kept": 0,
        "kept_bytes": 0,
    }
    cuda.forget(0, 0)  # a died, its call still running
    cuda.stopping(1, 0)  # the server stops with b's call running: b's stays cached till close
    assert cuda.stats() == {
        "mappings": 1,
        "mapped_bytes": MiB,
        "cache_bytes": bound,
        "kept": 2,
        "kept_bytes": MiB,
    }
    cuda.close()
    assert cuda.stats()["kept_bytes"] == 2 * MiB and not fake_gpu.closed_handles()
    cuda.dropped(0, 0)
    cuda.dropped(1, 0)
    assert cuda.stats() == {
        "mappings": 0,
        "mapped_bytes": 0,
        "cache_bytes": bound,
        "kept": 0,
        "kept_bytes": 0,
    }
    assert len(fake_gpu.closed_handles()) == 2


def test_a_call_whose_inputs_failed_to_open_keeps_none_of_them_past_a_reclaim(fake_gpu: _FakeDriver) -> None:
    """A request whose second input does not open never reaches the handler: the mapping of its
    first is no running call's, and a reclaim (or stop) before its error answer keeps nothing for
    it (on a channel parked with it, no segment to answer in, that answer never comes: kept, the
    mapping would stay open till the process exits)."""
    cuda = _enabled()
    inputs = {"x": _ref(handle=HANDLE), "y": _ref(name="y", device=5)}
    with pytest.raises(InvalidInput, match="CUDA device 5"):
        cuda.on_request(0, (1, 100), _Dec(inputs))
    assert fake_gpu.opened == [HANDLE]
    cuda.forget(0, 0)
    assert fake_gpu.closed_handles() == [HANDLE] and not cuda._kept


def test_a_channel_that_changed_hands_drops_the_former_client_s_state(fake_gpu: _FakeDriver) -> None:
    """Freed and claimed again between two looks of the loop: the former client's mappings stayed
    open until the server stopped, and it could have read the new client's outputs."""
    cuda = _enabled()
    a, b = (1, 100), (2, 200)
    cuda.on_request(0, a, _Dec({"x": _ref(handle=HANDLE)}))
    cuda._buffers[0, 0] = object()  # type: ignore[assignment]  # an output buffer a had opened
    cuda.on_request(0, b, _Dec({"x": _ref(handle=bytes([9]) * 64)}))
    gc.collect()
    assert cuda.clients() == {b: 1} and len(fake_gpu.closed) == 1
    assert (0, 0) not in cuda._buffers


def test_a_view_output_passed_back_as_an_input_is_seen_as_mapped_memory(fake_gpu: _FakeDriver) -> None:
    """``y = f(x); z = f(y)`` with views: y lies in a mapping of the server's memory, which has no
    handle of ours (cuIpcGetMemHandle failed with a misleading error); the client copies it."""
    from foundation_shm._cuda_memory import inside_mapping, open_mapping

    mapping = open_mapping(0, HANDLE)  # opened through the fake driver: [ptr, ptr + 1 MiB)

    class _At:
        def __init__(self, ptr: int) -> None:
            self.ptr = ptr

        def data_ptr(self) -> int:
            return self.ptr

    assert inside_mapping(_At(mapping.ptr + 100))  # type: ignore[arg-type]
    assert not inside_mapping(_At(mapping.ptr + (1 << 20)))  # type: ignore[arg-type]
    assert not inside_mapping(torch.ones(2))


def test_ainfer_takes_device_outputs_as_views_and_returns_clones(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ShmClient.ainfer called numpy's .copy() on torch tensors: AttributeError."""
    FakeDeviceMemory().install(monkeypatch)
    with _fake_ipc_server(name, _Handler(lambda x: x + 1)) as server:
        with ShmTransport().connect(name, channels=1, copy_outputs=False) as client:
            y, kept = asyncio.run(_ainfer_and_kept(client, InferenceRequest("m", {"x": torch.ones(3)})))
            out = y.outputs["y"]
            assert out.tolist() == [2.0] * 3
            assert out.data_ptr() != server._cuda._buffers[0, 0].ptr  # its own, not the channel's
            assert kept == 0  # copies: the executor's thread keeps no channel (it kept one)


def test_a_host_request_answered_with_cuda_outputs_is_an_error(echo_server: Any, name: str) -> None:
    """A request without FDN_FLAG_CUDA_IPC got CudaIpcRef objects back as its outputs (spec 15.2)."""
    with ShmTransport().connect(name, channels=1) as client:
        client.infer(InferenceRequest("echo", {"x": np.ones(2, np.float32)}))
        ch = client._take(time.monotonic_ns() + 10**9)
        try:
            area = ch.data.buf[ch.req_cap :]  # the response area, writable here to play a bad server
            write_mixed_response(area, tensors=[_ref(name="y")], request_id=77, model="echo", version="")
            did_not_ask = "output 'y' came as a CUDA_IPC descriptor, which this client did not ask for"
            with pytest.raises(InternalError, match=did_not_ask):
                client._response(ch, 77, "echo", 0, False)
            ch.cuda_ok = True  # as in a CUDA IPC call: then they are what was asked for
            assert type(client._response(ch, 77, "echo", 0, False).outputs["y"]) is CudaIpcRef
        finally:
            ch.cuda_ok = False
            del area
            client._give(ch)


@pytest.mark.parametrize("bad", [-1, 2**64, True, 2.5, "7"])
def test_a_bad_request_id_on_the_ipc_path_is_invalid_input_before_anything_is_sent(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch, bad: Any
) -> None:
    """The host path refuses a request id out of 1..2**64-1 (d610dfa); the IPC path wrote it as it
    was: -1 and 2**64 a bare struct.error, True as id 1, and 2.5 / '7' failed the packing."""
    FakeDeviceMemory().install(monkeypatch)
    handler = _Handler(lambda x: x * 2)
    seen: list[Any] = []
    handler.f = lambda x: seen.append(x) or x * 2
    with _fake_ipc_server(name, handler):
        with ShmTransport().connect(name, channels=1) as client:
            with pytest.raises(InvalidInput, match=r"request id must be an integer 1\.\.2\*\*64-1"):
                client.infer(InferenceRequest("m", {"x": torch.ones(2)}, id=bad))
            assert seen == []  # nothing reached the server
            out = client.infer(InferenceRequest("m", {"x": torch.ones(2)}, id=2**64 - 1)).outputs["y"]
            assert out.tolist() == [2.0, 2.0]


def test_a_call_answered_with_an_error_keeps_no_input_copies(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 1 keeps a call's inputs only while the server may still read them: a call the server
    answered with an error (the model raised) kept them, the caller's own tensor or its
    contiguous copy, until the channel's next CUDA call, also one left by an earlier timeout."""
    FakeDeviceMemory().install(monkeypatch)
    x = torch.arange(12.0).reshape(3, 4).t()  # not contiguous: the client sends a copy

    def fail(t: Any) -> Any:
        raise ValueError("the model failed")

    handler = _Handler(lambda t: t * 2, sleep=0.5)
    with _fake_ipc_server(name, handler):
        with ShmTransport().connect(name, channels=1) as client:
            (ch,) = client._all
            with pytest.raises(DeadlineExceeded):
                client.infer(InferenceRequest("m", {"x": x}), timeout=0.05)
            assert ch.cuda_keep is not None  # no answer yet: the server may still read them
            handler.f, handler.sleep = fail, 0.0
            for _ in range(3):
                with pytest.raises(InferenceError, match="the model failed"):
                    client.infer(InferenceRequest("m", {"x": x}), timeout=5)
                assert ch.cuda_keep is None  # answered: the server is done with them


def test_the_server_keeps_at_most_its_cache_of_a_client_s_handles_and_closes_none_in_use(
    fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending a new allocation every call (600 of them), inputs that fail (a device the
    server lacks, a handle that does not open: 1000 each): the server keeps 256 mappings of it,
    the least recently used closed first, except one a handler still holds (closed once it lets
    go), and closes every one when the client goes. Measured clean; this guards it."""
    cap = _cuda_server._SERVER_CACHE
    cuda = _enabled()
    client = (1, 100)

    def handle(i: int) -> bytes:
        return b"A" + i.to_bytes(8, "little") + bytes(55)

    def still_open() -> int:
        gc.collect()
        return len(fake_gpu.opened) - len(fake_gpu.closed)

    held = cuda.on_request(0, client, _Dec({"x": _ref(handle=handle(0))})).inputs["x"]  # the handler's
    for i in range(1, 600):
        cuda.on_request(i % 2, client, _Dec({"x": _ref(handle=handle(i))}))
    assert cuda.clients() == {client: cap} and still_open() == cap + 1  # + the one still held
    assert held.ptr not in fake_gpu.closed
    again = cuda.on_request(0, client, _Dec({"x": _ref(handle=handle(0))})).inputs["x"]
    assert again is held and len(fake_gpu.opened) == 600  # shared, not opened twice
    del again
    for i in range(600, 600 + cap):  # evicted again, still held
        cuda.on_request(i % 2, client, _Dec({"x": _ref(handle=handle(i))}))
    assert cuda.clients() == {client: cap} and still_open() == cap + 1

    def refuse(device: int, h: bytes) -> tuple[int, int]:
        raise C.CudaError("cuIpcOpenMemHandle", 1, "CUDA_ERROR_INVALID_VALUE", "invalid argument")

    monkeypatch.setattr(fake_gpu, "open", refuse)
    for i in range(1000):
        with pytest.raises(InvalidInput, match="CUDA device 5"):
            cuda.on_request(0, client, _Dec({"x": _ref(handle=handle(i), device=5)}))
        with pytest.raises(InvalidInput, match="cannot open its CUDA IPC handle"):
            cuda.on_request(1, client, _Dec({"x": _ref(handle=handle(2000 + i))}))
    assert cuda.clients() == {client: cap} and still_open() == cap + 1
    ptr = held.ptr
    del held
    assert still_open() == cap and ptr in fake_gpu.closed  # closed once the handler let go
    cuda.forget(0)
    cuda.forget(1)  # the client's last channel
    assert cuda.clients() == {} and still_open() == 0
    assert not (cuda._opened or cuda._devices or cuda._client_of or len(cuda._mappings) or cuda.channels)
    assert cuda._mappings.bytes == 0


# --- the cache's byte bound (cuda_cache_bytes) --------------------------------------------------

MiB = 1 << 20


class _Answering:
    """What ``ServerCuda.write`` reads of the answers, the channel and the responder to answer a
    request with an error: the end of a request, as the serving loop's answer path reaches it."""

    def __init__(self, index: int) -> None:
        self.index, self.wkey = index, None

    def write_error(self, ch: Any, r: Any, exc: InferenceError) -> None:
        pass


def _answer(cuda: C.ServerCuda, channel: int) -> None:
    stub = _Answering(channel)
    cuda.write(stub, stub, stub, InvalidInput("answered"))  # type: ignore[arg-type]


def _big(i: int) -> bytes:
    return b"G" + i.to_bytes(8, "little") + bytes(55)


@pytest.fixture
def capped(fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], C.ServerCuda]:
    monkeypatch.setattr(_cuda_server, "_synchronize", lambda devices: None)

    def make(cache_bytes: int) -> C.ServerCuda:
        cuda = C.ServerCuda(False, cache_bytes=cache_bytes)
        cuda.enabled = True
        return cuda

    return make


def test_the_server_keeps_at_most_cuda_cache_bytes_of_mappings_the_least_recently_used_closed_first(
    fake_gpu: _FakeDriver, capped: Callable[[int], C.ServerCuda]
) -> None:
    """A client sending a new 1 MiB allocation every call: the server kept every one open (up to
    256 per client, whatever their size), holding allocations the client had freed."""
    cuda = capped(4 * MiB)
    a, b = (1, 100), (2, 200)
    for i in range(40):
        cuda.on_request(i % 2, a, _Dec({"x": _ref(handle=_big(i))}))
        if i % 2:  # keeps being used: never the least recently used
            cuda.on_request(i % 2, a, _Dec({"x": _ref(handle=_big(0))}))
        _answer(cuda, i % 2)
        assert fake_gpu.open_bytes() <= 4 * MiB and cuda._mappings.bytes <= 4 * MiB
    assert fake_gpu.opened.count(_big(0)) == 1  # never dropped: the least recently used go first
    closed = fake_gpu.closed_handles()
    assert len(closed) == 40 - 4 and _big(0) not in closed  # every other one closed, in order
    assert closed == [h for h in map(_big, range(1, 40)) if h in closed]
    assert cuda.stats() == {
        "mappings": 4,
        "mapped_bytes": 4 * MiB,
        "cache_bytes": 4 * MiB,
        "kept": 0,
        "kept_bytes": 0,
    }
    # the bound is the server's, all clients together: b's mappings push out a's
    for i in range(100, 103):
        cuda.on_request(2, b, _Dec({"x": _ref(handle=_big(i))}))
        _answer(cuda, 2)
    assert cuda.clients() == {a: 1, b: 3} and cuda._mappings.bytes == 4 * MiB
    cuda.forget(2)  # b's last channel
    assert cuda.clients() == {a: 1} and cuda.stats()["mapped_bytes"] == MiB
    cuda.forget(0)
    cuda.forget(1)
    assert cuda.clients() == {} and cuda.stats()["mapped_bytes"] == 0
    assert len(fake_gpu.closed_handles()) == len(fake_gpu.opened)


def test_a_mapping_a_request_in_flight_uses_is_never_dropped_and_a_resent_one_reopens(
    fake_gpu: _FakeDriver, capped: Callable[[int], C.ServerCuda]
) -> None:
    cuda = capped(2 * MiB)
    client = (1, 100)
    slow = _big(0)  # the input of a request a handler is still running on channel 0
    cuda.on_request(0, client, _Dec({"x": _ref(handle=slow)}))
    for i in range(1, 20):  # channel 1: answered calls, each with a new allocation
        cuda.on_request(1, client, _Dec({"x": _ref(handle=_big(i))}))
        _answer(cuda, 1)
        assert slow not in fake_gpu.closed_handles() and fake_gpu.open_bytes() == 2 * MiB
        assert cuda.clients() == {client: 2} and cuda._mappings.bytes == 2 * MiB
    # its handle sent again meanwhile is the same mapping, not opened twice
    cuda.on_request(1, client, _Dec({"x": _ref(handle=slow)}))
    _answer(cuda, 1)
    assert fake_gpu.opened.count(slow) == 1
    _answer(cuda, 0)  # the slow request is answered: now it may go like any other
    for i in range(20, 23):
        cuda.on_request(1, client, _Dec({"x": _ref(handle=_big(i))}))
        _answer(cuda, 1)
    assert slow in fake_gpu.closed_handles() and cuda._mappings.bytes == 2 * MiB
    mapping = cuda.on_request(1, client, _Dec({"x": _ref(handle=slow)})).inputs["x"]
    assert fake_gpu.opened.count(slow) == 2 and mapping.handle == slow  # reopened on demand


def test_a_mapping_larger_than_the_bound_is_served_and_dropped_after_its_request(
    fake_gpu: _FakeDriver, capped: Callable[[int], C.ServerCuda], caplog: Any
) -> None:
    """Refusing it would send the client to host memory for nothing: during its request the
    client holds that memory anyway (rule 1). Kept, it would hold the allocation after that."""
    cuda = capped(4 * MiB)
    client = (1, 100)
    huge = _big(99)
    fake_gpu.sizes[huge] = 16 * MiB
    cuda.on_request(0, client, _Dec({"x": _ref(handle=_big(1))}))
    _answer(cuda, 0)
    with caplog.at_level("WARNING", "foundation_shm"):
        for _ in range(2):
            mapping = cuda.on_request(0, client, _Dec({"x": _ref(handle=huge)})).inputs["x"]
            assert mapping.size == 16 * MiB and cuda._mappings.bytes == 16 * MiB  # served
            del mapping
            _answer(cuda, 0)
            assert huge in fake_gpu.closed_handles() and _big(1) in fake_gpu.closed_handles()
            assert cuda._mappings.bytes == 0 and cuda.clients() == {}
    assert fake_gpu.opened.count(huge) == 2  # opened for each request that sends it
    warned = [r.getMessage() for r in caplog.records if "cuda_cache_bytes" in r.getMessage()]
    assert len(warned) == 1 and "allocation of 16777216 bytes" in warned[0] and "(4194304)" in warned[0]


def test_a_resent_evicted_tensor_is_reopened_and_still_right_end_to_end(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a server and a client, with fake device memory: distinct inputs beyond the bound
    are closed as they go, the server's stats say what it holds, a dropped input sent again is
    opened again and read right."""
    memory = FakeDeviceMemory().install(monkeypatch)
    xs = [torch.full((4,), float(i)) for i in range(6)]  # six allocations, alive throughout
    with _fake_ipc_server(name, _Handler(lambda x: x * 2), cuda_cache_bytes=2 * MiB) as server:
        with ShmTransport().connect(name, channels=1) as client:
            for x in [*xs, xs[0]]:
                out = client.infer(InferenceRequest("m", {"x": x})).outputs["y"]
                torch.testing.assert_close(out, x * 2)
                assert server.stats()["cuda_ipc"]["mapped_bytes"] <= 2 * MiB
            inputs = [h for h in fake_gpu.opened if h in memory.tensors]  # not the client's opens
            first = xs[0].data_ptr().to_bytes(8, "little") * 8
            assert inputs.count(first) == 2 and len(inputs) == 7
            closed = [h for h in fake_gpu.closed_handles() if h in memory.tensors]
            assert len(closed) == 5 and first in closed  # the first opening of xs[0], then four
            assert server.stats()["cuda_ipc"] == {
                "mappings": 2,
                "mapped_bytes": 2 * MiB,
                "cache_bytes": 2 * MiB,
                "kept": 0,
                "kept_bytes": 0,
            }
        deadline = time.monotonic() + 10
        while server._cuda.clients() and time.monotonic() < deadline:
            time.sleep(0.01)  # the loop sees the channel freed, then forgets the client's handles
        assert server.stats()["cuda_ipc"]["mappings"] == 0
    assert len([h for h in fake_gpu.closed_handles() if h in memory.tensors]) == 7


def test_a_client_in_the_server_s_own_process_goes_through_host_memory(
    name: str, cpu_as_device: None, fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CUDA IPC handle does not open in the process that exported it (the driver answers
    CUDA_ERROR_INVALID_CONTEXT). A client in the server's own process (a script that serves and
    calls) failed every call with a device input INVALID_INPUT, even with cuda_fallback='host',
    and one with only empty device inputs got outputs by a handle it could not open (INTERNAL).
    The server now answers such a client's handles CUDA_UNAVAILABLE, which the fallback takes
    through host memory, and returns it no output by handle."""
    real = getattr(_cuda_server, "_exported_here", None)
    memory = FakeDeviceMemory().install(monkeypatch)
    if real is not None:
        monkeypatch.setattr(_cuda_server, "_exported_here", real)  # what this test is about
    fake_open = fake_gpu.open

    def open_(device: int, handle: bytes) -> tuple[int, int]:  # as a driver does
        if handle in memory.tensors or handle in memory.buffers:  # exported by this process
            raise D.CudaError(
                "cuIpcOpenMemHandle", 201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"
            )
        return fake_open(device, handle)

    monkeypatch.setattr(fake_gpu, "open", open_)
    handler = _Handler(lambda x: x * 2 if np.asarray(x).size else torch.ones(3))
    with _fake_ipc_server(name, handler):
        x = torch.arange(4.0)
        with ShmTransport().connect(name, channels=1, cuda_fallback="host") as client:
            for _ in range(2):
                torch.testing.assert_close(client.infer(InferenceRequest("m", {"x": x})).outputs["y"], x * 2)
            assert memory.exported == ["x"]  # refused once by handle, then by host on that connection
        with ShmTransport().connect(name, channels=1) as client:
            with pytest.raises(CudaUnavailable, match=r"this client is the shm server's own process \(pid"):
                client.infer(InferenceRequest("m", {"x": x}))
            y = client.infer(InferenceRequest("m", {"x": torch.ones(0)})).outputs["y"]  # the flag alone
            assert y.tolist() == [1.0] * 3 and not memory.buffers  # through host memory


# --- the client's mappings of the server's output buffers ---------------------------------------


class _Ch:
    """What ``ClientCuda._outputs`` reads of a channel."""

    def __init__(self, conn: object, index: int) -> None:
        self.conn, self.index = conn, index


def _out(handle: bytes, device: int = 0, name: str = "y") -> CudaIpcRef:
    return CudaIpcRef(name, DataType.FP32, (4,), device, handle, 0, 16)


def test_the_client_keeps_open_each_channel_s_current_output_buffer_per_device_and_nothing_else(
    fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers a channel's device outputs in one buffer of its own per device, replaced
    by one twice as large when they outgrow it (spec 15.4 rule 3). The client kept whatever it had
    opened in an LRU of 64 handles: a channel's outgrown buffers stayed open beside its current
    one (here 2 + 4 + ... + 64 MiB of the server's memory for each), and with more than 64 buffers
    in use (channels x devices) every call opened its buffer again (~0.1 s on a GPU). It keeps the
    one each channel's last answer named on each device: channels x devices, whatever the models,
    the outputs and their sizes, all memory the server holds for those channels anyway."""
    monkeypatch.setattr(_cuda_client, "tensor_on", lambda mapping, ref: mapping)
    cuda = C.ClientCuda()
    conn = object()
    channels, devices, generations = 40, 2, 6  # 80 buffers in use

    def buffer(channel: int, device: int, generation: int) -> bytes:
        return b"S" + bytes([channel, device, generation]) + bytes(60)

    for ch in range(channels):
        for d in range(devices):
            for g in range(generations):
                fake_gpu.sizes[buffer(ch, d, g)] = (2 << 20) << g
    for g in range(generations):
        for _ in range(2):
            for ch in range(channels):
                for model in range(3):  # other models, other outputs: the same buffers
                    outputs = {
                        f"y{model}_{d}": _out(buffer(ch, d, g), d, f"y{model}_{d}") for d in range(devices)
                    }
                    views = cuda._outputs(_Ch(conn, ch), outputs, "cpu", False)
    del views
    current = {(ch, d): buffer(ch, d, generations - 1) for ch in range(channels) for d in range(devices)}
    assert len(fake_gpu.opened) == channels * devices * generations  # each buffer opened once
    assert {(d, h) for (_, d), h in current.items()} == set(fake_gpu.mapped)  # the outgrown closed
    assert fake_gpu.open_bytes() == channels * devices * ((2 << 20) << (generations - 1))
    assert {key: h for key, (h, _) in cuda.mappings().items()} == current
    other = b"N" + bytes(63)  # a new server instance: its handles are new, the old ones go
    cuda._outputs(_Ch(object(), 0), {"y": _out(other)}, "cpu", False)
    gc.collect()
    assert set(fake_gpu.mapped) == {(0, other)}
    cuda.close()
    gc.collect()
    assert not fake_gpu.mapped


# --- opens and closes across threads (a handle is mapped once per process) ----------------------


def _in_function(thread: threading.Thread, function: Any) -> bool:
    """Whether ``thread`` is running (or blocked in a C call from) ``function``'s code right now."""
    frame = sys._current_frames().get(thread.ident or 0)
    return function is not None and frame is not None and frame.f_code is function.__code__


def test_a_handle_closing_in_a_handler_s_thread_is_opened_again_only_once_closed(
    fake_gpu: _FakeDriver, capped: Callable[[int], C.ServerCuda]
) -> None:
    """An asynchronous handler lets go of its input after its answer, in its own thread; the
    server's cache kept nothing (cuda_cache_bytes=0), so that closes the mapping, and the close
    released the GIL while the serving thread opened the same handle for the client's next request
    (the same tensor sent again). On a driver that maps a handle once per process that open failed
    (CUDA_ERROR_ALREADY_MAPPED: the request INVALID_INPUT); it now waits for the close."""
    from foundation_shm import _cuda_memory

    cuda = capped(0)
    client = (1, 100)
    held = [cuda.on_request(0, client, _Dec({"x": _ref()})).inputs["x"]]  # the handler's input
    _answer(cuda, 0)  # answered: the cache lets go of it, the handler still holds it
    assert fake_gpu.opened == [HANDLE] and not fake_gpu.closed
    closing, go = threading.Event(), threading.Event()

    def hold_the_close(handle: bytes) -> None:
        closing.set()
        go.wait(10)

    fake_gpu.on_close = hold_the_close
    handler = threading.Thread(target=held.clear)  # its last reference: the close runs there
    handler.start()
    assert closing.wait(10)
    got: list[Any] = []

    def next_request() -> None:
        try:
            got.append(cuda.on_request(0, client, _Dec({"x": _ref()})).inputs["x"])
        except InferenceError as exc:
            got.append(exc)

    serving = threading.Thread(target=next_request)
    serving.start()
    waiting = getattr(_cuda_memory, "_acquire", None)  # where the serving thread waits for the lock
    for _ in range(10_000):  # until it opened (during the close) or waits for the close to end
        if got or len(fake_gpu.tried) > 1 or _in_function(serving, waiting):
            break
        time.sleep(0.001)
    go.set()
    handler.join(10)
    serving.join(10)
    fake_gpu.on_close = None
    assert len(got) == 1 and not isinstance(got[0], InferenceError), got
    assert fake_gpu.opened == [HANDLE, HANDLE] and fake_gpu.closed_handles() == [HANDLE]
    assert got[0].handle == HANDLE and fake_gpu.mapped == {(0, HANDLE): got[0].ptr}


def test_a_mapping_let_go_while_another_thread_opens_is_closed_after_that_open_without_waiting(
    fake_gpu: _FakeDriver,
) -> None:
    """A close never runs during an open: a thread letting go of the last reference while another
    thread opens a handle does not wait for that open (it may be a handler's thread, or a
    collector's pass) and the close is done, once the open returned, by the opening thread."""
    from foundation_shm._cuda_memory import open_mapping

    other = bytes([7]) * 64
    first = open_mapping(0, HANDLE)
    ptr = first.ptr
    opening, go = threading.Event(), threading.Event()
    calls: list[str] = []

    def hold_the_open(handle: bytes) -> None:
        calls.append(f"open {handle == other}")
        opening.set()
        go.wait(10)

    fake_gpu.on_open = hold_the_open
    fake_gpu.on_close = lambda handle: calls.append(f"close {handle == HANDLE}")
    opened: list[Any] = []
    opener = threading.Thread(target=lambda: opened.append(open_mapping(0, other)))
    opener.start()
    assert opening.wait(10)
    del first  # the last reference, while the opener is inside the driver
    gc.collect()
    assert ptr not in fake_gpu.closed and calls == ["open True"]  # not during the open, not waited for
    go.set()
    opener.join(10)
    fake_gpu.on_open = fake_gpu.on_close = None
    assert calls == ["open True", "close True"] and ptr in fake_gpu.closed
    assert fake_gpu.mapped == {(0, other): opened[0].ptr}


def test_a_mapping_interrupted_once_its_finalizer_is_registered_is_let_go_once(
    fake_gpu: _FakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt (Ctrl-C) in ``_Mapping.__init__`` after its finalizer was registered let its
    user go twice: once at once, once when the half-made object was collected. A second mapping
    of a handle in use thus closed it under the first one's tensors."""
    import types
    import weakref

    from foundation_shm import _cuda_memory

    first = _cuda_memory._Mapping(0, HANDLE)

    def finalize_then_interrupt(obj: object, fn: Any, *args: Any) -> weakref.finalize[Any, Any]:
        weakref.finalize(obj, fn, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(_cuda_memory, "weakref", types.SimpleNamespace(finalize=finalize_then_interrupt))
    with pytest.raises(KeyboardInterrupt):
        _cuda_memory._Mapping(0, HANDLE)
    gc.collect()
    assert first.ptr not in fake_gpu.closed  # still in use by the first
    assert fake_gpu.opened == [HANDLE]
    ptr = first.ptr
    del first
    gc.collect()
    assert fake_gpu.closed == [ptr]
