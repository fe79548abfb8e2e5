"""The runtime with torch (CUDA) tensors: validation, the device_tensors declaration, errors, fallback, IPC.

Everything above the GPU section runs without a GPU, CPU tensors standing in for device tensors
where a code path is chosen by "is it a CUDA tensor"; the GPU section (marker ``cuda``) serves the
demo model on ``cuda:0`` in a ``foundation serve`` process and sends it CUDA tensors.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

import foundation_ml._client as ml_client
import foundation_ml._tensors as T
from foundation_core import Hub
from foundation_ml import FunctionModel, InferenceClient, InferenceRequest, MLRuntime
from foundation_ml._process import ServerProcess
from foundation_ml._serving import ServedModel
from foundation_ml._signature import compile_validator, parse_signature, validate_inputs
from foundation_ml.errors import CudaUnavailable, InferenceError, InvalidInput, ModelLoadError

torch = pytest.importorskip("torch")
C = pytest.importorskip("foundation_shm._cuda_ipc")
C_CLIENT = pytest.importorskip("foundation_shm._cuda_client")
C_SERVER = pytest.importorskip("foundation_shm._cuda_server")
D = pytest.importorskip("foundation_shm._cuda_driver")
L = pytest.importorskip("foundation_shm._layout")
FakeDeviceMemory = pytest.importorskip("foundation_shm._cuda_fake").FakeDeviceMemory
from foundation_torch._model import TorchModel  # noqa: E402
from foundation_torch.demo import SIGNATURE, build_demo  # noqa: E402
from torch import nn  # noqa: E402

NO_DEVICE = not torch.cuda.is_available()
DEMO = "foundation_torch.demo:build_demo"
DEMO_IN, DEMO_OUT = parse_signature(SIGNATURE["inputs"]), parse_signature(SIGNATURE["outputs"])


def direct(x: Any) -> Any:
    with torch.inference_mode():
        return build_demo().to(x.device)(x)


def demo_model(device: str = "cpu") -> TorchModel:
    return TorchModel(build_demo(), DEMO_IN, DEMO_OUT, device=device)


# --- validation of torch tensors ------------------------------------------------------------------


def test_torch_tensors_pass_the_signature_check_by_datatype_and_shape() -> None:
    spec = parse_signature({"x": "FP32[-1, 4]"})[0]
    assert spec.accepts(torch.zeros(3, 4)) and spec.accepts(np.zeros((3, 4), np.float32))
    assert not spec.accepts(torch.zeros(3, 4, dtype=torch.float64))
    assert not spec.accepts(torch.zeros(3, 5)) and not spec.accepts(torch.zeros(4))
    bf16 = parse_signature({"b": "BF16[2]"})[0]
    assert bf16.accepts(torch.zeros(2, dtype=torch.bfloat16)) and bf16.accepts(np.zeros(2, np.uint16))
    assert not bf16.accepts(torch.zeros(2, dtype=torch.uint16))  # UINT16, not BF16
    assert not bf16.accepts(torch.zeros(2, dtype=torch.float16))


def test_the_compiled_validator_takes_torch_tensors_and_numpy_mixed() -> None:
    specs = parse_signature({"x": "FP32[-1, 4]", "n": "INT64[1]"})
    valid = compile_validator(specs)
    assert valid({"x": torch.zeros(2, 4), "n": np.zeros(1, np.int64)})
    assert valid({"x": np.zeros((2, 4), np.float32), "n": torch.zeros(1, dtype=torch.int64)})
    assert not valid({"x": torch.zeros(2, 4, dtype=torch.float16), "n": np.zeros(1, np.int64)})
    assert not valid({"x": torch.zeros(2, 3), "n": np.zeros(1, np.int64)})
    assert not valid({"x": torch.zeros(2, 4, 1), "n": np.zeros(1, np.int64)})


def test_a_mismatching_tensor_is_named_with_its_datatype_and_device() -> None:
    specs = parse_signature({"x": "FP32[-1, 4]"})
    with pytest.raises(InvalidInput, match=r"input x is FP64\[2, 4\] \(torch, cpu\), expected FP32\[-1, 4\]"):
        validate_inputs("m", specs, {"x": torch.zeros(2, 4, dtype=torch.float64)})
    with pytest.raises(InvalidInput, match=r"input x is torch torch.complex64\[2\]"):
        validate_inputs("m", specs, {"x": torch.zeros(2, dtype=torch.complex64)})


def test_importing_foundation_ml_does_not_import_torch() -> None:
    code = (
        "import sys, foundation_ml, foundation_ml._tensors, foundation_ml._serving, foundation_ml._batching;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the device_tensors declaration ---------------------------------------------------------------


def test_a_torch_model_on_a_cuda_device_declares_device_tensors_one_on_the_cpu_does_not() -> None:
    assert demo_model("cuda:0").device_tensors  # placing it needs no device: only the declaration
    assert demo_model("cuda").device_tensors
    assert not demo_model("cpu").device_tensors
    fn = FunctionModel(lambda x: x, inputs={"x": "FP32[2]"}, outputs={"y": "FP32[2]"})
    assert not fn.takes_tensors and not fn.device_tensors


def test_the_runtime_declares_device_tensors_when_a_model_is_on_a_cuda_device(hub: Hub) -> None:
    with MLRuntime(hub) as rt:
        assert rt.device_tensors is False  # no model
        rt.register_model("cpu", demo_model("cpu"))
        assert rt.device_tensors is False
        rt.register_model("gpu", demo_model("cuda:0"), warmup=False)  # not run: no device needed
        assert rt.device_tensors is True
        rt.unload_model("gpu")
        assert rt.device_tensors is False


@pytest.mark.skipif(not NO_DEVICE, reason="checks the error raised where there is no CUDA device")
def test_a_cuda_device_without_cuda_is_a_clear_load_error(shm_hub: Hub) -> None:
    with MLRuntime(shm_hub) as rt:
        with pytest.raises(ModelLoadError, match="device 'cuda:0' requested but CUDA is not available"):
            rt.register_model("demo", DEMO, backend="torch", device="cuda:0")


@pytest.mark.skipif(not NO_DEVICE, reason="checks the error raised where there is no CUDA device")
def test_foundation_serve_on_cuda_without_cuda_says_so_and_exits() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "foundation_core", "serve", "--device", "cuda:0", "--name", "never_served"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert "device 'cuda:0' requested but CUDA is not available" in run.stderr


# --- TorchModel with tensors (CPU tensors standing in for CUDA ones) ------------------------------


@pytest.fixture
def cpu_as_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat CPU torch tensors as CUDA tensors, in foundation_ml and in the shm transport."""
    monkeypatch.setattr(T, "is_device_tensor", T.is_tensor)
    monkeypatch.setattr(ml_client, "is_device_tensor", T.is_tensor)
    for side in (C_CLIENT, C_SERVER):  # the client's inputs, the server's outputs
        monkeypatch.setattr(side, "is_device_tensor", lambda v: isinstance(v, torch.Tensor))


def test_torch_cpu_tensors_give_numpy_outputs_equal_to_numpy_inputs() -> None:
    model = demo_model()
    x = torch.randn(3, 784)
    out = model({"x": x})["y"]
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, model({"x": x.numpy()})["y"])


def test_a_device_request_keeps_its_outputs_as_tensors_on_the_inputs_device(cpu_as_device: None) -> None:
    model = demo_model()
    x = torch.randn(3, 784)
    out = model({"x": x})["y"]
    assert isinstance(out, torch.Tensor) and out.device == x.device
    torch.testing.assert_close(out, direct(x), rtol=0, atol=0)


def test_a_device_request_never_gets_its_own_input_back(cpu_as_device: None) -> None:
    ident = TorchModel(lambda x: x, *(parse_signature({"x": "FP32[-1, 2]"}),) * 2, device="cpu")
    x = torch.ones(2, 2)
    out: Any = ident({"x": x})["x"]
    assert out is not x and out.data_ptr() != x.data_ptr() and out.tolist() == x.tolist()


def test_numpy_inputs_of_a_device_request_go_to_the_models_device(cpu_as_device: None) -> None:
    specs = parse_signature({"x": "FP32[-1, 2]", "b": "BF16[2]"})
    model = TorchModel(lambda x, b: x + b.float(), specs, parse_signature({"y": "FP32[-1, 2]"}))
    b = torch.tensor([1.0, 2.0], dtype=torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    out = model({"x": torch.zeros(1, 2), "b": b})["y"]  # a tensor and a host BF16 array mixed
    assert isinstance(out, torch.Tensor) and out.tolist() == [[1.0, 2.0]]


def test_a_client_sends_cpu_tensors_as_numpy_and_gets_numpy(served: InferenceClient) -> None:
    x = torch.arange(8.0).reshape(4, 2).t()  # not contiguous: made so on the way
    y = served.infer("affine", {"x": x})["y"]
    assert isinstance(y, np.ndarray) and y.tolist() == (x * 2 + 1).tolist()
    with pytest.raises(InvalidInput, match=r"input x is FP64\[2, 4\]"):
        served.infer("affine", {"x": x.double()})


# --- batching: device requests batch with torch.cat, apart from host requests ---------------------


class _Answers:
    def __init__(self) -> None:
        self.got: dict[int, Any] = {}

    def __call__(self, value: Any) -> None:
        assert not isinstance(value, InferenceError), value
        self.got[value.id] = value.outputs["y"]


def test_device_requests_batch_on_their_device_and_host_ones_apart(cpu_as_device: None) -> None:
    served = ServedModel("demo", "1", demo_model())
    served.enable_batching(8, 10**9)  # only an explicit run below closes a batch
    try:
        xs = [torch.randn(n, 784) for n in (1, 2, 3)]
        host = np.random.default_rng(0).standard_normal((2, 784)).astype(np.float32)
        answers = _Answers()
        items = [(InferenceRequest("demo", {"x": x}, id=i + 1), answers, 0) for i, x in enumerate(xs)]
        items.append((InferenceRequest("demo", {"x": host}, id=9), answers, 0))
        assert served.batcher is not None
        served.call_started()  # as the batcher's own callers count a batch, under its lock
        served.batcher._run_items(items)  # type: ignore[arg-type]
    finally:
        served.stop()
    for i, x in enumerate(xs):
        out = answers.got[i + 1]
        assert isinstance(out, torch.Tensor) and out.shape == (len(x), 10)
        torch.testing.assert_close(out, direct(x))
    assert isinstance(answers.got[9], np.ndarray)  # the host request ran as its own group
    np.testing.assert_allclose(answers.got[9], direct(torch.from_numpy(host)).numpy(), rtol=1e-6)
    doc = served.metrics.snapshot()
    assert doc["batch_sizes"] == {"3": 1, "1": 1}  # the three device requests as one call; the host one


# --- serving: declaration, clear errors, host fallback --------------------------------------------


def test_a_runtime_with_a_numpy_model_copies_device_inputs_to_the_host(hub: Hub, name: str) -> None:
    """inproc hands tensors through: a model that takes none gets host arrays; the client
    returns the outputs on the inputs' device."""
    seen: list[type] = []

    def affine(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(type(x))
        return {"y": x * 2 + 1}

    model = FunctionModel(affine, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with MLRuntime(hub) as rt:
        rt.register_model("affine", model)
        rt.start("inproc", name)
        with InferenceClient(name, transport="inproc", hub=hub) as client:
            seen.clear()
            x = torch.arange(8.0).reshape(2, 4)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(T, "is_device_tensor", T.is_tensor)
                mp.setattr(ml_client, "is_device_tensor", T.is_tensor)
                y = client.infer("affine", {"x": x})["y"]
    assert seen == [np.ndarray]
    assert isinstance(y, torch.Tensor) and y.tolist() == (x * 2 + 1).tolist()


def test_a_cpu_runtime_does_not_take_cuda_ipc_and_says_so(
    shm_hub: Hub, name: str, cpu_as_device: None
) -> None:
    with MLRuntime(shm_hub) as rt:
        rt.register_model("demo", DEMO)
        server: Any = rt.start("shm", name)
        assert not server._cuda.enabled and "does not declare device_tensors" in server._cuda.reason
        x = torch.randn(2, 784)
        with InferenceClient(name, hub=shm_hub) as client:
            with pytest.raises(CudaUnavailable, match=r"does not advertise FDN_FEATURE_CUDA_IPC.*'host'"):
                client.infer("demo", {"x": x})
            np.testing.assert_array_equal(  # the host path still serves that client
                client.infer("demo", {"x": x.numpy()})["y"],
                rt.registry.get("demo").model({"x": x.numpy()})["y"],
            )
        with InferenceClient(name, hub=shm_hub, cuda_fallback="host") as client:
            y = client.infer("demo", {"x": x})["y"]
        assert isinstance(y, torch.Tensor) and y.device == x.device
        torch.testing.assert_close(y, direct(x))


@pytest.mark.skipif(not NO_DEVICE, reason="checks the error raised where there is no CUDA device")
def test_a_client_asking_for_cuda_ipc_without_a_device_fails_at_once(shm_hub: Hub, name: str) -> None:
    with pytest.raises(CudaUnavailable, match=r"^CUDA IPC requested but no CUDA device$"):
        InferenceClient(name, hub=shm_hub, cuda_ipc=True)  # no server needed to say so


@pytest.mark.skipif(not NO_DEVICE, reason="a device makes the server accept CUDA IPC (tested with CUDA)")
def test_a_runtime_declaring_device_tensors_without_cuda_refuses_with_the_reason(
    shm_hub: Hub, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TorchModel, "device_tensors", property(lambda self: True))
    with MLRuntime(shm_hub) as rt:
        rt.register_model("demo", DEMO)
        assert rt.device_tensors
        server: Any = rt.start("shm", name)
        assert not server._cuda.enabled and server._cuda.reason == C.NO_CUDA


def test_a_foundation_serve_process_and_a_client_falling_back_to_host(
    shm_hub: Hub, name: str, cpu_as_device: None
) -> None:
    with ServerProcess(["--transport", "shm", "--name", name]) as server:
        x = torch.randn(4, 784)
        with InferenceClient(name, hub=shm_hub) as client:
            assert not client._client._connection().ctl.u32[L.RegionField.FEATURES // 4] & L.Feature.CUDA_IPC  # type: ignore[attr-defined]
            with pytest.raises(CudaUnavailable, match="does not advertise"):
                client.infer("demo", {"x": x})
        with InferenceClient(name, hub=shm_hub, cuda_fallback="host") as client:
            for _ in range(2):
                y = client.infer("demo", {"x": x})["y"]
                assert isinstance(y, torch.Tensor) and y.device == x.device
                torch.testing.assert_close(y, direct(x))
    assert server.returncode == 0, server.output


# --- the IPC path through MLRuntime in one process, with fake device memory ------------------------


class _FakeDriver:
    def __init__(self) -> None:
        self.next = 0x10  # far below any real pointer: never taken for the client's own memory

    def open(self, device: int, handle: bytes) -> tuple[int, int]:
        self.next += 1
        return self.next, 1

    def close(self, device: int, ptr: int) -> None:
        pass


class _Recorder(nn.Module):
    """``y = 2x + 1``, remembering the address of each input it got."""

    foundation_signature: ClassVar[dict[str, Any]] = {
        "inputs": {"x": "FP32[-1, 4]"},
        "outputs": {"y": "FP32[-1, 4]"},
    }

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x: Any) -> Any:
        self.seen.append(x.data_ptr())
        return x * 2 + 1


@pytest.fixture
def fake_ipc(monkeypatch: pytest.MonkeyPatch, cpu_as_device: None) -> FakeDeviceMemory:
    """CUDA IPC without a GPU: exports and opens are fake, the device is there, syncs do nothing;
    a cpu TorchModel declares device_tensors as one on cuda:0 would."""
    memory = FakeDeviceMemory().install(monkeypatch)
    monkeypatch.setattr(D, "_driver", _FakeDriver())
    for side in (C_CLIENT, C_SERVER):
        monkeypatch.setattr(side, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(TorchModel, "device_tensors", property(lambda self: True))
    return memory


def test_a_runtime_serving_device_tensors_takes_them_by_handle_without_a_copy(
    shm_hub: Hub, name: str, fake_ipc: FakeDeviceMemory
) -> None:
    module = _Recorder()
    with MLRuntime(shm_hub) as rt:
        rt.register_model("rec", module, backend="torch")
        server: Any = rt.start("shm", name, channels=2)  # auto mode: the runtime's declaration decides
        assert server._cuda.enabled and server._cuda.feature == L.Feature.CUDA_IPC
        module.seen.clear()
        with InferenceClient(name, hub=shm_hub) as client:
            x = torch.arange(8.0).reshape(2, 4)
            for _ in range(2):
                y = client.infer("rec", {"x": x})["y"]
                assert module.seen[-1] == x.data_ptr()  # the client's memory itself, by handle
                assert isinstance(y, torch.Tensor) and y.tolist() == (x * 2 + 1).tolist()
                buffers = [b.ptr for b in server._cuda._buffers.values()]
                assert buffers and y.data_ptr() not in buffers  # copy=True: its own
            view = InferenceClient(name, hub=shm_hub, copy=False)
            with view:
                z = view.infer("rec", {"x": x})["y"]
                assert z.data_ptr() in [b.ptr for b in server._cuda._buffers.values()]  # by handle
        assert fake_ipc.exported.count("x") == 3 and len(fake_ipc.buffers) == 2  # a buffer per channel


def test_a_wrong_device_tensor_is_invalid_input_naming_it(
    shm_hub: Hub, name: str, fake_ipc: FakeDeviceMemory
) -> None:
    with MLRuntime(shm_hub) as rt:
        rt.register_model("rec", _Recorder(), backend="torch")
        rt.start("shm", name, channels=2)
        with InferenceClient(name, hub=shm_hub) as client:
            with pytest.raises(InvalidInput, match=r"input x is FP64\[2, 4\] \(torch, cpu\)"):
                client.infer("rec", {"x": torch.zeros(2, 4, dtype=torch.float64)})
            y = client.infer("rec", {"x": torch.zeros(1, 4)})["y"]  # and it goes on
            assert y.tolist() == [[1.0] * 4]


# --- with a GPU ---------------------------------------------------------------------------------

NEEDS_CUDA = "needs a CUDA device (torch.cuda.is_available() is False): serves the demo model on cuda:0"


@pytest.fixture
def gpu_server(name: str) -> Iterator[ServerProcess]:
    with ServerProcess(
        ["--transport", "shm", "--name", name, "--device", "cuda:0", "--max-batch-size", "4"]
    ) as s:
        yield s


@pytest.mark.cuda
@pytest.mark.skipif(NO_DEVICE, reason=NEEDS_CUDA)
def test_gpu_a_cuda_tensor_is_served_by_handle_and_comes_back_on_its_device(
    shm_hub: Hub, name: str, gpu_server: ServerProcess
) -> None:
    with InferenceClient(name, hub=shm_hub) as client:
        conn = client._client._connection()  # type: ignore[attr-defined]
        assert conn.ctl.u32[L.RegionField.FEATURES // 4] & L.Feature.CUDA_IPC, gpu_server.output
        for n in (1, 5):
            x = torch.randn(n, 784, device="cuda:0")
            y = client.infer("demo", {"x": x})["y"]
            assert isinstance(y, torch.Tensor) and y.is_cuda and y.device == x.device
            torch.testing.assert_close(y, direct(x))
        host = np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32)
        y_host = client.infer("demo", {"x": host})["y"]  # the host path to the same GPU model
        assert isinstance(y_host, np.ndarray)
        torch.testing.assert_close(torch.from_numpy(y_host), direct(torch.from_numpy(host).cuda()).cpu())


@pytest.mark.cuda
@pytest.mark.skipif(NO_DEVICE, reason=NEEDS_CUDA)
def test_gpu_concurrent_cuda_clients_each_get_their_own_rows(
    shm_hub: Hub, name: str, gpu_server: ServerProcess, concurrently
) -> None:
    def call(k: int) -> None:
        with InferenceClient(name, hub=shm_hub) as client:
            for i in range(20):
                x = torch.full((1 + (k + i) % 3, 784), float(k + i) / 100, device="cuda:0")
                y = client.infer("demo", {"x": x})["y"]
                assert y.device == x.device  # batched rows: another GEMM shape, a looser bound
                torch.testing.assert_close(y, direct(x), rtol=1e-4, atol=1e-4)

    errors = concurrently(call, 4)
    assert not errors, errors


@pytest.mark.cuda
@pytest.mark.skipif(NO_DEVICE, reason=NEEDS_CUDA)
def test_gpu_outputs_kept_past_the_next_call_are_the_callers_own(
    shm_hub: Hub, name: str, gpu_server: ServerProcess
) -> None:
    with InferenceClient(name, hub=shm_hub) as client:
        x1, x2 = torch.randn(2, 784, device="cuda:0"), torch.randn(2, 784, device="cuda:0")
        y1 = client.infer("demo", {"x": x1})["y"]
        client.infer("demo", {"x": x2})  # the server may reuse y1's memory now: y1 is a copy
        torch.testing.assert_close(y1, direct(x1))
