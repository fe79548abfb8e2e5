"""CUDA IPC with a GPU: device tensors cross by handle between real processes and come back on the device."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport, _cuda_client
from foundation_shm import _cuda_ipc as C
from foundation_shm import _layout as L
from foundation_shm._client import ShmClient
from foundation_shm._cuda_desc import FLAG_CUDA_IPC, CudaIpcRef, write_mixed_request

from foundation_ml import DataType, InferenceRequest
from foundation_ml.errors import CudaUnavailable, InvalidInput

from .conftest import CudaServeProcess

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False): CUDA IPC maps device memory "
        "between processes",
    ),
]

DEV = "cuda:0"


@pytest.fixture
def gpu_server(name: str) -> Iterator[CudaServeProcess]:
    from foundation_shm._objects import remove_objects

    server = CudaServeProcess(name, "auto")  # the handler declares device_tensors: auto accepts CUDA IPC
    yield server
    server.stop()
    remove_objects(name)


@pytest.fixture
def client(gpu_server: CudaServeProcess, name: str) -> Iterator[ShmClient]:
    with ShmTransport().connect(name, cuda_ipc=True) as c:
        yield c


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the tensors this process built from a CUDA IPC handle (outputs by handle): the
    client's opens (the server is another process)."""
    names: list[str] = []
    real = _cuda_client.tensor_on

    def spy(mapping: Any, ref: CudaIpcRef) -> Any:
        names.append(ref.name)
        return real(mapping, ref)

    monkeypatch.setattr(_cuda_client, "tensor_on", spy)
    return names


def test_the_server_advertises_cuda_ipc(gpu_server: CudaServeProcess) -> None:
    assert gpu_server.feature == 2


def test_a_device_tensor_round_trips_by_handle(client: ShmClient, opened: list[str]) -> None:
    x = torch.randn(1000, 33, device=DEV)
    out: Any = client.infer(InferenceRequest("scale", {"x": x})).outputs["x"]
    assert out.is_cuda and out.device == x.device and out.dtype == x.dtype
    torch.testing.assert_close(out, x * 2)
    assert opened == ["x"]  # the output came back as a handle to the server's memory


@pytest.mark.parametrize(
    "dtype",
    ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"],
)
def test_every_dtype_crosses_by_handle(client: ShmClient, dtype: str) -> None:
    dt = getattr(torch, dtype)
    x = (torch.arange(257, device=DEV) % 7).to(dt)
    out: Any = client.infer(InferenceRequest("echo", {"x": x})).outputs["x"]
    assert out.dtype == dt and out.is_cuda
    assert torch.equal(out, x)


def test_a_tensor_inside_a_larger_allocation(client: ShmClient) -> None:
    big = torch.arange(100_000, dtype=torch.float32, device=DEV)
    x = big[12_345:23_456]  # ipc_offset is not 0
    torch.testing.assert_close(client.infer(InferenceRequest("scale", {"x": x})).outputs["x"], x * 2)


def test_a_non_contiguous_tensor(client: ShmClient) -> None:
    x = torch.randn(64, 32, device=DEV).t()
    torch.testing.assert_close(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)


def test_host_and_device_inputs_mix_and_all_outputs_land_on_the_device(client: ShmClient) -> None:
    x = torch.ones(10, device=DEV)
    out: Any = client.infer(InferenceRequest("scale", {"x": x, "n": np.arange(5, dtype=np.float32)})).outputs
    assert out["x"].is_cuda and out["n"].is_cuda
    assert out["n"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_copied_outputs_survive_the_next_call(gpu_server: CudaServeProcess, name: str) -> None:
    with ShmTransport().connect(name, cuda_ipc=True, copy_outputs=True, channels=1) as c:
        x1, x2 = torch.full((4096,), 1.0, device=DEV), torch.full((4096,), 5.0, device=DEV)
        first = c.infer(InferenceRequest("scale", {"x": x1})).outputs["x"]
        c.infer(InferenceRequest("scale", {"x": x2}))
        torch.testing.assert_close(first, x1 * 2)


def test_repeated_calls_reuse_the_opened_handles(client: ShmClient) -> None:
    x = torch.randn(256, device=DEV)
    for i in range(50):
        torch.testing.assert_close(
            client.infer(InferenceRequest("scale", {"x": x + i})).outputs["x"], (x + i) * 2
        )


def test_a_channel_s_outputs_come_in_one_allocation_of_its_own(client: ShmClient) -> None:
    """The handle exposes the channel's outputs and nothing else (spec 13): one allocation, opened
    once, whatever the caching allocator did with the handler's tensors."""
    for n in (16, 1000, 4096, 10):
        x = torch.randn(n, device=DEV)
        torch.testing.assert_close(client.infer(InferenceRequest("scale", {"x": x})).outputs["x"], x * 2)
    mappings = list(client._cuda.mappings().values())  # (handle, size) of each (channel, device)
    assert len(mappings) == 1 and mappings[0][1] >= 2 << 20


def test_a_view_output_outlives_a_host_call_and_can_be_sent_back(
    gpu_server: CudaServeProcess, name: str
) -> None:
    """A host request on the channel left the view as it was (the server freed it, then reused the
    memory); a view passed back as an input failed with a misleading cuIpcGetMemHandle error."""
    with ShmTransport().connect(name, cuda_ipc=True, copy_outputs=False, channels=1) as c:
        x = torch.full((1 << 20,), 3.0, device=DEV)
        y = c.infer(InferenceRequest("scale", {"x": x})).outputs["x"]
        c.infer(InferenceRequest("scale", {"x": np.ones(1 << 20, dtype=np.float32)}))
        junk = [torch.full((1 << 20,), 7.0, device=DEV) for _ in range(8)]  # what reused memory would hold
        torch.testing.assert_close(y, x * 2)
        z = c.infer(InferenceRequest("scale", {"x": y})).outputs["x"]
        torch.testing.assert_close(z, x * 4)
        del junk


def test_cuda_ipc_false_goes_by_host_and_returns_device_tensors(
    gpu_server: CudaServeProcess, name: str, opened: list[str]
) -> None:
    with ShmTransport().connect(name, cuda_ipc=False) as c:
        x = torch.randn(100, device=DEV)
        out = c.infer(InferenceRequest("scale", {"x": x})).outputs["x"]
        assert out.is_cuda
        torch.testing.assert_close(out, x * 2)
    assert opened == []


def test_a_host_only_server_with_fallback(echo_server: Any, name: str) -> None:
    x = torch.randn(100, device=DEV)
    with ShmTransport().connect(name, cuda_fallback="host") as c:
        out = c.infer(InferenceRequest("echo", {"x": x})).outputs["x"]
        assert out.is_cuda
        torch.testing.assert_close(out, x)
    with ShmTransport().connect(name) as c, pytest.raises(CudaUnavailable, match="does not advertise"):
        c.infer(InferenceRequest("echo", {"x": x}))


def _send(client: ShmClient, ref: CudaIpcRef) -> None:
    ch = client._take(0)
    try:
        ch.wkey = None
        write_mixed_request(ch.req, tensors=[ref], request_id=5, model="echo", flags=FLAG_CUDA_IPC)
        client._exchange(ch, 5, "echo", time.monotonic_ns() + 10**10, retry=False)
    finally:
        client._give(ch)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            CudaIpcRef("x", DataType.FP32, (4,), 0, bytes(range(1, 65)), 0, 16),
            "cannot open its CUDA IPC handle",
        ),
        (CudaIpcRef("x", DataType.FP32, (4,), 99, bytes(range(1, 65)), 0, 16), "CUDA device 99"),
    ],
)
def test_a_bad_handle_is_invalid_input_and_the_server_goes_on(
    client: ShmClient, ref: CudaIpcRef, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        _send(client, ref)
    x = torch.ones(3, device=DEV)
    torch.testing.assert_close(client.infer(InferenceRequest("scale", {"x": x})).outputs["x"], x * 2)


def test_an_offset_past_the_allocation_is_refused(client: ShmClient) -> None:
    x = torch.ones(1024, device=DEV)
    ref = C.export_tensor("x", x)
    with pytest.raises(InvalidInput, match="outside the CUDA allocation"):
        _send(client, ref._replace(offset=ref.offset + (1 << 40)))


_DYING_CLIENT = """
import os, sys, torch
from foundation_shm import ShmTransport
from foundation_ml import InferenceRequest

c = ShmTransport().connect(sys.argv[1], cuda_ipc=True)
x = torch.randn(1 << 20, device="cuda:0")
out = c.infer(InferenceRequest("scale", {"x": x})).outputs["x"]
assert torch.allclose(out, x * 2)
print("ok", flush=True)
os._exit(0)  # no close: the server must reclaim the channel and drop this client's handles
"""


def test_a_client_that_dies_is_reclaimed_and_the_server_goes_on(client: ShmClient, name: str) -> None:
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", _DYING_CLIENT, name], capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip() == "ok", done.stderr
    ctl = client._connection().ctl
    owners = [
        (L.CHANNELS_OFFSET + i * L.CHANNEL_SIZE + L.ChannelField.OWNER_PID) // 4
        for i in range(ctl.u32[L.RegionField.CHANNEL_COUNT // 4])
    ]
    end = time.monotonic() + 30
    while {ctl.u32[w] for w in owners} - {0, os.getpid()} and time.monotonic() < end:
        time.sleep(0.05)  # the server reclaims dead clients' channels at its heartbeat
    assert {ctl.u32[w] for w in owners} - {0, os.getpid()} == set()
    x = torch.randn(1000, device=DEV)
    torch.testing.assert_close(client.infer(InferenceRequest("scale", {"x": x})).outputs["x"], x * 2)


def test_export_gives_the_allocation_handle_and_offset() -> None:
    big = torch.empty(1 << 20, dtype=torch.float32, device=DEV)
    a, b = C.export_tensor("a", big[:10]), C.export_tensor("b", big[1000:1010])
    assert a.handle == b.handle and b.offset - a.offset == 4000 and a.size == 40


def _kept(client: ShmClient) -> int:
    """How many channels the client keeps for threads' output views."""
    return sum(1 for box in client._pool._holders if box[0] is not None)


def test_copies_asked_per_call_are_the_caller_s_own_and_keep_no_channel(
    gpu_server: CudaServeProcess, name: str
) -> None:
    """``infer(copy_outputs=True)`` and ``infer_copy`` on a client of views (bb91fc4): the device
    outputs are clones that outlive the next call, and the channel goes back to the pool."""
    with ShmTransport().connect(name, cuda_ipc=True, copy_outputs=False, channels=1) as c:
        x1, x2, x3 = (torch.full((4096,), v, device=DEV) for v in (1.0, 5.0, 9.0))
        first = c.infer(InferenceRequest("scale", {"x": x1}), copy_outputs=True).outputs["x"]
        assert _kept(c) == 0
        second = c.infer_copy(InferenceRequest("scale", {"x": x2})).outputs["x"]
        assert _kept(c) == 0
        view = c.infer(InferenceRequest("scale", {"x": x3})).outputs["x"]  # the client's default: a view
        assert _kept(c) == 1
        assert first.is_cuda and second.is_cuda
        torch.testing.assert_close(first, x1 * 2)
        torch.testing.assert_close(second, x2 * 2)
        torch.testing.assert_close(view, x3 * 2)
        first.add_(1)  # the caller's own memory: writable, and not the server's buffer
        torch.testing.assert_close(view, x3 * 2)


def test_ainfer_returns_device_outputs_the_caller_owns(gpu_server: CudaServeProcess, name: str) -> None:
    """``ainfer`` copies device outputs (a5944a4: it called numpy's copy() on a torch tensor)."""
    import asyncio

    async def calls(c: ShmClient) -> list[Any]:
        xs = [torch.full((1000,), float(i), device=DEV) for i in range(8)]
        resps = await asyncio.gather(*(c.ainfer(InferenceRequest("scale", {"x": x})) for x in xs))
        return [(x, r.outputs["x"]) for x, r in zip(xs, resps, strict=True)]

    with ShmTransport().connect(name, cuda_ipc=True, copy_outputs=False, channels=2) as c:
        pairs = asyncio.run(calls(c))
        c.infer(InferenceRequest("scale", {"x": torch.zeros(1000, device=DEV)}))
        for x, out in pairs:
            assert out.is_cuda
            torch.testing.assert_close(out, x * 2)


@pytest.mark.parametrize("bad", [-1, 2**64, True])
def test_a_bad_request_id_is_refused_before_a_device_tensor_is_exported(client: ShmClient, bad: Any) -> None:
    x = torch.ones(8, device=DEV)
    with pytest.raises(InvalidInput, match=r"request id must be an integer 1\.\.2\*\*64-1"):
        client.infer(InferenceRequest("scale", {"x": x}, id=bad))
    out = client.infer(InferenceRequest("scale", {"x": x}, id=2**64 - 1))
    assert out.id == 2**64 - 1
    torch.testing.assert_close(out.outputs["x"], x * 2)


@pytest.mark.parametrize("cuda_ipc", [True, False])
def test_bfloat16_stays_bfloat16_by_handle_through_host_memory_and_when_empty(
    gpu_server: CudaServeProcess, name: str, cuda_ipc: bool
) -> None:
    """A bfloat16 tensor through host memory (``cuda_ipc=False``, or an empty one, which never goes
    by handle) went as UINT16 and came back ``torch.uint16``; it now crosses as BF16 both ways."""
    x = torch.tensor([1.5, -2.0, 0.25, float("nan")], dtype=torch.bfloat16, device=DEV)
    with ShmTransport().connect(name, cuda_ipc=cuda_ipc) as c:
        for t in (x, x[:0], x.reshape(2, 2)):
            out = c.infer(InferenceRequest("echo", {"x": t})).outputs["x"]
            assert out.dtype == torch.bfloat16 and out.is_cuda and out.shape == t.shape
            assert torch.equal(out.view(torch.int16), t.view(torch.int16))  # the bits, NaN too
