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

It also holds what every benchmark program uses to end cleanly (``benchmarks/_common.py``
re-exports it): SIGTERM raising ``SystemExit`` so that servers, client workers and shared memory
are released, and stdout kept for the one JSON object of ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_core.errors import FoundationError

from ._plugin import DEMO_MODEL

if TYPE_CHECKING:
    from foundation_core import Hub

    from ._process import ServerProcess

__all__ = [
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
    "stdout_to_stderr",
    "timer_overhead_ns",
]

# transports whose clients must live in the server's process: the benchmark's clients do not
SAME_PROCESS_TRANSPORTS = frozenset({"inproc"})
WORKER_START_TIMEOUT = 120.0  # s: spawning a client process, its imports, connecting, warming up


class BenchmarkFailed(FoundationError):
    """A benchmark could not measure what it set out to (a worker died, a server did not start,
    a transport that cannot serve it): its run fails, naming why, rather than report figures."""


# --- ending cleanly --------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived (inside ``sigterm_exits``). It unwinds like ``SystemExit``, which it
    becomes when it leaves ``sigterm_exits``; on the way it is no ``SystemExit``, which some code
    catches on purpose (the hub isolates a plugin whose import calls ``sys.exit()``: a SIGTERM
    landing in that import would be taken for the plugin's and swallowed)."""


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM (what ``timeout``, a CI cancel and nox send) raises ``Terminated``
    in this process, so that its with-blocks and finally clauses stop the servers and client
    workers it started and release their shared memory (Python's default ends the process on
    the spot and leaves them behind); it leaves this block as ``SystemExit(143)``. A second
    SIGTERM gets the default action, as in ``foundation serve``. A process forked from this one
    leaves at once instead: it must not run its parent's clean-up."""
    me, received = os.getpid(), []

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != me:
            os._exit(128 + signum)
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except BaseException:
        if received:  # Terminated, or what some clean-up made of it
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:  # it landed where exceptions are dropped (a finaliser): the exit still says so
        raise SystemExit(128 + signal.SIGTERM)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While inside, what this process writes to stdout (the log lines of a runtime it runs with
    ``FOUNDATION_LOGGING__OUTPUT=stdout``, a library's print) goes to stderr, and so does what
    its child processes write (file descriptor 1 itself is redirected, and they inherit it).
    After it, stdout holds only what is printed next: the one JSON object of ``--json``."""
    stdout = sys.stdout
    stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield
    finally:
        sys.stdout = stdout
        with contextlib.suppress(ValueError, OSError):
            stdout.flush()  # what a holder of the old object wrote meanwhile: still to stderr
        os.dup2(saved, 1)
        os.close(saved)


try:  # resolved here, not in a forked child
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal
    _prctl = None
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Called first in a child process: the kernel kills it when its parent ``parent`` dies,
    even by SIGKILL (Linux's parent-death signal), so that a child spinning on a shared word or
    waiting for a start signal never outlives a benchmark that was killed."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def check_transport(transport: str) -> None:
    """Refuse, naming it, a transport whose clients must be in the server's process: the
    benchmark's server and throughput clients are processes of their own."""
    if transport in SAME_PROCESS_TRANSPORTS:
        raise BenchmarkFailed(
            f"--transport {transport}: the benchmark calls a server in another process, from client "
            f"processes, and the {transport} transport serves only the process it runs in; "
            "choose a transport that crosses processes (shm)"
        )


# --- timing ----------------------------------------------------------------------------------------


def timer_overhead_ns(samples: int = 20000) -> float:
    """p50 of two back-to-back ``time.perf_counter_ns()`` reads, in ns: the timer's own cost,
    which every timed sample of these benchmarks includes once (the spin floor's too: it is not
    subtracted from any figure; it is reported so that a reader can judge it)."""
    clock = time.perf_counter_ns
    times = np.empty(samples, np.int64)
    for i in range(samples):
        t0 = clock()
        times[i] = clock() - t0
    return float(np.percentile(times, 50))


def spin_floor(rounds: int) -> np.ndarray:
    """Round trips (µs) of two processes spinning on shared words (the machine's IPC floor); the
    same measurement as ``benchmarks/shm.py``'s ``floor_spin`` (one word per cache line). Each
    includes one timer read (``timer_overhead_ns``)."""
    buf = mmap.mmap(-1, 4096)
    words = memoryview(buf).cast("Q")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child echoes every ping, then leaves
        die_with_parent(parent)
        for i in range(1, rounds + 1):
            while words[0] != i:
                pass
            words[8] = i
        os._exit(0)
    times = np.empty(rounds, np.int64)
    clock = time.perf_counter_ns
    try:
        for i in range(1, rounds + 1):
            t0 = clock()
            words[0] = i
            while words[8] != i:
                pass
            times[i - 1] = clock() - t0
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # it would spin for a ping that never comes
        raise
    finally:
        os.waitpid(pid, 0)
        words.release()
        buf.close()
    return times / 1e3


def direct_call(model: Any, threads: int = 1, rows: int = 1) -> tuple[Any, np.ndarray]:
    """``(call, x)``: ``call(x)`` runs the demo ``model`` directly in PyTorch on ``rows`` rows of
    input, as a user's own code would (``inference_mode``, ``threads`` intra-op threads; 0 leaves
    torch's default, as ``foundation serve --threads 0`` does)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal((rows, 784)).astype(np.float32)

    def direct(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()  # type: ignore[no-any-return]

    return direct, x


def _timed(call: Any, arg: Any, calls: int) -> np.ndarray:
    for _ in range(min(200, calls)):
        call(arg)
    times = np.empty(calls, np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        call(arg)
        times[i] = clock() - t0
    return times / 1e3


def rate(call: Any, arg: Any, seconds: float) -> float:
    """Calls per second of ``call(arg)`` in a closed loop for about ``seconds``."""
    n, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(50):
            call(arg)
        n += 50
    return n / (time.perf_counter() - t0)


ROUNDS = 5


def _spin_forever(parent: int) -> None:  # pragma: no cover - runs in a child process until killed
    die_with_parent(parent)
    while True:
        pass


def _with_and_without_spinner(measure: Any) -> tuple[float, float]:
    """``measure()`` while a child process busy-loops on another CPU, and while it is stopped,
    in ``ROUNDS`` alternating rounds: (median with, median without). Alternating matters: this
    VM's speed drifts by up to ~1.7x over seconds, so one figure taken after the other compares
    two machines (an earlier version did that, and reported a 1.7x slowdown that alternating
    rounds do not show)."""
    mine = os.sched_getaffinity(0)
    child = mp.get_context("fork").Process(target=_spin_forever, args=(os.getpid(),), daemon=True)
    child.start()
    assert child.pid is not None
    spinning: list[float] = []
    idle: list[float] = []
    try:
        if len(mine) > 1:
            here = min(mine)
            os.sched_setaffinity(child.pid, mine - {here})
            os.sched_setaffinity(0, {here})
        for r in range(2 * ROUNDS):
            on = r % 2 == 0
            os.kill(child.pid, signal.SIGCONT if on else signal.SIGSTOP)
            time.sleep(0.02)
            (spinning if on else idle).append(float(measure()))
    finally:
        os.sched_setaffinity(0, mine)
        child.kill()
        child.join()
    return round(float(np.median(spinning)), 2), round(float(np.median(idle)), 2)


def _latency(rounds: Sequence[np.ndarray]) -> dict[str, float]:
    """Of one call's samples (µs), one array per round: ``p50``, the median of the rounds' p50s
    (the machine drifts between rounds); ``p99`` over every sample of every round, pooled (a
    median of the rounds' p99s would hide the tail of the worst rounds); and that median of the
    rounds' p99s, ``p99_median_of_rounds``, which earlier versions reported as the p99."""
    pooled = np.concatenate(rounds)
    return {
        "p50": round(float(np.median([np.percentile(r, 50) for r in rounds])), 2),
        "p99": round(float(np.percentile(pooled, 99)), 2),
        "p99_median_of_rounds": round(float(np.median([np.percentile(r, 99) for r in rounds])), 2),
    }


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
            while time.perf_counter() < end:
                client.infer(DEMO_MODEL, x)
                n += 1
            results.put(("done", index, n, time.perf_counter() - t0, time.thread_time_ns() - cpu0))
    except Exception as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))
        raise


def cpu_ns(pid: int) -> int:
    """CPU time used so far by the threads of process ``pid`` alive now, in ns (the scheduler's
    own accounting, ``/proc/PID/task/*/schedstat``: exact, unlike the tick-sampled ``stat``, but a
    thread that has ended takes its time with it; a server's threads live as long as it does)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def _gather(results: Any, procs: Sequence[Any], kind: str, timeout: float) -> dict[int, tuple[Any, ...]]:
    """The ``kind`` message of every worker, by index, polling the workers meanwhile: a worker
    that reports an error or exits without its message fails the run at once, and so does
    waiting longer than ``timeout`` seconds (never one long blocking wait)."""
    deadline = time.monotonic() + timeout
    got: dict[int, tuple[Any, ...]] = {}
    while len(got) < len(procs):
        # a worker's messages are in the queue before it exits: one that is gone now and still
        # has not reported within the next get never will
        gone = [i for i, p in enumerate(procs) if i not in got and p.exitcode is not None]
        try:
            message = results.get(timeout=0.5 if gone else 0.1)
        except queue.Empty:
            if gone:
                i = gone[0]
                raise BenchmarkFailed(
                    f"client worker {i} (pid {procs[i].pid}) exited with status {procs[i].exitcode} "
                    f"before it was {kind}"
                ) from None
            if time.monotonic() > deadline:
                late = sorted(set(range(len(procs))) - set(got))
                raise BenchmarkFailed(f"client workers {late} not {kind} within {timeout:.0f} s") from None
            continue
        if message[0] == "error":
            raise BenchmarkFailed(f"client worker {message[1]} failed: {message[2]}")
        if message[0] == kind:
            got[message[1]] = tuple(message[2:])
    return got


def _stop_workers(procs: Sequence[Any], finished: bool) -> None:
    """Reap the workers: those that finished leave by themselves; any other is terminated."""
    for p in procs:
        if p.pid is None:  # never started
            continue
        p.join(10 if finished else 0)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join()


def mean_batch_size(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """The mean size of the batches a model ran between two of its stats documents (the
    difference of their ``batch_sizes`` histograms): a run's own batches, not the warm-up's."""
    earlier = before.get("batch_sizes", {})
    sizes = {int(k): v - earlier.get(k, 0) for k, v in after.get("batch_sizes", {}).items()}
    batches = sum(sizes.values())
    return round(sum(k * v for k, v in sizes.items()) / batches, 3) if batches else None


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


@contextlib.contextmanager
def _serving(serve_args: list[str]) -> Iterator[ServerProcess]:
    """A ``foundation serve`` child process, stopped however the block ends: also when SIGTERM
    (``SystemExit``) arrives while it starts, which ``with ServerProcess(...)`` would leave
    running (its ``__enter__`` had not returned, so its ``__exit__`` never runs)."""
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

    from ._client import InferenceClient
    from ._runtime import MLRuntime

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
    with _serving(base) as server, MLRuntime() as runtime:
        runtime.register_model(DEMO_MODEL, model)
        runtime.start("inproc", name)
        with (
            InferenceClient(name, transport="inproc", hub=runtime.hub) as local,
            InferenceClient(name, transport=transport) as remote,
        ):
            calls_of = {
                "direct": direct,
                "direct_batch": direct_batch,
                "inproc": lambda a: local.infer(DEMO_MODEL, {"x": a}),
                transport: lambda a: remote.infer(DEMO_MODEL, {"x": a}),
            }
            lat, rates = _interleaved(calls_of, x, calls, seconds, rated=("direct", "inproc", transport))
        # the floor in the same rounds as the calls it is the target's unit for; each of its
        # samples includes one timer read (timer_overhead_ns), not subtracted
        result["floor_spin_p50_us"] = lat["floor"]["p50"]
        result["floor_spin_p99_us"] = lat["floor"]["p99"]
        # p99s: over every call of every round, pooled (see _latency)
        result["direct_p50_us"], result["direct_p99_us"] = lat["direct"]["p50"], lat["direct"]["p99"]
        result["direct_rps_rounds"] = rates["direct"]
        result["direct_batch_p50_us"] = lat["direct_batch"]["p50"]
        result["inproc_p50_us"] = lat["inproc"]["p50"]
        result[f"{transport}_p50_us"], result[f"{transport}_p99_us"] = (
            lat[transport]["p50"],
            lat[transport]["p99"],
        )
        result[f"{transport}_p99_us_median_of_rounds"] = lat[transport]["p99_median_of_rounds"]
        result[f"{transport}_rps_1_client"] = rates[transport]
        result["rounds"] = ROUNDS
        unbatched = _throughput(name, transport, clients, seconds, crowd, server.pid)
        result[f"{transport}_rps_{clients}_clients_unbatched"] = round(unbatched["rps"], 1)
    # The direct call's rates just before and just after the batched run, with no server
    # running, averaged: the batched rate is compared with what the machine gave the direct call
    # around it (this VM's speed drifts within seconds; the rounds above were a while ago).
    around = _direct_rates(direct, direct_batch, x, seconds)
    batched = [*base, "--max-batch-size", str(max_batch_size), "--max-wait-us", str(max_wait_us)]
    with _serving(batched) as server:
        served = _throughput(name, transport, clients, seconds, crowd, server.pid)
    after = _direct_rates(direct, direct_batch, x, seconds)
    result[f"{transport}_rps_{clients}_clients_batched"] = round(served["rps"], 1)
    result["direct_rps_before_batched"], result["direct_rps_after_batched"] = (
        round(around[0], 1),
        round(after[0], 1),
    )
    mean = (around + after) / 2
    result["direct_rps"] = round(float(mean[0]), 1)
    # the model alone on a full batch: the most rows/s one serving thread can answer with
    # batching, whatever the transport costs (around the batched run, as direct_rps)
    result["batched_ceiling_rps"] = round(float(mean[1]) * max_batch_size, 1)
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
    floor, p50 = result["floor_spin_p50_us"], result[f"{transport}_p50_us"]
    result["latency_overhead_us"] = round(p50 - result["direct_p50_us"], 2)
    result["latency_target_met"] = p50 <= result["direct_p50_us"] + 10 * floor
    batched_rps = result[f"{transport}_rps_{clients}_clients_batched"]
    ratio = batched_rps / result["direct_rps"]
    result["batched_rps_over_direct"] = round(ratio, 2)
    result["batched_rps_over_ceiling"] = round(batched_rps / result["batched_ceiling_rps"], 2)
    result.update(_cycle(result, batched_rps, max_batch_size))
    result["throughput_target_met"] = ratio >= 2.0
    return result


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
    run that cannot measure raises ``BenchmarkFailed`` (the CLI names it, exit 1)."""
    check_transport(args.transport)  # before anything starts
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
