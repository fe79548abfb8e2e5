"""Model files and packages cannot make the server run code: no unpickling, only model factories."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from foundation_torch import TorchBackend, save_export, save_torchscript
from foundation_torch._safety import is_module_factory, no_unpickling
from foundation_torch.demo import DemoMLP, build_demo

from foundation_ml import MLRuntime, ModelLoadError, PackageError


class _Marker:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.rename, (str(self.path) + ".absent", str(self.path)))  # harmless, but observable


def _pickled_marker(tmp_path: Path) -> tuple[bytes, Path]:
    marker = tmp_path / "code-ran"
    (tmp_path / "code-ran.absent").write_text("")
    buf = io.BytesIO()
    torch.save(_Marker(marker), buf)
    return buf.getvalue(), marker


def test_a_pt2_whose_sample_inputs_are_a_pickle_is_refused_without_running_it(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    """torch.export.load retries the sample inputs with weights_only=False; not here."""
    good = tmp_path / "good.pt2"
    ep = torch.export.export(build_demo(), (torch.zeros(2, 784),))
    save_export(ep, good, inputs={"x": "FP32[2, 784]"}, outputs={"y": "FP32[2, 10]"})
    payload, marker = _pickled_marker(tmp_path)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            dst.writestr(
                info, payload if info.filename.endswith("sample_inputs/model.pt") else src.read(info)
            )
    with pytest.raises(ModelLoadError, match="never unpickled"):
        runtime.register_model("m", str(evil))
    assert not marker.exists()
    runtime.register_model("good", str(good))  # the untouched archive still loads


def test_inside_no_unpickling_torch_load_is_weights_only_and_pickle_loads_refuses(tmp_path: Path) -> None:
    from torch.export.pt2_archive import _package as archive

    payload, marker = _pickled_marker(tmp_path)
    with no_unpickling():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(io.BytesIO(payload), weights_only=False)
        if hasattr(archive, "pickle"):  # torch >= 2.12 loads opaque constants with pickle.loads
            with pytest.raises(pickle.UnpicklingError, match="pickles are never loaded"):
                archive.pickle.loads(pickle.dumps(_Marker(marker)))
    assert not marker.exists()
    assert getattr(archive, "pickle", pickle) is pickle
    assert torch.load(io.BytesIO(_tensor_bytes())).shape == (2,)


def test_the_archive_reader_unpickles_only_through_what_no_unpickling_patches() -> None:
    """Every torch version we run on: the pt2 reader reaches pickle only through its module-level
    ``pickle`` name (patched) or ``torch.load`` (forced weights-only); a new path fails here."""
    import inspect

    from torch.export.pt2_archive import _package as archive

    source = inspect.getsource(archive)
    assert "from pickle import" not in source and "import _pickle" not in source
    assert "pickle.load(" not in source and "pickle.Unpickler" not in source
    if "pickle.loads(" in source:  # through the module-level name no_unpickling replaces
        assert hasattr(archive, "pickle")
    for name, value in vars(archive).items():
        assert value is not pickle.loads and value is not pickle.load, name
        assert value is not pickle.Unpickler, name


def _tensor_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(torch.zeros(2), buf)
    return buf.getvalue()


def _package_with_factory(tmp_path: Path, factory: str, **kwargs: object) -> Path:
    path = TorchBackend().package("foundation_torch.demo:build_demo", tmp_path / "pkg", name="m")
    doc = json.loads((path / "manifest.json").read_text())
    doc["factory"], doc["factory_kwargs"] = factory, kwargs
    (path / "manifest.json").write_text(json.dumps(doc))
    return path


def not_annotated(**kwargs: object):  # type: ignore[no-untyped-def]
    return build_demo()


def lies() -> DemoMLP:
    return 5  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("factory", "kwargs", "problem"),
    [
        ("os:system", {"command": "false"}, "neither a torch.nn.Module subclass nor"),
        ("sys:exit", {}, "neither a torch.nn.Module subclass nor"),
        (f"{__name__}:not_annotated", {}, "neither a torch.nn.Module subclass nor"),
        (f"{__name__}:lies", {}, "returned int, not a torch.nn.Module"),
    ],
)
def test_a_package_may_only_name_a_model_factory(
    runtime: MLRuntime, tmp_path: Path, factory: str, kwargs: dict[str, object], problem: str
) -> None:
    path = _package_with_factory(tmp_path, factory, **kwargs)
    with pytest.raises(PackageError, match=f"manifest.json: factory '{factory}' .*{problem}"):
        runtime.register_model("m", str(path))
    assert "m" not in runtime.registry.names()


def test_a_package_may_not_name_a_function_of_torch_that_runs_its_arguments(
    runtime: MLRuntime, tmp_path: Path
) -> None:
    """torch.fx's reduce_graph_module is annotated ``-> torch.nn.Module`` and executes the
    import_block it is given: a manifest naming it ran a shell command, the package then refused
    only for what the factory returned. Torch's own functions are never a package's factory."""
    marker = tmp_path / "code-ran"
    (tmp_path / "code-ran.absent").write_text("")
    run = f"import os; os.rename({str(marker) + '.absent'!r}, {str(marker)!r})\n"
    factory = "torch.fx.graph_module:reduce_graph_module"
    body = {"_code": "def forward(self, x):\n    return x\n"}
    path = _package_with_factory(tmp_path, factory, body=body, import_block=run)
    with pytest.raises(PackageError, match=f"manifest.json: factory '{factory}' is torch's own function"):
        runtime.register_model("m", str(path))
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"torch's own function .*torch\.fx\.graph_module"):
        TorchBackend().package(factory, tmp_path / "p", name="m", factory_kwargs={"body": body})
    assert not (tmp_path / "p").exists() and not marker.exists()
    with pytest.raises(PackageError, match=r"factory 'torch\.fx:GraphModule' is torch's own class"):
        runtime.register_model("g", str(_package_with_factory(tmp_path / "g", "torch.fx:GraphModule")))


def test_package_refuses_a_factory_returning_no_module_blaming_no_manifest(tmp_path: Path) -> None:
    """It said 'manifest.json: the package being written: ...' (``file`` manifest.json) to
    `foundation package`, whose package has no manifest yet: the factory is at fault."""
    with pytest.raises(PackageError) as exc:
        TorchBackend().package(f"{__name__}:lies", tmp_path / "p", name="m")
    assert str(exc.value) == (
        f"model 'm': the package being written: factory '{__name__}:lies' returned int, not a torch.nn.Module"
    )
    assert exc.value.file == "" and list(tmp_path.iterdir()) == []


def test_package_refuses_a_factory_a_manifest_may_not_name_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`foundation package --model m=mod:untyped` exited 1 (a PackageError, as a factory that
    fails), where every other refusal of what was typed exits 2: the reference is refused before
    anything runs or is written, a ValueError as write_package's refusals are; exit 2. A factory
    that runs and returns no module still fails, exit 1."""
    from foundation_core._cli import main

    factory = f"{__name__}:not_annotated"
    said = (
        f"model 'm': factory '{factory}' is neither a torch.nn.Module subclass nor a callable annotated "
        "to return one (def build(...) -> MyNet); a package may only name a model factory "
        "(nothing was written)"
    )
    with pytest.raises(ValueError) as exc:
        TorchBackend().package(factory, tmp_path / "p", name="m")
    assert str(exc.value) == said
    assert main(["package", "--model", f"m={factory}", "--out", str(tmp_path / "p.zip")]) == 2
    assert capsys.readouterr().err == f"foundation package: error: {said}\n"
    assert main(["package", "--model", f"m={__name__}:lies", "--out", str(tmp_path / "p.zip")]) == 1
    assert "returned int, not a torch.nn.Module" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_model_classes_and_annotated_builders_are_model_factories() -> None:
    assert is_module_factory(DemoMLP) and is_module_factory(build_demo) and is_module_factory(torch.nn.Linear)
    assert not any(map(is_module_factory, (os.system, print, not_annotated, 5, "x")))


def test_a_factory_calling_sys_exit_is_a_load_error_not_an_exit(runtime: MLRuntime) -> None:
    with pytest.raises(ModelLoadError, match="factory 'sys:exit' raised SystemExit"):
        runtime.register_model("m", "sys:exit")


def test_a_damaged_pt2_is_refused_naming_the_entry(runtime: MLRuntime, tmp_path: Path) -> None:
    good = tmp_path / "good.pt2"
    ep = torch.export.export(build_demo(), (torch.zeros(2, 784),))
    save_export(ep, good, inputs={"x": "FP32[2, 784]"}, outputs={"y": "FP32[2, 10]"})
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        weight = next(i for i in archive.infolist() if "/weights/" in i.filename and i.file_size > 1000)
    at = weight.header_offset + 30 + len(weight.filename.encode()) + len(weight.extra) + 100
    data[at] ^= 0xFF  # one weight byte; the stored CRC no longer matches
    damaged = tmp_path / "damaged.pt2"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=f"damaged: entry '{weight.filename}' fails its CRC check"):
        runtime.register_model("m", str(damaged))


def test_saving_without_a_full_signature_names_the_side_missing(tmp_path: Path) -> None:
    module = build_demo()
    module.foundation_signature = {}  # shadows the class attribute
    with pytest.raises(ValueError, match="no outputs signature: pass outputs="):
        save_torchscript(module, tmp_path / "m.pt", inputs={"x": "FP32[-1, 784]"})
    with pytest.raises(ValueError, match="no inputs signature: pass inputs="):
        save_torchscript(module, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_a_package_naming_a_factory_not_trusted_here_is_refused_before_its_module_is_imported(
    runtime: MLRuntime, tmp_path: Path, new_module: Callable[[str, str], str]
) -> None:
    """Any installed model factory could be named by a package's manifest (a third party's
    builder, with arguments of the manifest's choosing). ``trusted_factories=`` (or
    FOUNDATION_TRUSTED_FACTORIES) lists the ones packages may name here; another is refused
    before its module is imported, so its import-time code does not run either."""
    marker = tmp_path / "imported"
    module = new_module("fixture_untrusted_builder", f"open({str(marker)!r}, 'w').close()\n")
    path = _package_with_factory(tmp_path / "p", f"{module}:build")
    with pytest.raises(
        PackageError,
        match=rf"manifest.json: factory '{module}:build' is not a trusted factory here \(trusted: "
        r"'foundation_torch\.demo:\*'; set by trusted_factories= or FOUNDATION_TRUSTED_FACTORIES\)",
    ):
        runtime.register_model("m", str(path), trusted_factories=["foundation_torch.demo:*"])
    assert not marker.exists() and "m" not in runtime.registry.names()
    trusted = _package_with_factory(tmp_path / "q", "foundation_torch.demo:build_demo")
    runtime.register_model("demo", str(trusted), trusted_factories=["foundation_torch.demo:*"])
    assert "demo" in runtime.registry.names()


def test_the_trusted_factories_come_from_the_environment_unless_given(
    runtime: MLRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _package_with_factory(tmp_path / "p", "foundation_torch.demo:build_demo")
    monkeypatch.setenv("FOUNDATION_TRUSTED_FACTORIES", " mypkg.models.* , other:build ")
    with pytest.raises(PackageError, match=r"\(trusted: 'mypkg\.models\.\*', 'other:build'; set by"):
        runtime.register_model("m", str(path))
    runtime.register_model("m", str(path), trusted_factories=["foundation_torch.*"])  # given wins
    monkeypatch.setenv("FOUNDATION_TRUSTED_FACTORIES", "foundation_torch.demo:build_demo")
    runtime.register_model("n", str(path))
    assert {"m", "n"} <= set(runtime.registry.names())


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("foundation_torch.*", "trusted_factories must be a list of patterns such as ['mypkg.models.*']"),
        ([""], "trusted_factories holds '', not a pattern (a non-empty str)"),
        ([3], "trusted_factories holds 3, not a pattern"),
        (5, "trusted_factories must be a list of patterns such as ['mypkg.models.*'], not int 5"),
    ],
)
def test_a_trusted_factories_option_that_is_no_list_of_patterns_is_refused(
    runtime: MLRuntime, tmp_path: Path, given: object, says: str
) -> None:
    path = _package_with_factory(tmp_path / "p", "foundation_torch.demo:build_demo")
    with pytest.raises(ModelLoadError, match=re.escape(says)):
        runtime.register_model("m", str(path), trusted_factories=given)


def test_an_empty_trusted_factories_variable_is_refused_and_an_empty_list_trusts_none(
    runtime: MLRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _package_with_factory(tmp_path / "p", "foundation_torch.demo:build_demo")
    monkeypatch.setenv("FOUNDATION_TRUSTED_FACTORIES", " , ")
    with pytest.raises(ModelLoadError, match=r"FOUNDATION_TRUSTED_FACTORIES=' , ' names no pattern"):
        runtime.register_model("m", str(path))
    with pytest.raises(PackageError, match=r"\(trusted: none; set by"):
        runtime.register_model("m", str(path), trusted_factories=[])


def test_a_factory_given_directly_is_the_callers_and_needs_no_trust(runtime: MLRuntime) -> None:
    """Only a package's manifest is checked: a factory the caller names is the caller's choice."""
    runtime.register_model("m", "foundation_torch.demo:build_demo", trusted_factories=[])
    assert "m" in runtime.registry.names()


def test_a_trusted_pattern_does_not_trust_what_a_trusted_module_imports(
    runtime: MLRuntime, tmp_path: Path, new_module: Callable[[str, str], str]
) -> None:
    """A factory's attribute path is walked after its module imports: 'trusted_models:other.make'
    matched 'trusted_models:*' and called ``other.make`` (a module that trusted one imports, whose
    own name 'other:make' is refused), with the manifest's arguments. A path through another
    module is refused before anything is called; a path within the trusted module still works."""
    marker = tmp_path / "called"
    other = new_module(
        "fixture_other_builder",
        "import torch\n\n"
        "def make() -> torch.nn.Module:\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    return torch.nn.Linear(4, 2)\n",
    )
    trusted = new_module(
        "fixture_trusted_models",
        f"import {other}\nfrom foundation_torch.demo import build_demo\n\n"
        "class Builders:\n    build = staticmethod(build_demo)\n",
    )
    path = _package_with_factory(tmp_path / "p", f"{trusted}:{other}.make")
    with pytest.raises(
        PackageError,
        match=rf"manifest.json: factory '{trusted}:{other}.make' reaches module '{other}' through its "
        rf"attribute path: a trusted factory is named by its own module \('{other}:make'\)",
    ) as info:
        runtime.register_model("m", str(path), trusted_factories=[f"{trusted}:*"])
    assert info.value.file == "manifest.json"
    assert not marker.exists() and "m" not in runtime.registry.names()
    with pytest.raises(PackageError, match="is not a trusted factory here"):
        runtime.register_model(
            "m",
            str(_package_with_factory(tmp_path / "q", f"{other}:make")),
            trusted_factories=[f"{trusted}:*"],
        )
    good = _package_with_factory(tmp_path / "r", f"{trusted}:Builders.build")
    runtime.register_model("m", str(good), trusted_factories=[f"{trusted}:*"])
    assert "m" in runtime.registry.names()
