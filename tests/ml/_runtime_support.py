"""Models, backends and interrupters the runtime tests share (test_runtime*.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

import foundation_core
from foundation_core import hookimpl
from foundation_ml import (
    FunctionModel,
    InferenceRequest,
    LoadedModel,
    MLRuntime,
    ModelBackend,
    parse_signature,
)
from foundation_ml import _plugin as ml_plugin


def call(runtime: MLRuntime, request: InferenceRequest) -> object:
    """Call the handler directly, as a transport does; return what it responded."""
    got: list[object] = []
    runtime(request, got.append)
    assert len(got) == 1, "the handler must respond exactly once"
    return got[0]


class _OneAtATime(FunctionModel):
    """An identity model that need not be thread-safe: it counts its calls and the calls that
    began while another ran; ``gate`` (when set) holds the first call until ``release``."""

    def __init__(self, gate: bool = False) -> None:
        super().__init__(self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.calls = self.overlaps = 0
        self.running = False
        self.entered, self.release = threading.Event(), threading.Event()
        self.gate = gate

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.overlaps += self.running
        self.running = True
        try:
            if self.gate and not self.entered.is_set():
                self.entered.set()
                assert self.release.wait(60), "never released"
            return x
        finally:
            self.running = False


def _registering(
    runtime: MLRuntime, name: str, model: LoadedModel
) -> tuple[threading.Thread, list[BaseException]]:
    """``runtime.register_model(name, model)`` started in a thread of its own, and the list that
    gets what it raised."""
    failed: list[BaseException] = []

    def register() -> None:
        try:
            runtime.register_model(name, model)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    return thread, failed


def _request(rid: int) -> InferenceRequest:
    return InferenceRequest("a", {"x": np.zeros((1, 4), np.float32)}, id=rid)


class _InterruptAt:
    """A lock whose ``at``-th acquisition raises KeyboardInterrupt first (a Ctrl-C landing just
    before that ``with``)."""

    def __init__(self, at: int) -> None:
        self._lock = threading.Lock()
        self._left = at

    def __enter__(self) -> None:
        self._left -= 1
        if self._left == 0:
            raise KeyboardInterrupt
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _CountsCloses(FunctionModel):
    def __init__(self) -> None:
        super().__init__(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def _interrupted_once(target: Any, attr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``target.attr`` raises KeyboardInterrupt the first time it is called, as it is called."""
    real = getattr(target, attr)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(target, attr, real)
        raise KeyboardInterrupt

    monkeypatch.setattr(target, attr, interrupted)


class _Linear(LoadedModel):
    """A backend's model: ``y = x @ w`` (FP32[-1, 2] -> FP32[-1, 2])."""

    platform = "numpy"

    def __init__(self, *, signature: bool = True, answer: str = "dict") -> None:
        if signature:
            self.inputs = parse_signature({"x": "FP32[-1, 2]"})
            self.outputs = parse_signature({"y": "FP32[-1, 2]"})
        self.answer = answer

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        y = inputs["x"] * 2
        return y if self.answer == "array" else {"y": y}


class _WeightsBackend(ModelBackend):
    """Takes a dict of weights (``accepts``) or any string; what it loads is set per test."""

    name = "weights"
    make: Callable[[], object] = _Linear

    @classmethod
    def accepts(cls, obj: object) -> bool:
        return isinstance(obj, dict) and "w" in obj

    def load(self, spec: Any, *, name: str, **options: Any) -> Any:
        return type(self).make()


def _backend_hub(make: Callable[[], object] = _Linear) -> Any:
    """A hub with the ml plugin and ``weights`` registered lazily, as plugins.md tells plugins to."""

    class Backend(_WeightsBackend):
        pass

    Backend.make = staticmethod(make)  # type: ignore[assignment]
    globals()["_LazyBackend"] = Backend

    class Plugin:
        @hookimpl
        def foundation_register_model_backends(self, register: Any) -> None:
            register("weights", f"{__name__}:_LazyBackend")

    return foundation_core.start(plugins=[ml_plugin, Plugin()], entry_points=False)
