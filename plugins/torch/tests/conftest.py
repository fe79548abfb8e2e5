"""Fixtures of the torch backend tests: a runtime whose hub has the ml and torch plugins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from foundation_torch import plugin as torch_plugin

import foundation_core
from foundation_core import Hub
from foundation_ml import MLRuntime
from foundation_ml import _plugin as ml_plugin


@pytest.fixture
def hub() -> Iterator[Hub]:
    with foundation_core.start(plugins=[ml_plugin, torch_plugin], entry_points=False) as h:
        yield h


@pytest.fixture
def runtime(hub: Hub) -> Iterator[MLRuntime]:
    rt = MLRuntime(hub)
    yield rt
    rt.close()
