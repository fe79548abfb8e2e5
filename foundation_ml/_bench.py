"""The inference benchmark: the demo MLP called directly vs through a transport, latency and throughput.

Everything runs in one invocation so the figures share the machine's state. Interleaved in
rounds (medians of the rounds' p50s; p99 over every call of every round): the spin floor (two
processes ping-ponging on a shared 8-byte word), the direct in-process PyTorch call at batch 1
and on a full batch, the runtime in-process (``inproc``) and a ``foundation serve`` child
process called over the transport at batch 1. Then throughput with N client processes against
an unbatched and a batched server, and the direct call's rate (alone, and on a full batch)
measured just before and just after the batched run: the batched rate is compared with their
mean. The direct call on a full batch gives ``batched_ceiling_rps``: the rows/s of the model
alone at that batch size, the most that one serving thread can answer however little the
transport costs.

This module holds the run itself. What it measures with is in ``_bench_measure``; how a run
ends cleanly and reaps its workers is in ``_bench_process`` (both re-exported here, as every
benchmark program imports them from this module: ``benchmarks/_common.py`` re-exports them).
The throughput clients are in ``_bench_throughput``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._bench_measure import (
    FLOOR_BUDGET_S,
    ROUNDS,
    _latency,
    _timed,
    _with_and_without_spinner,
    direct_call,
    mean_batch_size,
    rate,
    spin_floor,
    timer_overhead_ns,
)
from ._bench_process import (
    WORKER_START_TIMEOUT,
    BenchmarkFailed,
    Terminated,
    check_transport,
    cpu_ns,
    sigterm_exits,
    stdout_to_stderr,
)
from ._bench_throughput import _throughput
from ._parent_death import die_with_parent
from ._plugin import DEMO_MODEL

if TYPE_CHECKING:
    from foundation_core import Hub

    from ._process import ServerProcess

__all__ = [
    "FLOOR_BUDGET_S",
    "ROUNDS",
    "WORKER_START_TIMEOUT",
    "BenchmarkFailed",
    "Terminated",
    "bench_main",
    "check_transport",
    "cpu_ns",
    "die_with_parent",
    "direct_call",
    "mean_batch_size",
    "rate",
    "run",
    "sigterm_exits",
    "spin_floor",
    "stdout_to_stderr",
    "timer_overhead_ns",
]


def _interleaved(
    calls_of: dict[str, Any], arg: Any, calls: int, seconds: float, rated: Sequence[str], floor: int = 20000
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Latency (see ``_latency``) of each call and of the spin floor (``"floor"``, ``floor``
    round trips in all), and the rate (calls/s, median over the rounds) of each call in
    ``rated``, measured in ``ROUNDS`` rounds that each measure everything once, in a rotating
    order. This VM's speed drifts by up to ~1.7x over seconds (the host's other tenants): a
    figure measured first and the one it is compared with measured later would compare two
    machines, so the targets' numerators and denominators are all taken in the same rounds."""
    names = ["floor", *calls_of]
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    rates: dict[str, list[float]] = {n: [] for n in rated}
    for r in range(ROUNDS):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            if n == "floor":
                samples[n].append(spin_floor(max(1, floor // ROUNDS)))
                continue
            samples[n].append(_timed(calls_of[n], arg, max(1, calls // ROUNDS)))
            if n in rates:
                rates[n].append(rate(calls_of[n], arg, seconds / ROUNDS))
    return (
        {n: _latency(v) for n, v in samples.items()},
        {n: round(float(np.median(v)), 1) for n, v in rates.items()},
    )


@contextlib.contextmanager
def _serving(serve_args: list[str]) -> Iterator[ServerProcess]:
    """A ``foundation serve`` child process, stopped however the block ends (a start that SIGTERM
    cuts short is stopped by ``ServerProcess.start`` itself, which also removes what it left)."""
    from ._process import ServerProcess

    server = ServerProcess(serve_args)
    try:
        yield server.start()
    finally:
        if server.proc is not None and server.returncode is None:
            server.stop()


def _direct_rates(
    direct: Callable[[Any], Any], full: Callable[[Any], Any], x: Any, seconds: float
) -> np.ndarray:
    """(calls/s of the direct call, calls/s of the direct call on a full batch), ``seconds`` in all."""
    return np.array([rate(direct, x, seconds / 2), rate(full, x, seconds / 2)])


def run(
    transport: str = "shm",
    calls: int = 3000,
    seconds: float = 2.0,
    clients: int = 4,
    max_batch_size: int = 0,
    max_wait_us: int = 200,
    threads: int = 1,
) -> dict[str, Any]:
    """Run every measurement; returns the result document. ``threads`` 0: torch's default."""
    import torch
    from foundation_torch.demo import build_demo

    check_transport(transport)
    # closed loop: with N clients at most N requests are ever queued, so a batch of N is full
    max_batch_size = max_batch_size or clients
    model = build_demo()
    direct, x = direct_call(model, threads)
    xb = direct_call(model, threads, rows=max_batch_size)[1]  # a full batch, called directly

    def direct_batch(a: np.ndarray) -> np.ndarray:
        return direct(xb)  # type: ignore[no-any-return]

    result: dict[str, Any] = {
        "transport": transport,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "timer_overhead_ns": round(timer_overhead_ns(), 1),
    }
    name = f"bench_{os.getpid()}"
    base = ["--transport", transport, "--name", name, "--threads", str(threads)]
    # The throughput clients run with the client's defaults: its adaptive spin blocks at once
    # when most spins run out (more client processes than cores), and measured here it did as
    # well or better than forcing spin_us=0 (4 clients, unbatched: 12.4k and 14.5k req/s
    # against 9.9k and 11.3k, interleaved).
    crowd: dict[str, Any] = {}
    result["throughput_client_options"] = crowd
    direct_calls = {"direct": direct, "direct_batch": direct_batch}
    rounds, unbatched = _unbatched_run(
        model, direct_calls, x, base, name, transport, calls, seconds, clients, crowd
    )
    result.update(rounds)
    batched = [*base, "--max-batch-size", str(max_batch_size), "--max-wait-us", str(max_wait_us)]
    figures, served = _batched_run(
        direct_calls, x, batched, name, transport, clients, seconds, crowd, max_batch_size
    )
    result.update(figures)
    # CPU time per request (µs) in the throughput runs, from the scheduler's accounting: a
    # client's own thread, and every thread of the server. Spinning counts; so does the kernel's
    # work to block and wake a process (~30 µs a request here, measured).
    result["cpu_us_per_request"] = {
        label: {"client": round(got["client_us"], 1), "server": round(got["server_us"], 1)}
        for label, got in (("unbatched", unbatched), ("batched", served))
    }
    # the batches of the measured run only: the workers' warm-up calls came before it
    result["batched_mean_batch_size"] = served["mean_batch_size"]
    result["batching"] = {"max_batch_size": max_batch_size, "max_wait_us": max_wait_us}
    # the direct call while another process spins on the other CPU, as a waiting client does,
    # and while that process is stopped, alternating: does a spinning client slow the model?
    result["direct_p50_us_peer_spinning"], result["direct_p50_us_peer_stopped"] = _with_and_without_spinner(
        lambda: float(np.percentile(_timed(direct, x, max(1, calls // ROUNDS)), 50))
    )
    result.update(_targets(result, transport, clients, max_batch_size))
    return result


def _unbatched_run(
    model: Any,
    direct_calls: dict[str, Callable[[Any], Any]],
    x: Any,
    serve_args: list[str],
    name: str,
    transport: str,
    calls: int,
    seconds: float,
    clients: int,
    crowd: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Against an unbatched ``foundation serve`` child and the runtime in-process: the rounds'
    figures (the floor, the direct calls, ``inproc`` and the transport at batch 1) and the
    throughput of ``clients`` clients (also returned whole, for its CPU figures)."""
    from ._client import InferenceClient
    from ._runtime import MLRuntime

    with _serving(serve_args) as server, MLRuntime() as runtime:
        runtime.register_model(DEMO_MODEL, model)
        runtime.start("inproc", name)
        with (
            InferenceClient(name, transport="inproc", hub=runtime.hub) as local,
            InferenceClient(name, transport=transport) as remote,
        ):
            calls_of = {
                **direct_calls,
                "inproc": lambda a: local.infer(DEMO_MODEL, {"x": a}),
                transport: lambda a: remote.infer(DEMO_MODEL, {"x": a}),
            }
            lat, rates = _interleaved(calls_of, x, calls, seconds, rated=("direct", "inproc", transport))
        figures = _round_figures(lat, rates, transport)
        unbatched = _throughput(name, transport, clients, seconds, crowd, server.pid)
        figures[f"{transport}_rps_{clients}_clients_unbatched"] = round(unbatched["rps"], 1)
    return figures, unbatched


def _batched_run(
    direct_calls: dict[str, Callable[[Any], Any]],
    x: Any,
    serve_args: list[str],
    name: str,
    transport: str,
    clients: int,
    seconds: float,
    crowd: dict[str, Any],
    max_batch_size: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Against a batching ``foundation serve`` child: the throughput of ``clients`` clients (also
    returned whole, for its CPU figures and batch sizes), and the direct call's rates (alone and
    on a full batch) that it is compared with."""
    # The direct call's rates just before and just after the batched run, with no server
    # running, averaged: the batched rate is compared with what the machine gave the direct call
    # around it (this VM's speed drifts within seconds; the rounds above were a while ago).
    direct, direct_batch = direct_calls["direct"], direct_calls["direct_batch"]
    around = _direct_rates(direct, direct_batch, x, seconds)
    with _serving(serve_args) as server:
        served = _throughput(name, transport, clients, seconds, crowd, server.pid)
    after = _direct_rates(direct, direct_batch, x, seconds)
    mean = (around + after) / 2
    figures = {
        f"{transport}_rps_{clients}_clients_batched": round(served["rps"], 1),
        "direct_rps_before_batched": round(around[0], 1),
        "direct_rps_after_batched": round(after[0], 1),
        "direct_rps": round(float(mean[0]), 1),
        # the model alone on a full batch: the most rows/s one serving thread can answer with
        # batching, whatever the transport costs (around the batched run, as direct_rps)
        "batched_ceiling_rps": round(float(mean[1]) * max_batch_size, 1),
    }
    return figures, served


def _round_figures(
    lat: dict[str, dict[str, float]], rates: dict[str, float], transport: str
) -> dict[str, Any]:
    """The result's figures from the interleaved rounds."""
    return {
        # the floor in the same rounds as the calls it is the target's unit for; each of its
        # samples includes one timer read (timer_overhead_ns), not subtracted
        "floor_spin_p50_us": lat["floor"]["p50"],
        "floor_spin_p99_us": lat["floor"]["p99"],
        # p99s: over every call of every round, pooled (see _latency)
        "direct_p50_us": lat["direct"]["p50"],
        "direct_p99_us": lat["direct"]["p99"],
        "direct_rps_rounds": rates["direct"],
        "direct_batch_p50_us": lat["direct_batch"]["p50"],
        "inproc_p50_us": lat["inproc"]["p50"],
        f"{transport}_p50_us": lat[transport]["p50"],
        f"{transport}_p99_us": lat[transport]["p99"],
        f"{transport}_p99_us_median_of_rounds": lat[transport]["p99_median_of_rounds"],
        f"{transport}_rps_1_client": rates[transport],
        "rounds": ROUNDS,
    }


def _targets(result: dict[str, Any], transport: str, clients: int, max_batch_size: int) -> dict[str, Any]:
    """The figures the targets are judged by, from the measured ones: the latency overhead
    against 10 spin floors, the batched rate against twice the direct one, the cycle."""
    floor, p50 = result["floor_spin_p50_us"], result[f"{transport}_p50_us"]
    batched_rps = result[f"{transport}_rps_{clients}_clients_batched"]
    ratio = batched_rps / result["direct_rps"]
    return {
        "latency_overhead_us": round(p50 - result["direct_p50_us"], 2),
        "latency_target_met": p50 <= result["direct_p50_us"] + 10 * floor,
        "batched_rps_over_direct": round(ratio, 2),
        "batched_rps_over_ceiling": round(batched_rps / result["batched_ceiling_rps"], 2),
        **_cycle(result, batched_rps, max_batch_size),
        "throughput_target_met": ratio >= 2.0,
    }


def _cycle(result: dict[str, Any], batched_rps: float, max_batch_size: int) -> dict[str, float]:
    """The closed loop's cycle. With as many clients as a batch holds, each waits for the batch
    its request is in, so nothing overlaps the model: one cycle is the model on a batch plus
    everything else (the answers, waking the clients, their next requests, the batch filling).
    ``batched_cycle_overhead_us`` is that everything else, measured; ``target_cycle_overhead_us``
    is what it may take for the batched rate to be twice the direct one (full batches): negative
    when the model alone on a batch is slower than two direct calls, so that no transport could
    meet the target (the overhead too may measure below 0 on a noisy machine)."""
    batch, ceiling = result["batched_mean_batch_size"] or 1.0, result["batched_ceiling_rps"]
    cycle = batch / batched_rps * 1e6
    budget = (max_batch_size / (2 * result["direct_rps"]) - max_batch_size / ceiling) * 1e6
    return {
        "batched_cycle_us": round(cycle, 1),
        "batched_cycle_overhead_us": round(cycle - batch / ceiling * 1e6, 1),
        "target_cycle_overhead_us": round(budget, 1),
    }


def bench_main(args: argparse.Namespace, hub: Hub | None = None) -> int:
    """``foundation bench`` (and ``benchmarks/inference.py``): run, print the result. SIGTERM
    stops the run cleanly; with ``--json`` stdout holds the one JSON object and nothing else. A
    run that cannot measure raises ``BenchmarkFailed`` (the CLI names it, exit 1); a
    ``--transport`` that is not installed or does not cross processes is a usage error, named
    before anything starts (exit 2, as ``serve``, ``infer`` and ``stats`` refuse it)."""
    try:
        check_transport(args.transport)
    except BenchmarkFailed as exc:
        prog = "foundation bench" if hub is not None else Path(sys.argv[0]).name
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    with sigterm_exits(), stdout_to_stderr() if args.json else contextlib.nullcontext():
        result = run(
            args.transport,
            args.calls,
            args.seconds,
            args.clients,
            args.max_batch_size,
            args.max_wait_us,
            args.threads,
        )
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0
