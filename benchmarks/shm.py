"""Benchmark of the shm transport against this machine's floor and against pipe and gRPC, in one run.

``python benchmarks/shm.py [--json] [--quick]`` measures, each in real processes:

- floors: two processes ping-ponging an 8-byte counter on a shared word (busy-polling), the same
  with posix_ipc semaphores (blocking; also the CPU one side spends per blocking round trip,
  ``floor_sem_cpu_us``), a ``multiprocessing.Pipe``, a gRPC unary echo on loopback;
  and the spin ping-pong plus only the Python objects and the handler call that the transport
  API makes each side run (``floor_python_api``: the least any transport with a Python handler
  can cost);
- shm: echo of 1 KB (p50, p99) and 1 MB, 100 MB copied in and through a loan (vs a 100 MB memcpy),
  requests per second with 1, 2 and 4 client processes, the CPU an idle server uses, and the 1 KB
  echo again with both spin windows at 0 (every wait blocks: what the spin buys).

The spin floor, the Python-API floor and the 1 KB echo are measured in 5 alternating rounds and
reported as the medians of the rounds' percentiles (this VM's speed drifts within seconds, and
the target is their ratio). ``--json`` prints one JSON object with every figure, the ratios the
issue sets as targets, and whether each is met. Latency figures on a 2-vCPU machine are noisy:
run it on a quiet machine.
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds modules named like the stdlib's (logging.py): keep them off the import path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import mmap  # noqa: E402
import multiprocessing as mp  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

PY = sys.executable


ROUNDS = 5


def _pct(samples: list[int], q: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * q))] / 1000  # ns -> µs


# --- floors ---------------------------------------------------------------------------------------


def _spin_child(mm: mmap.mmap, n: int) -> None:
    words = memoryview(mm).cast("Q")
    for i in range(1, n + 1):
        while words[0] != i:
            pass
        words[8] = i


def floor_spin(n: int) -> list[int]:
    """Round trips of a counter on a shared word between two busy-polling processes."""
    mm = mmap.mmap(-1, 4096)
    words = memoryview(mm).cast("Q")
    child = mp.get_context("fork").Process(target=_spin_child, args=(mm, n))
    child.start()
    out = []
    clock = time.perf_counter_ns
    for i in range(1, n + 1):
        t0 = clock()
        words[0] = i
        while words[8] != i:
            pass
        out.append(clock() - t0)
    child.join()
    words.release()
    return out


def _api_child(mm: mmap.mmap, n: int) -> None:
    from foundation_shm._echo import EchoHandler

    from foundation_ml import InferenceRequest

    words = memoryview(mm).cast("Q")
    handler, x, got = EchoHandler(), np.zeros(256, np.float32), []
    for i in range(1, n + 1):
        while words[0] != i:
            pass
        handler(InferenceRequest("echo", {"x": x}, id=i), got.append)  # the server's Python floor
        got.clear()
        words[8] = i


def floor_python_api(n: int) -> list[int]:
    """The spin floor plus only the Python that the transport's API makes each side run: the
    client builds a request and a response object, the server a request object and calls the
    echo handler (which builds the response). No encoding, copying or checking at all: what a
    transport with a Python handler cannot go below, whatever it does in C."""
    from foundation_ml import InferenceRequest, InferenceResponse

    mm = mmap.mmap(-1, 4096)
    words = memoryview(mm).cast("Q")
    child = mp.get_context("fork").Process(target=_api_child, args=(mm, n))
    child.start()
    x, out = np.zeros(256, np.float32), []
    clock = time.perf_counter_ns
    for i in range(1, n + 1):
        t0 = clock()
        InferenceRequest("echo", {"x": x}, id=i)
        words[0] = i
        while words[8] != i:
            pass
        InferenceResponse(i, "echo", {"x": x})
        out.append(clock() - t0)
    child.join()
    words.release()
    return out


def _sem_child(a: str, b: str, n: int) -> None:
    import posix_ipc

    sa, sb = posix_ipc.Semaphore(a), posix_ipc.Semaphore(b)
    for _ in range(n):
        sa.acquire()
        sb.release()


def floor_sem(n: int) -> tuple[list[int], float]:
    """Round trips through two posix_ipc semaphores, both sides blocking; and the CPU time one
    side spends per round trip (µs: its post, its block and its wake-up, by the scheduler's
    count), which a process that blocks for every request pays however little else it does."""
    import posix_ipc

    a, b = f"/bench-shm-{os.getpid()}-a", f"/bench-shm-{os.getpid()}-b"
    sa = posix_ipc.Semaphore(a, posix_ipc.O_CREX, mode=0o600)
    sb = posix_ipc.Semaphore(b, posix_ipc.O_CREX, mode=0o600)
    try:
        child = mp.get_context("fork").Process(target=_sem_child, args=(a, b, n))
        child.start()
        out = []
        clock = time.perf_counter_ns
        cpu0 = time.thread_time_ns()
        for _ in range(n):
            t0 = clock()
            sa.release()
            sb.acquire()
            out.append(clock() - t0)
        cpu_us = (time.thread_time_ns() - cpu0) / n / 1e3
        child.join()
        return out, cpu_us
    finally:
        sa.unlink()
        sb.unlink()


def _pipe_child(conn: Any, n: int) -> None:
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def floor_pipe(n: int) -> list[int]:
    parent, child_end = mp.Pipe()
    child = mp.get_context("fork").Process(target=_pipe_child, args=(child_end, n))
    child.start()
    msg = b"x" * 8
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        parent.send_bytes(msg)
        parent.recv_bytes()
        out.append(clock() - t0)
    child.join()
    return out


_GRPC_SERVER = """
import sys, grpc
from concurrent import futures
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.readline()
server.stop(0)
"""


def grpc_echo(n: int) -> list[int]:
    """gRPC unary echo of 1 KB on loopback, server in another process."""
    import grpc

    proc = subprocess.Popen(
        [PY, "-c", _GRPC_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    port = int(proc.stdout.readline())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/bench.Echo/Echo")
            msg = b"x" * 1024
            for _ in range(50):
                call(msg)
            out = []
            clock = time.perf_counter_ns
            for _ in range(n):
                t0 = clock()
                call(msg)
                out.append(clock() - t0)
            return out
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(10)


# --- shm ------------------------------------------------------------------------------------------


class EchoServer:
    """``python -m foundation_shm._echo NAME`` in its own process."""

    def __init__(self, name: str, spin_us: int = 200) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [PY, "-m", "foundation_shm._echo", name, "--spin-us", str(spin_us)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the echo server did not start")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def shm_latency(name: str, nbytes: int, n: int, spin_us: int = 100) -> list[int]:
    from foundation_shm import ShmTransport

    from foundation_ml import InferenceRequest

    x = np.arange(nbytes // 4, dtype=np.float32)
    with ShmTransport().connect(name, spin_us=spin_us) as client:
        request = InferenceRequest("echo", {"x": x})
        for _ in range(min(n, 500)):
            client.infer(request)
        out = []
        clock = time.perf_counter_ns
        infer = client.infer
        for _ in range(n):
            t0 = clock()
            infer(request)
            out.append(clock() - t0)
        return out


def shm_100mb(name: str, repeats: int) -> tuple[float, float, float]:
    """(copy-in ms, loan ms, memcpy ms): medians over ``repeats`` after a warm-up round."""
    from foundation_shm import ShmTransport

    from foundation_ml import DataType, InferenceRequest

    n = 25_000_000
    x = np.random.default_rng(0).random(n, dtype=np.float32)
    dst = np.empty_like(x)
    clock = time.perf_counter_ns
    memcpy, copy_in, loaned = [], [], []
    # interleaved, so that a change in the machine's load hits the three figures alike
    with ShmTransport().connect(name, channels=2) as client:
        request = InferenceRequest("echo", {"x": x})
        with client.loan("echo", {"x": (DataType.FP32, (n,))}) as loan:
            loan["x"][:] = x
            for _ in range(repeats + 1):
                t0 = clock()
                np.copyto(dst, x)
                memcpy.append(clock() - t0)
                t0 = clock()
                client.infer(request, timeout=60)
                copy_in.append(clock() - t0)
                t0 = clock()
                loan.infer(timeout=60)
                loaned.append(clock() - t0)
    return (
        statistics.median(copy_in[1:]) / 1e6,
        statistics.median(loaned[1:]) / 1e6,
        statistics.median(memcpy[1:]) / 1e6,
    )


_RPS_CLIENT = """
import sys, time, numpy as np
from foundation_ml import InferenceRequest
from foundation_shm import ShmTransport
client = ShmTransport().connect(sys.argv[1])
request = InferenceRequest("echo", {"x": np.arange(256, dtype=np.float32)})
for _ in range(300):
    client.infer(request)
print("ready", flush=True)
start = float(sys.stdin.readline())
while time.time() < start:
    pass
end, count, infer = start + float(sys.argv[2]), 0, client.infer
while time.time() < end:
    infer(request)
    count += 1
print(count, flush=True)
client.close()
"""


def shm_rps(name: str, clients: int, seconds: float) -> float:
    procs = [
        subprocess.Popen(
            [PY, "-c", _RPS_CLIENT, name, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    start = time.time() + 0.2
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start}\n")
        p.stdin.flush()
    total = sum(int(p.communicate(timeout=seconds + 60)[0].strip()) for p in procs)
    return total / seconds


def idle_cpu(server: EchoServer, seconds: float) -> float:
    time.sleep(0.5)  # past the spin window and any start-up work
    before = server.cpu_seconds()
    time.sleep(seconds)
    return (server.cpu_seconds() - before) / seconds * 100


# --- the run ----------------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    k = 4 if quick else 1
    n_lat = 20_000 // k
    r: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    (sem, sem_cpu), pipe = floor_sem(5_000 // k), floor_pipe(5_000 // k)
    r["floor_sem_p50_us"], r["floor_sem_p99_us"] = _pct(sem, 0.5), _pct(sem, 0.99)
    r["floor_sem_cpu_us"] = round(sem_cpu, 2)
    r["pipe_p50_us"] = _pct(pipe, 0.5)
    grpc = grpc_echo(3_000 // k)
    r["grpc_p50_us"], r["grpc_p99_us"] = _pct(grpc, 0.5), _pct(grpc, 0.99)
    name = f"bench{os.getpid()}"
    server = EchoServer(name)
    try:
        r["server_idle_cpu_pct"] = round(idle_cpu(server, 2.0), 3)
        # the floors and the 1 KB echo in alternating rounds, medians of the rounds' percentiles:
        # this VM's speed drifts within seconds, and the target is their ratio
        rounds: dict[str, list[tuple[float, float]]] = {"spin": [], "api": [], "shm": []}
        for _ in range(ROUNDS):
            for key, samples in (
                ("spin", floor_spin(n_lat // ROUNDS)),
                ("api", floor_python_api(n_lat // ROUNDS)),
                ("shm", shm_latency(name, 1024, n_lat // ROUNDS)),
            ):
                rounds[key].append((_pct(samples, 0.5), _pct(samples, 0.99)))
        med = {
            key: tuple(statistics.median(v[j] for v in got) for j in (0, 1)) for key, got in rounds.items()
        }
        r["floor_spin_p50_us"], r["floor_spin_p99_us"] = med["spin"]
        r["floor_python_api_p50_us"] = med["api"][0]
        r["shm_1kb_p50_us"], r["shm_1kb_p99_us"] = med["shm"]
        r["rounds"] = ROUNDS
        lat = shm_latency(name, 1 << 20, 1000 // k)
        r["shm_1mb_p50_us"] = _pct(lat, 0.5)
        r["shm_100mb_ms"], r["shm_100mb_loan_ms"], r["memcpy_100mb_ms"] = shm_100mb(
            name, 5 if not quick else 2
        )
        seconds = 2.0 / k
        for clients in (1, 2, 4):
            r[f"rps_{clients}_client" + ("s" if clients > 1 else "")] = round(shm_rps(name, clients, seconds))
    finally:
        server.stop()
    # the same 1 KB echo with both spin windows at 0: every wait blocks on a semaphore
    r["server_spin_us"], r["client_spin_us"] = 200, 100
    server = EchoServer(name, spin_us=0)
    try:
        lat = shm_latency(name, 1024, 3000 // k, spin_us=0)
        r["shm_1kb_nospin_p50_us"], r["shm_1kb_nospin_p99_us"] = _pct(lat, 0.5), _pct(lat, 0.99)
    finally:
        server.stop()
    r["ratios"] = {
        "shm_1kb_p50_over_floor_spin": r["shm_1kb_p50_us"] / r["floor_spin_p50_us"],
        "floor_python_api_over_floor_spin": r["floor_python_api_p50_us"] / r["floor_spin_p50_us"],
        "grpc_p50_over_shm_1kb_p50": r["grpc_p50_us"] / r["shm_1kb_p50_us"],
        "shm_100mb_loan_over_memcpy": r["shm_100mb_loan_ms"] / r["memcpy_100mb_ms"],
        "shm_100mb_over_memcpy": r["shm_100mb_ms"] / r["memcpy_100mb_ms"],
    }
    ratios = r["ratios"]
    r["targets_met"] = {
        "shm_1kb_p50 <= 10 x floor_spin_p50": ratios["shm_1kb_p50_over_floor_spin"] <= 10,
        "grpc_p50 >= 50 x shm_1kb_p50": ratios["grpc_p50_over_shm_1kb_p50"] >= 50,
        "shm_100mb_loan <= 1.5 x memcpy": ratios["shm_100mb_loan_over_memcpy"] <= 1.5,
        "shm_100mb <= 2.5 x memcpy": ratios["shm_100mb_over_memcpy"] <= 2.5,
        "rps_2_clients >= 20000": r["rps_2_clients"] >= 20_000,
        "server_idle_cpu_pct <= 2": r["server_idle_cpu_pct"] <= 2,
    }
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer samples (a smoke run, not for reporting)")
    args = p.parse_args(argv)
    result = run(args.quick)
    if args.json:
        print(json.dumps(result))
        return 0
    show: Callable[[str, Any], None] = lambda key, value: print(f"{key:<36} {value}")  # noqa: E731
    for key, value in result.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                show(f"  {sub}", round(v, 2) if isinstance(v, float) else v)
        else:
            show(key, value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
