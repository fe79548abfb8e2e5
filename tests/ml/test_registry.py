"""The model registry read while another thread registers or unloads: every read (a request's
lookup, versions(), models(), metadata(), close()) sees the registry before or after a change,
never half of it, and raises nothing but the typed error of what it saw."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from foundation_ml import FunctionModel, InferenceRequest, MLRuntime, _runtime_reports
from foundation_ml._registry import ModelRegistry
from foundation_ml._serving import ServedModel
from foundation_ml.errors import ModelNotFound

from .conftest import affine_model


class Racing(str):
    """A model name whose ``hash()`` number ``at`` runs ``then()`` first: another thread's change
    of the registry landing in the middle of a read that looks this name up (a dict lookup
    hashes the key after it has read which dict to look in)."""

    def __new__(cls, value: str, then: Callable[[], object], at: int = 1) -> Racing:
        self = super().__new__(cls, value)
        self.then, self.at = then, at
        return self

    def __hash__(self) -> int:
        self.at -= 1
        if self.at == 0:
            self.then()
        return str.__hash__(self)


def _wide_model() -> FunctionModel:
    return FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 8]"}, outputs={"y": "FP32[-1, 8]"})


def test_versions_racing_the_unload_of_the_model_lists_what_it_saw(runtime: MLRuntime) -> None:
    """versions() raised KeyError when the model went between its two reads of the registry."""
    runtime.register_model("m", affine_model())
    name = Racing("m", lambda: runtime.unload_model("m"))
    assert runtime.versions(name) == ["1"]  # as of the read: the unload came after it
    assert runtime.registry.names() == []


def test_a_request_for_a_version_not_loaded_racing_the_unload_of_its_model_is_model_not_found(
    runtime: MLRuntime,
) -> None:
    """The error for 'no version 9' read the registry again to list the versions loaded: the
    model gone meanwhile, it raised KeyError out of the handler and the request got no answer."""
    runtime.register_model("m", affine_model())
    name = Racing("m", lambda: runtime.unload_model("m"), at=2)
    got: list[object] = []
    runtime(InferenceRequest(name, {"x": np.ones((1, 4), np.float32)}, version="9", id=7), got.append)
    assert len(got) == 1 and isinstance(got[0], ModelNotFound), got
    assert got[0].request_id == 7


def test_every_served_model_listed_racing_the_unload_of_one_is_as_of_one_moment() -> None:
    """all() (what close() and device_tensors go through) raised KeyError when a model it had
    listed was removed before it came to it."""
    registry = ModelRegistry()
    other = ServedModel("b", "1", affine_model())
    name = Racing("a", lambda: registry.remove("b"), at=0)  # armed once added (add hashes it)
    first = ServedModel(name, "1", affine_model())
    registry.add(other)
    registry.add(first)
    name.at = 1  # the next hash: all()'s
    assert registry.all() == [first, other]
    assert registry.all() == [first]


def test_models_racing_the_unload_of_one_lists_them_as_of_one_moment(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """models() raised ModelNotFound for a model unloaded while it went through the list."""
    runtime.register_model("a", affine_model())
    runtime.register_model("b", _wide_model())
    real = ServedModel.metadata
    unloads = [lambda: runtime.unload_model("b")]

    def metadata(self: ServedModel, versions: Any) -> Any:
        while unloads:  # while the first model's metadata is taken
            unloads.pop()()
        return real(self, versions)

    monkeypatch.setattr(ServedModel, "metadata", metadata)
    assert [m.name for m in runtime.models()] == ["a", "b"]
    assert [m.name for m in runtime.models()] == ["a"]


def test_metadata_racing_the_unload_of_a_version_describes_one_moment(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metadata() looked the model up four times: a version unloaded meanwhile made it raise
    ModelNotFound for a model still served, or mix one moment's versions with another's."""
    runtime.register_model("m", affine_model())
    runtime.register_model("m", _wide_model(), version="2")
    real = _runtime_reports._signature_doc
    unloads = [lambda: runtime.unload_model("m", "2")]

    def signature_doc(served: ServedModel) -> dict[str, Any]:
        while unloads:  # once the first version's signature is taken
            unloads.pop()()
        return real(served)

    monkeypatch.setattr(_runtime_reports, "_signature_doc", signature_doc)
    doc = runtime.metadata("m")
    assert doc["versions"] == ["1", "2"] and list(doc["signatures"]) == ["1", "2"]
    assert doc["inputs"][0]["shape"] == [-1, 8]  # version 2's, the latest then
    assert runtime.metadata("m")["versions"] == ["1"]


class _ThenRun:
    """A lock that runs ``then`` (once) just after it is first let go with ``when()`` true: another
    thread's change landing right after the change made under it."""

    def __init__(self, then: Callable[[], object], when: Callable[[], bool]) -> None:
        self._lock = threading.Lock()
        self._then = [then]
        self._when = when

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        while self._then and self._when():
            self._then.pop()()


@pytest.mark.parametrize("first", [True, False], ids=["another-version-left", "none-left"])
def test_a_registration_whose_version_is_unloaded_at_once_returns_what_it_registered(
    runtime: MLRuntime, first: bool
) -> None:
    """register_model read the registry again, after its change, for the metadata it returns: an
    unload of the new version landing in between made a registration that succeeded return the
    other version's signature and versions, or raise ModelNotFound 'no such model'."""
    if first:
        runtime.register_model("m", affine_model())

    def registered() -> bool:  # (register_model takes the lock before too: to claim the model)
        return "2" in runtime.registry.snapshot()[0].get("m", {})

    runtime._models_lock = _ThenRun(lambda: runtime.unload_model("m", "2"), registered)  # type: ignore[assignment]
    meta = runtime.register_model("m", _wide_model(), version="2")
    assert meta.versions == (("1", "2") if first else ("2",))
    assert meta.inputs[0].shape == (-1, 8)  # version 2's
    assert runtime.registry.names() == (["m"] if first else [])
