"""Requests through the runtime: errors, outputs, timeouts, names, async calls, packages."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import (
    FunctionModel,
    InferenceClient,
    MLRuntime,
    ModelLoadError,
    PackageError,
    parse_signature,
    write_package,
)
from foundation_ml.errors import DeadlineExceeded, InferenceError

from .conftest import affine_model, unique_name


def test_handler_errors_are_inference_errors_with_wire_codes(served: InferenceClient) -> None:
    with pytest.raises(InferenceError) as info:
        served.infer("nope", {})
    assert info.value.code.name == "MODEL_NOT_FOUND"


def test_requested_outputs_are_the_only_ones_returned(runtime, name, rows) -> None:
    two = FunctionModel(
        lambda x: {"double": x * 2, "neg": -x},
        inputs={"x": "FP32[-1, 4]"},
        outputs={"double": "FP32[-1, 4]", "neg": "FP32[-1, 4]"},
    )
    runtime.register_model("two", two)
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    x = rows(2)
    assert sorted(client.infer("two", {"x": x})) == ["double", "neg"]
    only = client.infer("two", {"x": x}, outputs=["neg"])
    assert list(only) == ["neg"]
    np.testing.assert_array_equal(only["neg"], -x)


def test_async_infer_gives_the_same_answer(served: InferenceClient, rows) -> None:
    import asyncio

    x = rows(2)
    out = asyncio.run(served.ainfer("affine", {"x": x}))
    np.testing.assert_array_equal(out["y"], x * 2 + 1)


def test_client_outputs_are_the_callers_own_arrays(served: InferenceClient, rows) -> None:
    y1 = served.infer("affine", {"x": rows(1)})["y"]
    y1[...] = 0  # writable, and writing it changes nothing the server or a later call sees
    y2 = served.infer("affine", {"x": rows(1)})["y"]
    np.testing.assert_array_equal(y2, rows(1) * 2 + 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, r"max_batch_size must be an integer >= 1 \(1: no batching\), not 0"),
        ({"max_batch_size": 2.0}, r"max_batch_size must be an integer >= 1 \(1: no batching\), not 2.0"),
        ({"max_wait_us": -1}, r"max_wait_us must be an integer from 0 to 10000000 \(10 s\), not -1"),
        (
            {"max_wait_us": 99999999999999999999999},  # would end the batcher thread: OverflowError
            r"max_wait_us must be an integer from 0 to 10000000 \(10 s\), not 99999999999999999999999",
        ),
    ],
)
def test_batching_settings_that_mean_nothing_are_refused(
    hub: Hub, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^MLRuntime: {message}"):
        MLRuntime(hub, **kwargs)
    model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with MLRuntime(hub) as rt:
        with pytest.raises(ValueError, match=f"^register_model\\('affine'\\): {message}"):
            rt.register_model("affine", model, **kwargs)
        assert rt.registry.names() == []  # nothing registered, nothing half-loaded


@pytest.mark.parametrize("warmup", ["no", "false", 0, None])
def test_a_warmup_that_is_no_bool_is_refused_before_anything_loads(hub: Hub, warmup: object) -> None:
    """``warmup="no"`` (or ``"false"`` read from a config file) ran the warm-up, being truthy, and
    ``0`` skipped it: each is a ``TypeError``, as a ``max_batch_size`` of ``"8"`` is refused."""
    calls = []
    model = FunctionModel(
        lambda x: calls.append(x) or {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
    )
    with MLRuntime(hub) as rt:
        with pytest.raises(
            TypeError, match=rf"^register_model\('m'\): warmup must be True or False, not {warmup!r}$"
        ):
            rt.register_model("m", model, warmup=warmup)  # type: ignore[arg-type]
        assert rt.registry.names() == [] and calls == []


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        (5, {}, TypeError, r"^register_model: the model name must be a str, not int \(5\)"),
        ("", {}, ValueError, r"^register_model: the model name '' must be 1-63 UTF-8 bytes"),
        ("m" * 64, {}, ValueError, r"^register_model: the model name 'm{64}' must be 1-63 UTF-8 bytes"),
        ("a\nb", {}, ValueError, r"of printable characters"),
        ("m", {"version": 2}, TypeError, r"^register_model\('m'\): the version must be a str, not int"),
        ("m", {"version": "v" * 16}, ValueError, r"^register_model\('m'\): the version 'v{16}' must be 1-15"),
    ],
)
def test_a_name_or_version_no_transport_can_carry_is_refused(
    hub: Hub, name: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with MLRuntime(hub) as rt:
        with pytest.raises(error, match=message):
            rt.register_model(name, model, **kwargs)
        assert rt.registry.names() == []


def test_a_tensor_name_no_transport_can_carry_is_refused() -> None:
    refused = r"^FunctionModel: inputs: tensor name 'x{64}' must be 1-63 UTF-8 bytes"
    with pytest.raises(ValueError, match=refused):
        FunctionModel(lambda x: {"y": x}, inputs={"x" * 64: "FP32[-1]"}, outputs={"y": "FP32[-1]"})


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "5", 1e11])
def test_a_client_timeout_that_is_not_a_positive_number_is_refused(hub: Hub, timeout: Any) -> None:
    with pytest.raises(
        ValueError, match=r"^InferenceClient: timeout must be a number of seconds in \(0, 1e\+09\] or None"
    ):
        InferenceClient("anything", transport="inproc", hub=hub, timeout=timeout)


def test_a_timeout_of_numpy_s_numbers_is_seconds_to_the_client(hub: Hub, served: InferenceClient) -> None:
    """(np.float64(5), a float, was 'no number of seconds' to the client and to each call.)"""
    client = InferenceClient(served.name, transport="inproc", hub=hub, timeout=np.float64(2.5))
    assert client.timeout == 2.5 and type(client.timeout) is float
    client.close()
    x = np.zeros((1, 4), np.float32)
    for timeout in (np.float32(5), np.int64(5)):
        np.testing.assert_array_equal(served.infer("affine", {"x": x}, timeout=timeout)["y"], x * 2 + 1)


def test_a_call_timeout_that_is_not_positive_is_refused(served: InferenceClient) -> None:
    x = np.zeros((1, 4), np.float32)
    refused = r"^timeout must be a number of seconds in \(0, 1e\+09\] or None"
    for timeout in (0, -2.5, float("nan"), 1e11):
        with pytest.raises(ValueError, match=refused):
            served.infer("affine", {"x": x}, timeout=timeout)
    np.testing.assert_array_equal(served.infer("affine", {"x": x}, timeout=5)["y"], x * 2 + 1)


def test_inproc_refuses_an_empty_address_as_check_address_says(runtime: MLRuntime) -> None:
    from foundation_ml._inproc import InprocTransport

    with pytest.raises(ValueError, match="the inproc address must not be empty"):
        InprocTransport().check_address("")
    with pytest.raises(ValueError, match="the inproc address must not be empty"):
        runtime.start("inproc", "")
    InprocTransport().check_address("any name/at all")


def test_metadata_carries_the_signature_of_every_loaded_version(runtime: MLRuntime) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(
        "m",
        FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 8]"}, outputs={"y": "FP32[-1, 8]"}),
        version="2",
    )
    doc = runtime.metadata("m")
    assert doc["inputs"][0]["shape"] == [-1, 8]  # the latest
    assert {v: s["inputs"][0]["shape"] for v, s in doc["signatures"].items()} == {"1": [-1, 4], "2": [-1, 8]}


def _slow_model(seconds: float) -> FunctionModel:
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(seconds)
        return {"y": x}

    return FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})


def test_inproc_answer_after_the_deadline_is_deadline_exceeded(runtime: MLRuntime, rows) -> None:
    """The model runs in the caller's thread on inproc: the answer exists, but it came late."""
    runtime.register_model("slow", _slow_model(0.3), max_batch_size=1)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        with pytest.raises(DeadlineExceeded):
            client.infer("slow", {"x": rows(1)}, timeout=0.05)
        assert client.infer("slow", {"x": rows(1)}, timeout=5)["y"].shape == (1, 4)


def test_async_calls_fill_a_batch_and_the_timeout_counts_from_the_call(runtime: MLRuntime, rows) -> None:
    import asyncio

    # the batch closes when full: a wait far longer than 16 calls take, on a loaded machine too
    # (200 ms split it now and then, its calls started late)
    runtime.register_model("affine", affine_model(), max_batch_size=16, max_wait_us=10_000_000)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:

        async def sixteen() -> list[dict[str, np.ndarray]]:
            return await asyncio.gather(*(client.ainfer("affine", {"x": rows(1)}) for _ in range(16)))

        assert len(asyncio.run(sixteen())) == 16
        assert runtime.stats()["models"]["affine"]["batch_sizes"] == {"16": 1}


def test_async_call_waiting_for_a_thread_past_its_deadline_is_not_sent(
    runtime: MLRuntime, rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from foundation_ml import _client

    monkeypatch.setattr(_client, "AINFER_THREADS", 1)
    runtime.register_model("slow", _slow_model(0.3), max_batch_size=1)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:

        async def two() -> list[object]:
            first = client.ainfer("slow", {"x": rows(1)}, timeout=5)
            second = client.ainfer("slow", {"x": rows(1)}, timeout=0.1)  # waits 0.3 s for the thread
            return await asyncio.gather(first, second, return_exceptions=True)

        done, late = asyncio.run(two())
        assert isinstance(done, dict) and isinstance(late, DeadlineExceeded)
        assert "no thread free" in str(late)
    assert runtime.stats()["models"]["slow"]["requests"] == 1


def test_a_signature_whose_example_is_absurdly_large_is_refused_at_warm_up(runtime: MLRuntime) -> None:
    huge = FunctionModel(
        lambda x: {"y": x[:, :1]}, inputs={"x": "FP32[-1, 1000000000000000]"}, outputs={"y": "FP32[-1, 1]"}
    )
    with pytest.raises(
        ModelLoadError,
        match=r"^model 'huge': <FunctionModel> cannot be warmed up: tensor x: FP32\[-1, 1000000000000000\]: "
        r"its example \(variable dimensions as 1\) would take 4000000000000000 bytes",
    ):
        runtime.register_model("huge", huge)
    assert runtime.registry.names() == []


def test_a_package_naming_an_unregistered_backend_is_refused_naming_its_manifest(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    path = write_package(
        tmp_path / "p.zip",
        name="m",
        version="1",
        backend="onnx",
        factory="pkg.mod:build",
        inputs=parse_signature({"x": "FP32[-1, 4]"}),
        outputs=parse_signature({"y": "FP32[-1, 4]"}),
        files={"model.onnx": b"onnx"},
    )
    registered = ", ".join(runtime.hub.model_backends.names()) or "none"
    message = (
        rf"p\.zip:manifest\.json names backend 'onnx', which is not registered \(registered: {registered}\)"
    )
    with pytest.raises(PackageError, match=message) as info:
        runtime.register_model("m", str(path))
    assert info.value.file == "manifest.json"
    assert runtime.registry.names() == []


def test_a_damaged_package_is_a_package_error_before_any_backend_is_chosen(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    path = tmp_path / "deep.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(PackageError, match=r"deep\.zip:manifest\.json nests arrays or objects too deeply"):
        runtime.register_model("m", str(path))


def test_a_non_array_output_is_named_at_warm_up(runtime) -> None:
    """It was an AttributeError ('int' object has no attribute 'dtype') out of the check itself."""
    odd = FunctionModel(lambda x: {"y": 3}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with pytest.raises(ModelLoadError, match=r"output y is int, not an array \(declared outputs: y: FP32"):
        runtime.register_model("odd", odd)
    assert runtime.registry.names() == []
