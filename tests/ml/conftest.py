"""Fixtures of the runtime tests: a hub with the ml plugin, numpy models, a served runtime."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import foundation_core
from foundation_core import Hub
from foundation_ml import FunctionModel, InferenceClient, MLRuntime
from foundation_ml import _plugin as ml_plugin
from foundation_ml._client import registered_hub
from foundation_ml._process import shm_entries

_names = itertools.count()


class Replies:
    """Collects the answers handed to respond callbacks, by request id; ``wait(n)`` until n arrived."""

    def __init__(self) -> None:
        self.got: dict[int, object] = {}
        self.cond = threading.Condition()

    def respond(self, rid: int) -> Callable[[object], None]:
        def respond(value: object) -> None:
            with self.cond:
                assert rid not in self.got, "responded twice"
                self.got[rid] = value
                self.cond.notify_all()

        return respond

    def wait(self, n: int) -> dict[int, object]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout=60)
        return self.got


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{os.getpid()}_{next(_names)}"


@pytest.fixture
def hub() -> Iterator[Hub]:
    """A started hub with only foundation_ml's own plugin (no entry points: deterministic)."""
    with foundation_core.start(plugins=[ml_plugin], entry_points=False) as h:
        yield h


@pytest.fixture
def runtime(hub: Hub, name: str) -> Iterator[MLRuntime]:
    """A runtime on ``hub``; closed before ``name``'s check that /dev/shm holds nothing of it."""
    rt = MLRuntime(hub)
    yield rt
    rt.close()


def affine_model() -> FunctionModel:
    """``y = 2x + 1`` row-wise, ``FP32[-1, 4] -> FP32[-1, 4]``: batchable."""
    return FunctionModel(
        lambda x: {"y": x * 2 + 1}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
    )


@pytest.fixture
def served(runtime: MLRuntime) -> Iterator[InferenceClient]:
    """The affine model as "affine", served on inproc; yields a client."""
    runtime.register_model("affine", affine_model())
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        yield client


@pytest.fixture
def name() -> Iterator[str]:
    """A server name no other test (or process) uses; when the test is over (its runtime closed,
    its server processes stopped) nothing named after it may be left in /dev/shm."""
    value = unique_name()
    yield value
    assert shm_entries(value) == [], f"test left shared memory behind: {shm_entries(value)}"


@pytest.fixture
def rows() -> object:
    """``rows(n, start)``: an ``FP32[n, 4]`` array of distinct values."""

    def make(n: int, start: float = 0.0) -> np.ndarray:
        return (np.arange(n * 4).reshape(n, 4) + start).astype(np.float32)

    return make


@pytest.fixture
def concurrently() -> object:
    """``concurrently(fn, n)``: run ``fn(k)`` for k in 0..n-1, each in its own thread, and return
    what they raised (an empty list when every call returned)."""

    def run(fn: Callable[[int], None], n: int) -> list[BaseException]:
        errors: list[BaseException] = []

        def guarded(k: int) -> None:
            try:
                fn(k)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors

    return run


@pytest.fixture(scope="module")
def shm_hub() -> Hub:
    """A hub with every installed plugin registered; skips where no shm transport is installed."""
    hub = registered_hub()
    if "shm" not in hub.transports:
        pytest.skip("no 'shm' transport is registered (install transports/shm: foundation-shm)")
    return hub
