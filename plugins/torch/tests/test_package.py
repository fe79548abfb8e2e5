"""Model packages with torch: written from a factory, loaded and verified eagerly, errors name the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from foundation_torch import TorchBackend
from foundation_torch.demo import build_demo

from foundation_ml import MLRuntime, ModelLoadError, PackageError, open_package

DEMO = "foundation_torch.demo:build_demo"


def write(path: Path, **kwargs) -> Path:
    return TorchBackend().package(DEMO, path, name="mnist", version="7", **kwargs)


def run(runtime: MLRuntime, name: str, x: np.ndarray) -> np.ndarray:
    return runtime.registry.get(name).model({"x": x})["y"]


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_package_round_trip_serves_the_factory_weights(
    runtime: MLRuntime, tmp_path: Path, suffix: str
) -> None:
    path = write(tmp_path / f"mnist{suffix}", factory_kwargs={"seed": 3})
    pkg = open_package(path)
    assert sorted(pkg.files) == ["weights.safetensors"]
    assert pkg.manifest["factory"] == DEMO and pkg.manifest["backend"] == "torch"
    meta = runtime.register_model("mnist", str(path))
    assert meta.versions == ("7",)
    x = np.random.default_rng(0).standard_normal((2, 784)).astype(np.float32)
    with torch.inference_mode():
        want = build_demo(seed=3)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(run(runtime, "mnist", x), want)


def test_weights_are_loaded_from_the_package_not_rebuilt(runtime: MLRuntime, tmp_path: Path) -> None:
    """The factory's seed-0 weights are replaced by the package's (seed 5)."""
    path = write(tmp_path / "m", factory_kwargs={"seed": 5})
    doc = json.loads((path / "manifest.json").read_text())
    doc["factory_kwargs"] = {}  # the factory now builds seed-0 weights; the package's win
    (path / "manifest.json").write_text(json.dumps(doc))
    runtime.register_model("m", str(path))
    x = np.ones((1, 784), np.float32)
    with torch.inference_mode():
        want = build_demo(seed=5)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(run(runtime, "m", x), want)


def test_checksum_mismatch_fails_at_load_naming_the_file(runtime: MLRuntime, tmp_path: Path) -> None:
    path = write(tmp_path / "m")
    data = bytearray((path / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"weights\.safetensors fails its checksum"):
        runtime.register_model("m", str(path))
    assert runtime.registry.names() == []


def test_signature_mismatch_names_the_manifest(runtime: MLRuntime, tmp_path: Path) -> None:
    path = write(tmp_path / "m")
    doc = json.loads((path / "manifest.json").read_text())
    doc["outputs"] = [{"name": "y", "datatype": "FP32", "shape": [-1, 5]}]
    (path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        PackageError, match=r"manifest\.json declares .*y: FP32\[-1, 5\].* factory's module declares"
    ):
        runtime.register_model("m", str(path))


def test_signature_mismatch_without_module_signature_is_caught_at_warmup(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    path = TorchBackend().package(
        "torch.nn:Linear",
        tmp_path / "lin",
        name="lin",
        inputs={"x": "FP32[-1, 4]"},
        outputs={"y": "FP32[-1, 3]"},  # Linear(4, 2) returns 2 columns
        factory_kwargs={"in_features": 4, "out_features": 2},
    )
    with pytest.raises(
        ModelLoadError, match=r"signature declared in .*manifest\.json: output y is FP32\[1, 2\]"
    ):
        runtime.register_model("lin", str(path))


def test_weights_that_do_not_fit_the_module_name_the_file(runtime: MLRuntime, tmp_path: Path) -> None:
    path = write(tmp_path / "m", factory_kwargs={"hidden": 32})
    doc = json.loads((path / "manifest.json").read_text())
    doc["factory_kwargs"] = {"hidden": 64}
    (path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        PackageError, match=r"weights\.safetensors does not fit the factory's module.*size mismatch"
    ):
        runtime.register_model("m", str(path))


def test_package_command_writes_a_servable_package(tmp_path: Path) -> None:
    out = tmp_path / "demo.zip"
    cmd = [sys.executable, "-m", "foundation_core", "package", "--model", f"demo={DEMO}", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "weights.safetensors" in proc.stdout
    assert open_package(out).name == "demo"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_weights_of_another_dtype_are_refused_not_cast(runtime: MLRuntime, tmp_path: Path) -> None:
    import hashlib

    from safetensors.torch import save

    path = write(tmp_path / "m")
    state = {k: v.to(torch.float64) for k, v in build_demo().state_dict().items()}
    data = save(state)
    (path / "weights.safetensors").write_bytes(data)
    doc = json.loads((path / "manifest.json").read_text())
    doc["files"]["weights.safetensors"] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        PackageError, match=r"tensor 'fc\d\.\w+' is torch.float64, the factory's module holds torch.float32"
    ):
        runtime.register_model("m", str(path))


def test_a_package_given_one_side_of_the_signature_takes_the_other_from_the_module(tmp_path: Path) -> None:
    only_in = write(tmp_path / "a", inputs={"x": "FP32[-1, 784]"})
    only_out = write(tmp_path / "b", outputs={"y": "FP32[-1, 10]"})
    for path in (only_in, only_out):
        pkg = open_package(path)
        assert [s.name for s in pkg.inputs] == ["x"] and [s.name for s in pkg.outputs] == ["y"]


def test_a_package_naming_another_backend_is_refused_when_torch_is_asked_for(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    """``backend="torch"`` loaded a package whose manifest names another backend as a torch one."""
    path = write(tmp_path / "m")
    doc = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**doc, "backend": "onnx"}))
    with pytest.raises(PackageError, match=r"m/manifest\.json names backend 'onnx', not 'torch'") as info:
        runtime.register_model("m", str(path), backend="torch")
    assert info.value.file == "manifest.json" and runtime.registry.names() == []


def test_factory_kwargs_the_factory_raises_on_are_a_package_error_naming_the_manifest(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    """The manifest's factory_kwargs made the factory raise: a plain ModelLoadError "factory ...
    raised RuntimeError" named neither the package nor its manifest (and `foundation serve`
    exited 1, a model that fails, not 2, a bad package)."""
    path = write(tmp_path / "m")
    doc = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**doc, "factory_kwargs": {"seed": None}}))
    said = (
        r"m/manifest\.json: factory 'foundation_torch\.demo:build_demo' raised RuntimeError: .*"
        r"\(called with its 'factory_kwargs' \{\"seed\": null\}\)"
    )
    with pytest.raises(PackageError, match=said) as info:
        runtime.register_model("m", str(path))
    assert info.value.file == "manifest.json" and runtime.registry.names() == []
