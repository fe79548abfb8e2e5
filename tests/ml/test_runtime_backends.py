"""A third-party backend's mistakes, named at registration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import foundation_core
from foundation_core import hookimpl
from foundation_ml import MLRuntime, ModelLoadError
from foundation_ml import _plugin as ml_plugin

from ._runtime_support import _backend_hub, _Linear, _WeightsBackend

# where _backend_hub defines the backend whose load() the errors name
_SUPPORT = re.escape(_backend_hub.__module__)


def test_a_backend_that_cannot_package_says_which_method_it_lacks(tmp_path: Path) -> None:
    """``foundation package --backend npz`` said only "cannot write model packages": not that the
    backend lacks ``package()``, nor where a backend author reads how to write one."""
    with pytest.raises(NotImplementedError) as got:
        _WeightsBackend().package({"w": 1}, tmp_path / "pkg", name="m")
    assert str(got.value) == (
        "backend 'weights' cannot write model packages: its _WeightsBackend does not define "
        "package() (docs/serving.md, 'Writing a model backend')"
    )
    assert not (tmp_path / "pkg").exists()


def test_a_lazily_registered_backend_is_asked_whether_it_accepts_an_object() -> None:
    """A lazy backend was never imported, so its accepts() was never asked: 'no backend
    recognises a builtins.dict (backends: weights)' though that one takes it."""
    with _backend_hub() as hub, MLRuntime(hub) as runtime:
        assert hub.model_backends.entry("weights").lazy
        assert runtime.register_model("lin", {"w": 1}).platform == "numpy"


class _RaisingBackend(_WeightsBackend):
    """A third-party backend whose ``accepts`` raises on what it does not know."""

    @classmethod
    def accepts(cls, obj: object) -> bool:
        raise RuntimeError("cannot judge it")


def test_a_backend_whose_accepts_raises_is_named_and_the_others_are_still_asked() -> None:
    """One backend's accepts() raising failed every object's registration as '<dict> failed to
    load: RuntimeError: cannot judge it', naming no backend, though another backend took it."""

    class Plugin:
        @hookimpl
        def foundation_register_model_backends(self, register: Any) -> None:
            register("broken", f"{__name__}:_RaisingBackend")  # asked first
            register("weights", f"{__name__}:_WeightsBackend")

    with (
        foundation_core.start(plugins=[ml_plugin, Plugin()], entry_points=False) as hub,
        MLRuntime(hub) as runtime,
    ):
        assert list(hub.model_backends.names()).index("broken") < list(hub.model_backends.names()).index(
            "weights"
        )
        assert runtime.register_model("lin", {"w": 1}).platform == "numpy"
        with pytest.raises(
            ModelLoadError, match=r"'broken'\.accepts\(\) raised RuntimeError: cannot judge it"
        ):
            runtime.register_model("lin2", [1])


def test_an_object_no_backend_accepts_names_the_backends_asked() -> None:
    with _backend_hub() as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError, match=r"no backend recognises a builtins\.list \(backends: weights\)"
        ):
            runtime.register_model("lin", [1])


def test_a_path_without_backend_says_which_backend_was_assumed() -> None:
    """'... is loaded by torch' was nowhere: a numpy backend's file given without backend= failed
    with NotRegisteredError "no model backend named 'torch'" (or torch's own complaint)."""
    with _backend_hub() as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError,
            match=r"w\.npz: a path or reference is loaded by the 'torch' backend unless backend= names "
            r"another, and 'torch' is not registered \(registered: weights\)",
        ):
            runtime.register_model("lin", "w.npz")
        assert runtime.register_model("lin", "w.npz", backend="weights").platform == "numpy"


def test_a_backend_returning_something_else_than_a_loaded_model_is_named() -> None:
    """It was AttributeError: 'str' object has no attribute 'outputs'."""
    with _backend_hub(lambda: "a model") as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError,
            match=rf"backend 'weights' \({_SUPPORT}:_LazyBackend\.load\) returned builtins\.str, "
            r"not a foundation_ml\.LoadedModel",
        ):
            runtime.register_model("lin", "w.npz", backend="weights")
        assert runtime.registry.names() == []


def _exits() -> object:
    raise SystemExit(3)  # as argparse does on options it refuses


def _raises() -> object:
    raise KeyError("weights.npz")


@pytest.mark.parametrize(("make", "told"), [(_exits, "SystemExit: 3"), (_raises, "KeyError: 'weights.npz'")])
def test_a_backend_whose_load_raises_or_exits_is_named_and_nothing_is_registered(
    make: Any, told: str
) -> None:
    """A backend's load() calling sys.exit() came out of register_model as SystemExit, ending the
    process (a model's at warm-up, and a torch factory's, are load errors); and what a load raised
    was '<spec> failed to load: KeyError: ...', naming no backend."""
    with _backend_hub(make) as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError, match=rf"^model 'lin': w\.npz failed to load in backend 'weights': {told}$"
        ):
            runtime.register_model("lin", "w.npz", backend="weights")
        assert runtime.registry.names() == []


class _ExitingBackend(_WeightsBackend):
    """A backend whose constructor exits, as argparse on options it refuses does."""

    def __init__(self) -> None:
        raise SystemExit(3)


class _FailingBackend(_WeightsBackend):
    def __init__(self) -> None:
        raise RuntimeError("no licence server")


@pytest.mark.parametrize(
    ("backend", "told"),
    [("_ExitingBackend", "SystemExit: 3"), ("_FailingBackend", "RuntimeError: no licence server")],
)
def test_a_backend_whose_constructor_raises_or_exits_is_named_and_nothing_is_registered(
    backend: str, told: str
) -> None:
    """The backend was made outside what 672e52c guarded: its constructor calling sys.exit() came
    out of register_model as SystemExit, ending the process, and any other error raw (a
    RuntimeError, no model named), where load() raising either is a ModelLoadError."""

    class Plugin:
        @hookimpl
        def foundation_register_model_backends(self, register: Any) -> None:
            register("weights", f"{__name__}:{backend}")

    with (
        foundation_core.start(plugins=[ml_plugin, Plugin()], entry_points=False) as hub,
        MLRuntime(hub) as runtime,
    ):
        with pytest.raises(
            ModelLoadError, match=rf"^model 'lin': w\.npz failed to load in backend 'weights': {told}$"
        ):
            runtime.register_model("lin", "w.npz", backend="weights")
        assert runtime.registry.names() == []


@pytest.mark.parametrize("warmup", [True, False])
def test_a_loaded_model_without_its_signature_is_named(warmup: bool) -> None:
    """It was AttributeError: '_Linear' object has no attribute 'outputs'."""
    closed = []

    class Unsigned(_Linear):
        def close(self) -> None:
            closed.append(self)

    with _backend_hub(lambda: Unsigned(signature=False)) as hub, MLRuntime(hub) as runtime:
        with pytest.raises(
            ModelLoadError,
            match=rf"backend 'weights' \({_SUPPORT}:_LazyBackend\.load\): the Unsigned has no "
            r"inputs: set self\.inputs = parse_signature\(",
        ):
            runtime.register_model("lin", "w.npz", backend="weights", warmup=warmup)
        assert len(closed) == 1  # what the backend loaded is released
        with pytest.raises(ModelLoadError, match=r"register_model: the Unsigned has no inputs"):
            runtime.register_model("lin", Unsigned(signature=False))


def test_a_signature_that_is_not_tensor_specs_is_named(runtime: MLRuntime) -> None:
    model = _Linear()
    model.outputs = {"y": "FP32[-1, 2]"}  # type: ignore[assignment]
    with pytest.raises(
        ModelLoadError,
        match=r"the _Linear's outputs are dict \{'y': 'FP32\[-1, 2\]'\}, not a tuple of TensorSpec",
    ):
        runtime.register_model("lin", model)


def test_a_model_answering_an_array_instead_of_a_mapping_is_named_at_warm_up(runtime: MLRuntime) -> None:
    """It was TypeError: unhashable type: 'numpy.ndarray', out of the warm-up's check."""
    with pytest.raises(
        ModelLoadError, match=r"the model returned ndarray, not a mapping of output names to arrays"
    ):
        runtime.register_model("lin", _Linear(answer="array"))
    assert runtime.registry.names() == []
