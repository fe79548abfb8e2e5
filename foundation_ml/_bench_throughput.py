"""The benchmark's throughput: client processes calling a server in a closed loop, started together."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

from ._bench_measure import mean_batch_size
from ._bench_process import WORKER_START_TIMEOUT, _gather, _stop_workers, cpu_ns
from ._parent_death import die_with_parent
from ._plugin import DEMO_MODEL

__all__ = ["_throughput"]


def _client_worker(
    index: int,
    parent: int,
    name: str,
    transport: str,
    seconds: float,
    go: Any,
    results: Any,
    options: dict[str, Any],
) -> None:
    """One throughput client (a process of its own): connect, warm up, report ``ready``, wait
    for ``go`` (never longer than ``WORKER_START_TIMEOUT``), call in a closed loop for
    ``seconds``, report ``done`` with its count, its time and its thread's CPU time; or report
    ``error`` with what went wrong."""
    die_with_parent(parent)
    from ._client import InferenceClient
    from ._signature import example_inputs, parse_signature

    try:
        with InferenceClient(name, transport=transport, **options) as client:
            x = example_inputs(parse_signature(client.metadata(DEMO_MODEL)["inputs"]))
            for _ in range(100):
                client.infer(DEMO_MODEL, x)
            results.put(("ready", index))
            if not go.wait(WORKER_START_TIMEOUT):
                results.put(("error", index, f"no start signal within {WORKER_START_TIMEOUT:.0f} s"))
                return
            n, end = 0, time.perf_counter() + seconds
            t0, cpu0 = time.perf_counter(), time.thread_time_ns()
            while True:  # one call at least: none made the run's figures a division by zero
                client.infer(DEMO_MODEL, x)
                n += 1
                if time.perf_counter() >= end:
                    break
            results.put(("done", index, n, time.perf_counter() - t0, time.thread_time_ns() - cpu0))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
        raise


def _throughput(
    name: str,
    transport: str,
    clients: int,
    seconds: float,
    options: dict[str, Any] | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """``clients`` client processes calling in a closed loop for ``seconds``, started together
    once all have warmed up: ``rps`` (requests/s), ``client_us`` and ``server_us`` (CPU µs per
    request; the server's only if ``server_pid`` is given) and ``mean_batch_size`` (of the
    batches the server ran meanwhile). A worker that fails or dies fails the run at once."""
    from ._client import InferenceClient

    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()  # the workers start with this process
    procs = [
        ctx.Process(
            target=_client_worker,
            args=(i, os.getpid(), name, transport, seconds, go, results, options or {}),
            daemon=True,
        )
        for i in range(clients)
    ]
    finished = False
    try:
        for p in procs:
            p.start()
        _gather(results, procs, "ready", WORKER_START_TIMEOUT)
        with InferenceClient(name, transport=transport) as probe:
            before = probe.stats()["models"][DEMO_MODEL]
            server0 = cpu_ns(server_pid) if server_pid else 0
            go.set()
            got = list(_gather(results, procs, "done", seconds + 60).values())
            server_ns = cpu_ns(server_pid) - server0 if server_pid else 0
            after = probe.stats()["models"][DEMO_MODEL]
        finished = True
    finally:
        _stop_workers(procs, finished)
    requests = sum(n for n, _, _ in got)
    return {
        "rps": requests / max(t for _, t, _ in got),
        "client_us": sum(c for _, _, c in got) / requests / 1e3,
        "server_us": server_ns / requests / 1e3,
        "mean_batch_size": mean_batch_size(before, after),
    }
