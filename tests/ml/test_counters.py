"""``ClientCounters``, ``TransportClient.counters`` and ``InferenceClient.counters``: what a client
did on its own to keep calls going (reconnects, resends) reaches an application through the
transport-agnostic client, whatever the transport; a transport that never reconnects counts
nothing; the value refuses what is not a count, by name."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import (
    ClientCounters,
    InferenceClient,
    InferenceRequest,
    InferenceResponse,
    TransportClient,
)

X = np.ones((1, 4), np.float32)


def test_a_new_value_is_zeros_and_frozen() -> None:
    counts = ClientCounters()
    assert (counts.reconnects, counts.resends) == (0, 0)
    assert ClientCounters(2, 1) == ClientCounters(reconnects=2, resends=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        counts.resends = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"reconnects": -1}, ValueError, r"ClientCounters.reconnects must be 0 or more, not -1"),
        ({"resends": 1.0}, TypeError, r"ClientCounters.resends must be an int, not float 1.0"),
        ({"resends": True}, TypeError, r"ClientCounters.resends must be an int, not bool True"),
        ({"reconnects": "3"}, TypeError, r"ClientCounters.reconnects must be an int, not str '3'"),
    ],
)
def test_what_is_not_a_count_is_refused_naming_the_field(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ClientCounters(**kwargs)


class _Plain(TransportClient):
    """A transport client of a third party's that never reconnects: no ``counters`` of its own."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        return InferenceResponse(request.id, request.model, dict(request.inputs))

    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        return {}

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def test_a_transport_client_that_never_reconnects_counts_nothing_by_default() -> None:
    client = _Plain()
    client.infer(InferenceRequest("m", {"x": X}))
    assert client.counters() == ClientCounters()


def test_an_inproc_inference_client_counts_nothing(served: InferenceClient) -> None:
    for _ in range(3):
        served.infer("affine", {"x": X})
    assert served.counters() == ClientCounters()
    served.close()
    assert served.counters() == ClientCounters()  # read after close too


def _echo_server(name: str) -> subprocess.Popen[str]:
    """An shm echo server called ``name`` in a process of its own, once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_shm._echo", name, "--channels", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.communicate()[1]
    return proc


@pytest.fixture
def echo_processes(shm_hub: Hub, name: str) -> Iterator[list[subprocess.Popen[str]]]:
    """The echo servers a test starts (the list it appends to), each stopped at its end."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # graceful: the server removes its objects
        proc.communicate(timeout=60)


@pytest.mark.slow
def test_an_shm_inference_client_shows_its_servers_restarts(
    shm_hub: Hub, name: str, echo_processes: list[subprocess.Popen[str]]
) -> None:
    """A crash (SIGKILL) and a graceful stop (SIGTERM), each followed by a server started under
    the name: every call is answered, and only the counts show what happened (spec 10.5)."""
    echo_processes.append(_echo_server(name))
    with InferenceClient(name, transport="shm", hub=shm_hub, timeout=30) as client:
        np.testing.assert_array_equal(client.infer("echo", {"x": X})["x"], X)
        assert client.counters() == ClientCounters()
        for sig, counts in ((signal.SIGKILL, ClientCounters(1, 1)), (signal.SIGTERM, ClientCounters(2, 2))):
            echo_processes[-1].send_signal(sig)
            echo_processes[-1].communicate(timeout=60)
            echo_processes.append(_echo_server(name))
            np.testing.assert_array_equal(client.infer("echo", {"x": X})["x"], X)
            assert client.counters() == counts, sig.name
    assert client.counters() == ClientCounters(2, 2)  # a closed client keeps its counts
