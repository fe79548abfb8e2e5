"""A served model holds no more memory after thousands of requests than after the first ones.

A long-running server must not keep something per request (a latency sample, an error, a
request id, a batch): over days that is an out-of-memory kill. A soak of a batched torch server
over shm (millions of requests) found the process's memory flat once warm; these tests hold the
runtime to it with counts, not timings. After a warm-up, the Python allocations made from
foundation's own code and still alive after a run of requests (served, batched, failed, with
``stats()`` read between them) are measured for a short run and for a run four times as long:
what one run keeps (about 10 kB here: numpy's own caches, reached through our calls) is the same
for both, where one object kept per request would make the long run keep thousands more.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from foundation_ml import InferenceClient, MLRuntime
from foundation_ml.errors import InvalidInput, ModelNotFound

from .conftest import affine_model, unique_name

SHORT, LONG = 1000, 4000  # requests of the two measured runs: one object a request is 3000 more
THREADS = 4  # callers at once: batches of several requests form
MORE_BYTES = 16 * 1024  # what the long run may keep beyond the short one's (measured: +-3 kB)
MORE_OBJECTS = (LONG - SHORT) // 10  # measured: +-40; one object kept per 10 requests fails


def _traffic(client: InferenceClient, runtime: MLRuntime, n: int, concurrently: Any) -> None:
    """``n`` requests from ``THREADS`` threads: served ones, and now and then one refused (a bad
    shape, an unknown model), with ``stats()`` read as a monitor would."""
    x = np.ones((1, 4), np.float32)
    bad = np.ones((1, 5), np.float32)

    def caller(k: int) -> None:
        for i in range(k, n, THREADS):
            if i % 50 == 7:
                with pytest.raises(InvalidInput):
                    client.infer("affine", {"x": bad})
            elif i % 50 == 9:
                with pytest.raises(ModelNotFound):
                    client.infer("nosuch", {"x": x})
            elif i % 200 == 11:
                runtime.stats()
            else:
                y = client.infer("affine", {"x": x})["y"]
                assert y[0, 0] == 3.0

    errors = concurrently(caller, THREADS)
    assert not errors, errors


def _ours(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """The allocations made from foundation's own code (the runtime, the core, the transports)."""
    return snapshot.filter_traces(
        [
            tracemalloc.Filter(True, "*foundation_ml*"),
            tracemalloc.Filter(True, "*foundation_core*"),
        ]
    )


def _kept_while(run: Callable[[], None]) -> tuple[int, int, list[str]]:
    """(bytes, objects) allocated from our code during ``run()`` and still alive after it, and the
    top lines (to say where, should the test fail)."""
    gc.collect()
    tracemalloc.start(5)
    try:
        before = _ours(tracemalloc.take_snapshot())
        run()
        gc.collect()
        after = _ours(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    diff = [d for d in after.compare_to(before, "traceback") if d.size_diff > 0 or d.count_diff > 0]
    size = sum(d.size_diff for d in diff if d.size_diff > 0)
    count = sum(d.count_diff for d in diff if d.count_diff > 0)
    top = [
        f"{d.size_diff:+} B {d.count_diff:+} objects at {d.traceback.format()[-1].strip()}" for d in diff[:5]
    ]
    return size, count, top


@pytest.mark.parametrize("max_batch_size", [1, 4], ids=["unbatched", "batched"])
def test_thousands_of_requests_keep_no_memory_in_the_runtime(
    max_batch_size: int, runtime: MLRuntime, concurrently: Any
) -> None:
    runtime.register_model("affine", affine_model(), max_batch_size=max_batch_size, max_wait_us=200)
    name = unique_name()
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        _traffic(client, runtime, 2 * LONG, concurrently)  # warm: first-use caches, the latency window filled
        short = _kept_while(lambda: _traffic(client, runtime, SHORT, concurrently))
        long = _kept_while(lambda: _traffic(client, runtime, LONG, concurrently))
    more_bytes, more_objects = long[0] - short[0], long[1] - short[1]
    assert more_bytes <= MORE_BYTES and more_objects <= MORE_OBJECTS, (more_bytes, more_objects, short, long)
    stats = runtime.stats()["models"]["affine"]
    assert stats["requests"] >= (2 * LONG + SHORT + LONG) * 0.9  # the traffic ran: most reached the model
    if max_batch_size > 1:
        assert max(int(k) for k in stats["batch_sizes"]) > 1  # and batches of several formed
