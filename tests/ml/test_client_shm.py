"""``InferenceClient`` over shm, against a server in its own process: calls that return copies
(``copy=True``, every ``ainfer``) keep none of the server's channels; ``copy=False`` keeps the
documented rule (a thread's views stay its own until its next call)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import InferenceClient


@pytest.fixture
def echo(shm_hub: Hub, name: str) -> Iterator[str]:
    """An shm echo server with 8 channels, in a process of its own; yields its name."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_shm._echo", name, "--channels", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
        yield name
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _kept(client: InferenceClient) -> int:
    """How many channels the shm client keeps for threads' output views."""
    return sum(1 for box in client._client._pool._holders if box[0] is not None)  # type: ignore[attr-defined]


def _claimed(client: InferenceClient) -> int:
    return len(client._client._all)  # type: ignore[attr-defined]


@pytest.mark.parametrize("copy", [True, False])
def test_concurrent_ainfer_calls_keep_no_channels(echo: str, shm_hub: Hub, copy: bool) -> None:
    """Each of ``ainfer``'s 64 threads kept the channel of its last call (views it then copied):
    40 calls took every channel of the 8-channel server, some failed ``Overloaded``, and no other
    client could connect. The outputs are now copied by the shm client, which gives the channel
    back: one client holds at most its ``channels`` once the calls are done."""

    async def calls(client: InferenceClient) -> list[Any]:
        xs = [np.full(8, i, np.float32) for i in range(40)]
        return await asyncio.gather(*(client.ainfer("echo", {"x": x}) for x in xs), return_exceptions=True)

    with InferenceClient(echo, transport="shm", hub=shm_hub, copy=copy, channels=2) as client:
        answers = asyncio.run(calls(client))
        for i, answer in enumerate(answers):
            assert isinstance(answer, dict), repr(answer)
            assert answer["x"].flags.owndata and answer["x"].flags.writeable
            np.testing.assert_array_equal(answer["x"], np.full(8, i, np.float32))
        assert _kept(client) == 0
        assert _claimed(client) <= 2
        with InferenceClient(echo, transport="shm", hub=shm_hub, channels=1) as other:
            np.testing.assert_array_equal(other.infer("echo", {"x": np.ones(3, np.float32)})["x"], 1)


def test_infer_with_copy_keeps_no_channel_and_without_copy_keeps_the_threads_views(
    echo: str, shm_hub: Hub
) -> None:
    """``copy=True`` (the default): 12 live threads calling once each keep none of the server's 8
    channels (each kept the channel of its views, then copied them: 12 threads needed 12). With
    ``copy=False`` each thread keeps its channel, and its views stay its own while others call."""
    with InferenceClient(echo, transport="shm", hub=shm_hub, channels=2) as client:
        views = InferenceClient(echo, transport="shm", hub=shm_hub, copy=False, channels=1)
        called, checked = threading.Barrier(13), threading.Event()
        got: dict[int, Any] = {}

        def call(i: int) -> None:
            try:
                x = np.full(4, float(i), np.float32)
                got[i] = (views if i < 3 else client).infer("echo", {"x": x}, timeout=30)["x"]
            except BaseException as exc:
                got[i] = exc
            called.wait(30)
            checked.wait(30)  # alive until checked: a thread's end gives a kept channel back

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        called.wait(30)
        try:
            for i in range(12):
                assert type(got[i]) is np.ndarray, got[i]
                np.testing.assert_array_equal(got[i], float(i))
                assert got[i].flags.writeable == (i >= 3)  # copies; views on shared memory
            assert _kept(client) == 0 and _claimed(client) <= 2
            assert _kept(views) == 3  # one per thread that holds views
        finally:
            checked.set()
            for t in threads:
                t.join()
            views.close()
