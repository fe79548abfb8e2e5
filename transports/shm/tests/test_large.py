"""100 MB tensors, copied in or written through a loan."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
from foundation_shm._server import ShmServer

from foundation_ml import DataType, InferenceRequest

pytestmark = pytest.mark.slow
N = 25_000_000  # float32: 100 MB


@pytest.fixture
def server(name: str) -> Iterator[ShmServer]:
    srv = ShmTransport().serve(name, EchoHandler())
    yield srv
    srv.stop()


def test_a_100_mb_tensor_round_trips(server: ShmServer, name: str) -> None:
    x = np.random.default_rng(1).random(N, dtype=np.float32)
    with ShmTransport().connect(name) as client:
        out = client.infer(InferenceRequest("echo", {"x": x}), timeout=60).outputs["x"]
        assert out.shape == x.shape and np.array_equal(out, x)
        del out


def test_a_100_mb_loan_round_trips(server: ShmServer, name: str) -> None:
    with ShmTransport().connect(name) as client, client.loan("echo", {"x": (DataType.FP32, (N,))}) as loan:
        loan["x"][:] = 3.0
        loan["x"][-1] = 7.0
        out = loan.infer(timeout=60).outputs["x"]
        assert out[0] == 3.0 and out[-1] == 7.0 and out.shape == (N,)
        del out
