"""The torch backend loads factories, modules, TorchScript and torch.export files; outputs equal
the direct PyTorch call; dtypes map by the protocol's table; bad models fail at load, named."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from foundation_torch import TorchBackend, TorchModel, save_export, save_torchscript
from foundation_torch.demo import build_demo

from foundation_ml import DataType, InferenceClient, MLRuntime, ModelLoadError
from foundation_ml._signature import parse_signature
from foundation_ml.errors import HandlerError

DEMO = "foundation_torch.demo:build_demo"


def direct(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def x_batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 784)).astype(np.float32)


def serve_and_call(runtime: MLRuntime, x: np.ndarray, name: str = "m") -> np.ndarray:
    address = f"torch-test-{id(runtime)}"
    runtime.start("inproc", address)
    with InferenceClient(address, transport="inproc", hub=runtime.hub) as client:
        return client.infer(name, {"x": x})["y"]


def test_demo_weights_are_fixed_by_the_seed() -> None:
    a, b = build_demo(), build_demo()
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    assert not torch.equal(build_demo(seed=1).fc1.weight, a.fc1.weight)


def test_factory_spec_gives_the_direct_outputs(runtime: MLRuntime) -> None:
    meta = runtime.register_model("m", DEMO)
    assert meta.platform == "pytorch"
    assert meta.signature() == "inputs (x: FP32[-1, 784]) -> outputs (y: FP32[-1, 10])"
    x = x_batch()
    np.testing.assert_array_equal(serve_and_call(runtime, x), direct(build_demo(), x))


def test_module_object_picks_the_torch_backend(runtime: MLRuntime) -> None:
    module = build_demo()
    runtime.register_model("m", module)
    x = x_batch(1)
    np.testing.assert_array_equal(serve_and_call(runtime, x), direct(module, x))


def test_module_without_signature_needs_one(runtime: MLRuntime) -> None:
    with pytest.raises(ModelLoadError, match="no signature for Linear: pass inputs= and outputs="):
        runtime.register_model("m", torch.nn.Linear(4, 2))
    runtime.register_model(
        "m", torch.nn.Linear(4, 2), inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 2]"}
    )
    assert runtime.metadata("m")["batching"]["batchable"] is True


def test_one_side_of_the_signature_passed_takes_the_other_from_the_module(runtime: MLRuntime) -> None:
    runtime.register_model("m", build_demo(), outputs={"logits": "FP32[-1, 10]"})  # inputs: the module's
    meta = runtime.metadata("m")
    assert [o["name"] for o in meta["outputs"]] == ["logits"]
    assert [i["name"] for i in meta["inputs"]] == ["x"]
    with pytest.raises(ModelLoadError, match=r"Linear declares no foundation_signature .*: pass outputs="):
        runtime.register_model("n", torch.nn.Linear(4, 2), inputs={"x": "FP32[-1, 4]"})


FORM = re.escape('{"inputs": {"x": "FP32[-1, 784]"}, "outputs": {"y": "FP32[-1, 10]"}}')

FACTORIES = """
import torch


def build() -> torch.nn.Module:
    return torch.nn.Linear(4, 2)


class Half(torch.nn.Module):
    foundation_signature = {"inputs": {"x": "FP32[-1, 4]"}}

    def forward(self, x):
        return x


def build_half() -> Half:
    return Half()


def build_declared() -> torch.nn.Module:  # the way the error points to
    module = torch.nn.Linear(4, 2)
    module.foundation_signature = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 2]"}}
    return module
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of an importable module of factories (``FACTORIES``), new to this test."""
    name = f"factories_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _no_signature(name: str, factory: str, what: str, do: str, python: str) -> str:
    form = '{"inputs": {"x": "FP32[-1, 784]"}, "outputs": {"y": "FP32[-1, 10]"}}'
    return (
        f"model '{name}': {what}, the module the factory {factory} returns: {do} (the form: "
        f"module.foundation_signature = {form}), where `foundation serve --model {name}={factory}` "
        f"and `foundation package` read it (from Python, register_model also takes {python})"
    )


def test_a_factory_without_a_signature_is_told_the_attribute_not_python_arguments(
    runtime: MLRuntime, factories: str
) -> None:
    """``foundation serve --model m=pkg.mod:build`` said 'pass inputs= and outputs=', arguments
    the command has no way to pass; a factory's module is told to declare its
    ``foundation_signature`` (in the factory, as ``build_declared`` does, or on its class)."""
    with pytest.raises(ModelLoadError) as caught:
        runtime.register_model("m", f"{factories}:build")
    assert str(caught.value) == _no_signature(
        "m",
        f"{factories}:build",
        "no signature for Linear",
        "declare it as its foundation_signature, in the factory or on its class",
        "inputs= and outputs=",
    )
    with pytest.raises(ModelLoadError) as caught:
        runtime.register_model("h", f"{factories}:build_half")
    assert str(caught.value) == _no_signature(
        "h",
        f"{factories}:build_half",
        "no outputs signature for Half",
        "add 'outputs' to Half.foundation_signature",
        "outputs=",
    )
    runtime.register_model("d", f"{factories}:build_declared")
    assert runtime.metadata("d")["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    runtime.register_model(  # from Python the arguments still do
        "a", f"{factories}:build", inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 2]"}
    )


def test_foundation_serve_and_package_show_the_factorys_way_to_declare_a_signature(
    factories: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    factory = f"{factories}:build"
    message = _no_signature(
        "m",
        factory,
        "no signature for Linear",
        "declare it as its foundation_signature, in the factory or on its class",
        "inputs= and outputs=",
    )
    assert main(["serve", "--transport", "shm", "--name", "never_served", "--model", f"m={factory}"]) == 1
    assert capsys.readouterr().err == f"foundation serve: error: {message}\n"
    assert main(["package", "--model", f"m={factory}", "--out", str(tmp_path / "m.zip")]) == 1
    assert capsys.readouterr().err == f"foundation package: error: {message}\n"


class Declared(torch.nn.Module):
    """A module whose ``foundation_signature`` each test sets on an instance."""

    def __init__(self, signature: object) -> None:
        super().__init__()
        self.foundation_signature = signature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            {"x": "FP32[-1, 4]", "y": "FP32[-1, 4]"},
            r"Declared.foundation_signature has the key\(s\) 'x', 'y': it takes 'inputs' and 'outputs', "
            rf"each a signature, as in {FORM}",
        ),
        (
            ({"x": "FP32[-1, 4]"}, {"y": "FP32[-1, 4]"}),
            rf"Declared.foundation_signature must be a dict such as {FORM}, not a tuple",
        ),
        (
            {"inputs": "FP32[-1, 4]", "outputs": {"y": "FP32[-1, 4]"}},
            r"Declared.foundation_signature\['inputs'\] must map each tensor's name to its spec",
        ),
        (
            {"inputs": {"x": "FP32[-1, 4.5]"}, "outputs": {"y": "FP32[-1, 4]"}},
            r"Declared.foundation_signature\['inputs'\]: tensor spec 'FP32\[-1, 4.5\]' for 'x'",
        ),
        (
            {"inputs": {"x": "FP32[-1, 4]"}},
            r"no outputs signature for Declared: pass outputs= or add 'outputs' to "
            r"Declared.foundation_signature",
        ),
    ],
)
def test_a_foundation_signature_of_another_form_is_named_with_the_form(
    runtime: MLRuntime, tmp_path: Path, signature: object, message: str
) -> None:
    """A mistaken attribute was a bare ``KeyError: 'inputs'`` (or a ``TypeError`` about indices)
    from inside the backend; it is a ``ModelLoadError`` naming the attribute and showing its form,
    for ``register_model``, ``package`` (a ``ValueError`` for ``save_torchscript``) alike."""
    with pytest.raises(ModelLoadError, match=message):
        runtime.register_model("m", Declared(signature))
    assert "m" not in runtime.registry.names()
    if "no outputs" not in message:  # save_torchscript: a ValueError, as for a side missing
        with pytest.raises(ValueError, match=message):
            save_torchscript(Declared(signature), tmp_path / "m.pt")
        assert not (tmp_path / "m.pt").exists()


def test_a_side_the_attribute_leaves_out_may_be_passed(runtime: MLRuntime) -> None:
    """The docs: one side passed, the other from the module's attribute; an attribute that declares
    only that other side was read as a whole (``KeyError: 'outputs'``)."""
    runtime.register_model("m", Declared({"inputs": {"x": "FP32[-1, 4]"}}), outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("n", Declared({"outputs": {"y": "FP32[-1, 4]"}}), inputs={"x": "FP32[-1, 4]"})
    for name in ("m", "n"):
        meta = runtime.metadata(name)
        assert [(t["name"], t["shape"]) for t in (*meta["inputs"], *meta["outputs"])] == [
            ("x", [-1, 4]),
            ("y", [-1, 4]),
        ]


def test_a_signature_argument_given_as_one_string_is_named(runtime: MLRuntime) -> None:
    """``inputs="FP32[-1, 4]"`` was taken apart one character at a time: "a tensor is an object
    with name, datatype and shape, not str", naming neither the argument nor the form."""
    with pytest.raises(ModelLoadError, match=r"inputs= must map each tensor's name to its spec, as \{'x'"):
        runtime.register_model("m", torch.nn.Linear(4, 2), inputs="FP32[-1, 4]", outputs={"y": "FP32[-1, 2]"})


def test_a_model_file_without_a_signature_says_how_to_save_one(runtime: MLRuntime, tmp_path: Path) -> None:
    """A file saved by torch.jit.save or torch.export.save carries no signature: the error said
    "no signature for RecursiveScriptModule (GraphModule): ... declare it on the class", naming
    torch's loaded class, not the file, nor save_torchscript and save_export that embed one."""
    module = build_demo()
    script = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(module), str(script))  # type: ignore[no-untyped-call]
    program = torch.export.export(
        module, (torch.zeros(2, 784),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    exported = tmp_path / "plain.pt2"
    torch.export.save(program, str(exported))
    for path in (script, exported):
        with pytest.raises(ModelLoadError) as caught:
            runtime.register_model("m", str(path))
        assert str(caught.value) == (
            f"model 'm': {path} carries no signature (foundation_signature.json): save it with "
            "foundation_torch.save_torchscript or save_export, which embed one, or pass inputs= and outputs= "
            "to register_model from Python"
        )
        assert caught.value.file == str(path)
        with pytest.raises(ModelLoadError, match=r"which embed one, or pass outputs=$"):
            runtime.register_model("m", str(path), inputs={"x": "FP32[-1, 784]"})
    runtime.register_model("m", str(script), inputs={"x": "FP32[-1, 784]"}, outputs={"y": "FP32[-1, 10]"})
    x = x_batch()
    np.testing.assert_array_equal(serve_and_call(runtime, x), direct(module, x))


def test_torchscript_file_carries_its_signature(runtime: MLRuntime, tmp_path: Path) -> None:
    module = build_demo()
    path = save_torchscript(module, tmp_path / "demo.pt")
    runtime.register_model("m", str(path))
    x = x_batch()
    np.testing.assert_array_equal(serve_and_call(runtime, x), direct(module, x))


def test_torch_export_program(runtime: MLRuntime, tmp_path: Path) -> None:
    module = build_demo()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (torch.zeros(2, 784),), dynamic_shapes={"x": {0: batch}})
    path = save_export(
        program, tmp_path / "demo.pt2", inputs={"x": "FP32[-1, 784]"}, outputs={"y": "FP32[-1, 10]"}
    )
    runtime.register_model("m", str(path))
    x = x_batch()
    np.testing.assert_allclose(serve_and_call(runtime, x), direct(module, x), rtol=1e-6, atol=1e-6)


def test_model_file_suffixes_are_read_in_any_case(runtime: MLRuntime, tmp_path: Path) -> None:
    """``DEMO.PT`` and ``demo.PT2`` (as a Windows tool or a zip may name them) are the files their
    suffixes say, not "neither a model file nor a factory"; the .PT2 read with unpickling refused."""
    module = build_demo()
    x = x_batch()
    script = save_torchscript(module, tmp_path / "DEMO.PT")
    runtime.register_model("script", str(script))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (torch.zeros(2, 784),), dynamic_shapes={"x": {0: batch}})
    exported = save_export(
        program, tmp_path / "demo.PT2", inputs={"x": "FP32[-1, 784]"}, outputs={"y": "FP32[-1, 10]"}
    )
    runtime.register_model("exported", str(exported))
    np.testing.assert_array_equal(serve_and_call(runtime, x, "script"), direct(module, x))
    with InferenceClient(f"torch-test-{id(runtime)}", transport="inproc", hub=runtime.hub) as client:
        y = client.infer("exported", {"x": x})["y"]
    np.testing.assert_allclose(y, direct(module, x), rtol=1e-6, atol=1e-6)


def test_file_that_does_not_load_is_named(runtime: MLRuntime, tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(ModelLoadError, match=r"broken\.pt is not a loadable TorchScript file") as info:
        runtime.register_model("m", str(bad))
    assert info.value.file == str(bad)
    with pytest.raises(ModelLoadError, match=r"missing\.pt2 does not exist"):
        runtime.register_model("m", str(tmp_path / "missing.pt2"))
    assert runtime.registry.names() == []


def test_factory_that_cannot_be_imported(runtime: MLRuntime) -> None:
    with pytest.raises(ModelLoadError, match=r"factory 'nosuch\.module:build' cannot be imported"):
        runtime.register_model("m", "nosuch.module:build")
    with pytest.raises(
        ModelLoadError, match=r"neither a model file \(\.jit, \.pt, \.torchscript, \.ts, \.pt2\)"
    ):
        runtime.register_model("m", "just-a-word")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise RuntimeError('no GPU')\n", "RuntimeError: no GPU"),
    ],
    ids=["sys.exit", "RuntimeError"],
)
def test_a_factory_module_failing_on_import_is_a_load_error_naming_the_factory(
    runtime: MLRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_module: Callable[[str, str], str],
    body: str,
    why: str,
) -> None:
    """Packaging (``foundation package`` exited 3, saying nothing) or serving a factory whose module
    calls sys.exit() or raises as it imports: a ModelLoadError naming the factory, nothing written."""
    new_module("fixture_factory_fails", body)
    told = rf"factory 'fixture_factory_fails:build' cannot be imported: {why}$"
    with pytest.raises(ModelLoadError, match=told):
        TorchBackend().package("fixture_factory_fails:build", tmp_path / "out", name="m")
    monkeypatch.delitem(sys.modules, "fixture_factory_fails", raising=False)  # it imports again
    with pytest.raises(ModelLoadError, match=told):
        runtime.register_model("m", "fixture_factory_fails:build")
    assert not (tmp_path / "out").exists()
    assert runtime.registry.names() == []


def test_a_keyboard_interrupt_while_a_factory_module_imports_passes_through(
    tmp_path: Path, new_module: Callable[[str, str], str]
) -> None:
    new_module("fixture_factory_interrupted", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        TorchBackend().package("fixture_factory_interrupted:build", tmp_path / "out", name="m")


def test_a_factory_module_not_found_says_where_to_put_it(
    runtime: MLRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``foundation serve --model m=mypkg.mod:build`` from the project's directory: the console
    script's path does not hold it, and a bare 'No module named' did not say so."""
    with pytest.raises(ModelLoadError) as info:
        runtime.register_model("m", "nosuch_pkg_fdn.models:build")
    assert "No module named 'nosuch_pkg_fdn'" in str(info.value)
    assert "PYTHONPATH" in str(info.value) and "'nosuch_pkg_fdn'" in str(info.value)
    # not "the serving process": `foundation package` says it too, and serves nothing
    assert "(the process loading the model imports it: install the package" in str(info.value)
    # a module the factory's module imports is what is missing: no advice about the factory's place
    (tmp_path / "fdn_hint_pkg.py").write_text("import nosuch_dependency_fdn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="No module named 'nosuch_dependency_fdn'") as info:
        runtime.register_model("m", "fdn_hint_pkg:build")
    assert "PYTHONPATH" not in str(info.value)


def test_cuda_device_without_cuda_is_a_clear_error(runtime: MLRuntime) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error case cannot arise")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        runtime.register_model("m", DEMO, device="cuda:0")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (None, r"device must be a string such as 'cpu' or 'cuda:0', not None"),
        (0, r"device must be a string such as 'cpu' or 'cuda:0', not 0"),
        ("", r"invalid device ''"),
        ("mps", r"device 'mps': use 'cpu' or 'cuda:N'"),
    ],
)
def test_a_device_that_is_not_one_is_a_clear_error(device: object, message: str) -> None:
    """A device of None was a TypeError listing torch.device's overloads over several lines."""
    with pytest.raises(ModelLoadError, match=message) as info:
        TorchBackend().load(DEMO, name="m", device=device)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("threads", [-1, 1025, 10**6, 1.5, "2", True])
def test_threads_out_of_range_or_not_an_integer_are_refused(threads: object) -> None:
    """torch takes any positive count (a million threads crashed the process at its first
    matmul); a negative one was torch's RuntimeError, a string or float was coerced."""
    before = torch.get_num_threads()
    with pytest.raises(ModelLoadError, match=rf"threads must be an integer from 1 to 1024 .*not {threads!r}"):
        TorchBackend().load(DEMO, name="m", threads=threads)  # type: ignore[arg-type]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("batchable", ["no", 0, 1])
def test_a_batchable_that_is_no_bool_is_refused_before_anything_loads(
    runtime: MLRuntime, batchable: object
) -> None:
    """``batchable="no"`` was taken (truthy): with ``max_batch_size`` the model was batched, its
    rows stacked with other callers'; ``batchable=0`` left it unbatched and its metadata said
    ``"batchable": 0``. The option and ``TorchModel`` take True, False or None only."""
    told = r"batchable must be True, False or None \(told by the signature\), not "
    with pytest.raises(ModelLoadError, match=rf"^model 'm': {told}{batchable!r}$"):
        runtime.register_model("m", DEMO, batchable=batchable, max_batch_size=4)
    assert runtime.registry.names() == []
    spec = parse_signature({"x": "FP32[-1, 784]"})
    with pytest.raises(TypeError, match=rf"^TorchModel: {told}{batchable!r}$"):
        TorchModel(build_demo(), spec, parse_signature({"y": "FP32[-1, 10]"}), batchable=batchable)  # type: ignore[arg-type]
    runtime.register_model("m", DEMO, batchable=False)  # a bool is taken
    assert runtime.metadata("m")["batching"] == {"enabled": False, "batchable": False}


def test_a_load_that_fails_leaves_the_thread_count_as_it_was() -> None:
    """``torch.set_num_threads`` is process-wide: it was set before the load could fail."""
    before = torch.get_num_threads()
    with pytest.raises(ModelLoadError, match="cannot be imported"):
        TorchBackend().load("nosuch.module:build", name="m", threads=before + 1)
    assert torch.get_num_threads() == before
    try:
        TorchBackend().load(DEMO, name="m", threads=before + 1)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_every_new_thread_calling_a_model_gets_its_thread_count() -> None:
    """The model applies its ``threads`` in each thread that calls it (``torch.set_num_threads``
    is the last caller's, in any thread, until a thread sets its own). The threads done were
    remembered by id, and a new thread given an ended one's id (the usual case) skipped it: it
    ran at whatever another model, or the application, had set since."""
    before = torch.get_num_threads()
    width = before + 1
    try:
        model = TorchBackend().load(DEMO, name="m", threads=width)
        x = x_batch(1)
        seen: list[tuple[int, int]] = []  # (thread id, torch's width in it after the call)

        def call() -> None:
            model({"x": x})
            seen.append((threading.get_ident(), torch.get_num_threads()))

        for _ in range(10):
            thread = threading.Thread(target=call)
            thread.start()
            thread.join()
            torch.set_num_threads(before)  # as another model's load, or the application, does
    finally:
        torch.set_num_threads(before)
    idents = [ident for ident, _ in seen]
    assert len(set(idents)) < len(idents), "no thread id was reused: nothing was tested"
    assert [w for _, w in seen] == [width] * len(seen)


def test_two_models_of_different_threads_called_in_turn_in_one_thread_each_run_at_their_own() -> None:
    """A thread remembered as "set" for a model ran it at whatever width the other model had set
    since: ``threads=1`` and ``threads=2`` called in turn both ran at the last load's width."""
    before = torch.get_num_threads()
    widths: list[tuple[str, int]] = []

    class Probe(torch.nn.Module):
        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            widths.append((self.label, torch.get_num_threads()))
            return x

    sig = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 4]"}}
    try:
        one = TorchBackend().load(Probe("one"), name="one", threads=before + 1, **sig)
        two = TorchBackend().load(Probe("two"), name="two", threads=before + 2, **sig)
        x = np.zeros((1, 4), np.float32)
        for _ in range(3):
            one({"x": x})
            two({"x": x})
    finally:
        torch.set_num_threads(before)
    assert widths == [("one", before + 1), ("two", before + 2)] * 3


@pytest.mark.cuda
def test_cuda_device_gives_the_cpu_outputs(runtime: MLRuntime) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    runtime.register_model("m", DEMO, device="cuda:0")
    x = x_batch()
    np.testing.assert_allclose(serve_and_call(runtime, x), direct(build_demo(), x), rtol=1e-4, atol=1e-5)


class Kinds(torch.nn.Module):
    """Doubles an FP64, increments an INT64, negates a BF16 tensor, passes a BOOL through."""

    foundation_signature: ClassVar[dict[str, dict[str, str]]] = {
        "inputs": {"a": "FP64[-1, 2]", "b": "INT64[-1]", "c": "BF16[-1, 3]", "d": "BOOL[-1]"},
        "outputs": {"a2": "FP64[-1, 2]", "b1": "INT64[-1]", "cn": "BF16[-1, 3]", "d": "BOOL[-1]"},
    }

    def forward(self, a, b, c, d):  # type: ignore[no-untyped-def]
        return {"a2": a * 2, "b1": b + 1, "cn": -c, "d": d}


def test_dtypes_map_by_the_protocol_table(runtime: MLRuntime) -> None:
    runtime.register_model("k", Kinds())
    runtime.start("inproc", "kinds-test")
    bf = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.bfloat16)
    inputs = {
        "a": np.array([[1.0, 2.0]]),
        "b": np.array([41], np.int64),
        "c": bf.view(torch.int16).numpy().view(np.uint16),  # plain uint16: the signature reads it BF16
        "d": np.array([True]),
    }
    with InferenceClient("kinds-test", transport="inproc", hub=runtime.hub) as client:
        out = client.infer("k", inputs)
    np.testing.assert_array_equal(out["a2"], [[2.0, 4.0]])
    assert out["b1"].dtype == np.int64 and out["b1"][0] == 42
    assert out["cn"].dtype == np.uint16
    assert DataType.from_numpy(out["cn"].dtype) is DataType.BF16  # the bits carry the BF16 mark on
    got = torch.from_numpy(out["cn"].view(np.int16)).view(torch.bfloat16)
    assert torch.equal(got, -bf)
    assert out["d"].dtype == np.bool_ and out["d"][0]


def test_identity_output_never_aliases_the_input(runtime: MLRuntime) -> None:
    runtime.register_model(
        "id", torch.nn.Identity(), inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
    )
    x = np.ones((1, 4), np.float32)
    y = runtime.registry.get("id").model({"x": x})["y"]
    assert not np.shares_memory(x, y)


def test_a_torch_model_without_inputs_is_served(runtime: MLRuntime) -> None:
    """A ``TorchModel`` of no inputs returning one tensor is answered (its check that the output is
    no input read ``args[0]``, an IndexError that failed its registration's checked first call)."""

    class Constant(torch.nn.Module):
        def forward(self) -> torch.Tensor:
            return torch.arange(3, dtype=torch.float32)

    model = TorchModel(Constant(), (), parse_signature({"y": "FP32[3]"}))
    runtime.register_model("c", model)
    runtime.start("inproc", f"torch-test-{id(runtime)}")
    with InferenceClient(f"torch-test-{id(runtime)}", transport="inproc", hub=runtime.hub) as client:
        np.testing.assert_array_equal(client.infer("c", {})["y"], [0, 1, 2])


def test_outputs_contradicting_the_signature_fail_at_load(runtime: MLRuntime) -> None:
    with pytest.raises(
        ModelLoadError, match=r"output y is FP32\[1, 10\].*declared outputs: y: FP32\[-1, 5\]"
    ):
        runtime.register_model("m", build_demo(), inputs={"x": "FP32[-1, 784]"}, outputs={"y": "FP32[-1, 5]"})


def test_plugin_discovery_imports_no_torch() -> None:
    code = (
        "import sys, foundation_torch.plugin, foundation_ml._plugin; "
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


_THREADS_PROBE = """
import os, threading, numpy as np
from foundation_torch._backend import TorchBackend
from foundation_torch.demo import build_demo
model = TorchBackend().load(
    build_demo(), name="demo", threads=1, inputs={"x": "FP32[-1, 784]"}, outputs={"y": "FP32[-1, 10]"}
)
before = len(os.listdir("/proc/self/task"))
during = []
def serve():  # a serving thread (the shm loop, a batcher) that never called set_num_threads
    for _ in range(50):
        model({"x": np.ones((4, 784), np.float32)})
    during.append(len(os.listdir("/proc/self/task")))  # an OpenMP pool lives as long as its thread
t = threading.Thread(target=serve)
t.start()
t.join()
print(before + 1, during[0])
"""


def test_threads_hold_in_every_thread_that_calls_the_model() -> None:
    """``threads=1`` must hold in a serving thread too: OpenMP's width is per thread, and a
    thread that did not set it starts a pool whose workers spin-wait on the other cores."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _THREADS_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected, during = map(int, out.stdout.split())  # the process's threads and the serving one
    assert during == expected, f"{during - expected} thread(s) started by a model loaded with threads=1"


def test_package_checks_the_name_before_the_factory_builds_anything(tmp_path: Path) -> None:
    from foundation_torch import TorchBackend

    # the factory does not even exist: the name is refused first
    with pytest.raises(ValueError, match=r"the package's model name 'n{64}' must be 1-63 UTF-8 bytes"):
        TorchBackend().package("no_such_module_here:build", tmp_path / "p", name="n" * 64)
    assert list(tmp_path.iterdir()) == []


_READ_ONLY = """
import numpy as np, torch, warnings
warnings.simplefilter("default")
import foundation_torch._model as m
x = np.zeros((1, 784), np.float32)
x.flags.writeable = False
if MODE == "backend":
    from foundation_torch.demo import build_demo
    from foundation_ml import MLRuntime, InferenceClient
    with MLRuntime() as rt:
        rt.register_model("m", build_demo())
        rt.start("inproc", "ro")
        with InferenceClient("ro", transport="inproc", hub=rt.hub) as c:
            c.infer("m", {"x": x})
else:
    torch.from_numpy(x)
"""


@pytest.mark.parametrize(("mode", "warns"), [("backend", False), ("user", True)])
def test_read_only_inputs_are_served_quietly_and_user_code_still_warns(mode: str, warns: bool) -> None:
    """Transports hand models read-only views: the backend's own torch.from_numpy calls do not
    warn; importing the backend does not silence the same warning for the rest of the process.
    (torch warns once per process: each case runs in a fresh one.)"""
    proc = subprocess.run(
        [sys.executable, "-c", f"MODE = {mode!r}\n" + _READ_ONLY],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert ("The given NumPy array is not writable" in proc.stderr) is warns, proc.stderr


class _TwoHeads(torch.nn.Module):
    """Returns ``(logits, probs)``, both ``FP32[-1, 3]``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = x * 10
        return logits, torch.softmax(logits, dim=1)


def test_a_tuple_answer_of_more_items_than_declared_outputs_is_refused_not_shifted(
    runtime: MLRuntime,
) -> None:
    """A tuple is matched to the declared outputs in order; one of more items than declared was cut
    to their number, so ``(logits, probs)`` declared ``{"probs": ...}`` answered the logits as
    ``probs``, unseen: the shapes agreed. It fails the warm-up naming both counts, and with
    ``warmup=False`` each request (a ``HandlerError``), as does a tuple of too few."""
    probs_only = {"x": "FP32[-1, 3]"}, {"probs": "FP32[-1, 3]"}
    with pytest.raises(
        ModelLoadError, match=r"returned a tuple of 2 outputs, but the signature declares 1 \(probs\)"
    ):
        runtime.register_model("two", _TwoHeads(), inputs=probs_only[0], outputs=probs_only[1])
    assert runtime.registry.names() == []
    runtime.register_model("two", _TwoHeads(), inputs=probs_only[0], outputs=probs_only[1], warmup=False)
    three = {"a": "FP32[-1, 3]", "b": "FP32[-1, 3]", "c": "FP32[-1, 3]"}
    runtime.register_model("three", _TwoHeads(), inputs=probs_only[0], outputs=three, warmup=False)
    runtime.start("inproc", f"torch-test-{id(runtime)}")
    with InferenceClient(f"torch-test-{id(runtime)}", transport="inproc", hub=runtime.hub) as client:
        for model, told in (
            ("two", "2 outputs, but the signature declares 1"),
            ("three", "2 outputs, but the signature declares 3"),
        ):
            with pytest.raises(HandlerError, match=told):
                client.infer(model, {"x": np.ones((1, 3), np.float32)})


def test_an_existing_file_of_another_suffix_is_named_with_the_suffixes_read(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    """``model.pth`` (torch.save's usual name) was 'neither an existing model file or package' as a
    ``str``, though it exists, and 'cannot load a PosixPath' as a ``Path`` (a directory without a
    manifest too): each says which suffixes are model files, as ``foundation serve`` does."""
    pth = tmp_path / "model.pth"
    torch.save(build_demo().state_dict(), pth)
    for spec in (str(pth), pth):
        with pytest.raises(ModelLoadError) as caught:
            runtime.register_model("m", spec)
        assert str(caught.value) == (
            f"model 'm': {str(pth)!r} is neither a model file (.jit, .pt, .torchscript, .ts, .pt2), a model "
            "package nor a factory 'pkg.module:build' (the file is there: its suffix '.pth' is none of those)"
        )
    with pytest.raises(ModelLoadError, match=r"is a directory without manifest\.json, not a model package"):
        runtime.register_model("m", tmp_path)
    assert runtime.registry.names() == []


def test_save_refuses_a_suffix_the_backend_would_not_load(tmp_path: Path) -> None:
    """``save_torchscript(module, "model.pth")`` wrote a file that neither ``register_model`` nor
    ``foundation serve`` loads (files are told by their suffix); it and ``save_export`` to a
    ``.pt`` are a ``ValueError`` naming the suffixes, and nothing is written."""
    with pytest.raises(
        ValueError, match=r"save_torchscript: '.*model\.pth' must end in \.jit, \.pt, \.torchscript, \.ts"
    ):
        save_torchscript(build_demo(), tmp_path / "model.pth")
    program = torch.export.export(build_demo(), (torch.zeros(2, 784),))
    with pytest.raises(ValueError, match=r"save_export: '.*model\.pt' must end in \.pt2 \(any case\)"):
        save_export(
            program, tmp_path / "model.pt", inputs={"x": "FP32[2, 784]"}, outputs={"y": "FP32[2, 10]"}
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("outputs", [{}, []])
def test_outputs_declaring_no_tensor_are_refused_as_such(runtime: MLRuntime, outputs: object) -> None:
    """outputs={} was taken for no outputs= at all: 'Linear declares no foundation_signature to
    take the rest of the signature from: pass outputs= too', though it was passed."""
    with pytest.raises(
        ModelLoadError, match=r"outputs=(\{\}|\[\]) declares no tensor: a model answers at least one"
    ):
        runtime.register_model("m", torch.nn.Linear(4, 2), inputs={"x": "FP32[-1, 4]"}, outputs=outputs)


def test_a_foundation_signature_declaring_no_output_is_refused_as_such(runtime: MLRuntime) -> None:
    class NoOutputs(torch.nn.Linear):
        foundation_signature: ClassVar[dict[str, dict[str, str]]] = {
            "inputs": {"x": "FP32[-1, 4]"},
            "outputs": {},
        }

    with pytest.raises(
        ModelLoadError, match=r"NoOutputs.foundation_signature\['outputs'\] declares no tensor"
    ):
        runtime.register_model("m", NoOutputs(4, 2))
