"""Native clients benchmark: Python, C, Rust and Go calling the demo model over shm, same server.

.venv/bin/python benchmarks/clients.py --json      # one JSON object
.venv/bin/python benchmarks/clients.py --quick     # a short smoke run

Every client makes the same small request (the demo MLP, x FP32[1, 784]) to one ``foundation
serve`` process: in rounds, each client once per round in a rotating order (each native client
runs its ``fdn-client bench``: the latency of each call after a warm-up); a client's p50 and p99
are the medians over the rounds. Also measured: the floor (two C processes ping-ponging a counter on
a shared word), the throughput of two concurrent C clients against the shm echo server, the 1 KB
echo's latency from a Python and from a C client against that server (alternating: what the
Python server's side costs), and the throughput of four C clients against a server batching the
demo model, beside the direct call's rate.
A client that is missing or does not build is reported as null, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# A sibling script may be named like a stdlib module (benchmarks/logging.py); do not let this
# directory, which Python puts first on sys.path, shadow the standard library: at the end of the
# path, only for _common.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here] + [_here]

import numpy as np  # noqa: E402
from _common import benchmark_run  # noqa: E402

ROOT = Path(_here).parent
NATIVE = {
    "c": (("make", "-C", "clients/c"), ".", "clients/c/build/fdn-client"),
    "rust": (
        (
            "cargo",
            "build",
            "--release",
            "--offline",
            "--manifest-path",
            "clients/rust/Cargo.toml",
            "--example",
            "fdn-client",
        ),
        ".",
        "clients/rust/target/release/examples/fdn-client",
    ),
    "go": (
        ("go", "build", "-o", "bin/fdn-client", "./cmd/fdn-client"),
        "clients/go",
        "clients/go/bin/fdn-client",
    ),
}
SPIN_FLOOR = ROOT / "clients/c/build/spin-floor"
BATCH_CLIENTS = 4
TARGETS = {"go_p99_us_below": 1000.0, "c_rps_2_clients_at_least": 40000.0}


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank, as the fdn-client programs compute it."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def build(lang: str) -> tuple[Path | None, str | None]:
    """Build (or bring up to date) a native client; (binary, None) or (None, why not)."""
    cmd, cwd, binary = NATIVE[lang]
    if not (ROOT / "clients" / lang).is_dir():
        return None, f"clients/{lang} does not exist"
    env = dict(os.environ)
    env.setdefault("GOPROXY", "off")
    env.setdefault("GOTOOLCHAIN", "local")
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT / cwd, env=env, capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(cmd)}: {exc}"
    if proc.returncode != 0:
        return None, f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr).strip()[-300:]}"
    return ROOT / binary, None


def run_json(cmd: list[str], timeout: float = 600) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def python_latency(client: Any, x: np.ndarray, iterations: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        client.infer("demo", {"x": x})
    times = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        t0 = clock()
        client.infer("demo", {"x": x})
        times.append((clock() - t0) / 1e3)
    return percentile(times, 50), percentile(times, 99)


def latencies(
    name: str, spec: str, x: np.ndarray, binaries: dict[str, Path], iterations: int, warmup: int, rounds: int
) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Each client's (p50, p99): the median over rounds, every client measured once per round in
    a rotating order, so that a change of load on the machine hits them all alike."""
    from foundation_ml import InferenceClient

    per_round = max(1, iterations // rounds)
    runs: dict[str, list[tuple[float, float]]] = {lang: [] for lang in ["python", *binaries]}
    failed: dict[str, str] = {}
    with InferenceClient(name, transport="shm") as client:
        order = list(runs)
        for r in range(rounds):
            for lang in order[r % len(order) :] + order[: r % len(order)]:
                if lang in failed:
                    continue
                if lang == "python":
                    runs[lang].append(python_latency(client, x, per_round, warmup))
                    continue
                cmd = [str(binaries[lang]), "bench", "--name", name, "--model", "demo", "--input", spec]
                try:
                    got = run_json([*cmd, "--iterations", str(per_round), "--warmup", str(warmup)])
                except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                    failed[lang] = str(exc)[-300:]
                    continue
                runs[lang].append((got["p50_us"], got["p99_us"]))
    medians = {
        lang: (statistics.median(p[0] for p in got), statistics.median(p[1] for p in got))
        for lang, got in runs.items()
        if got and lang not in failed
    }
    return medians, failed


def c_rps(binary: Path, name: str, model: str, spec: str, clients: int, iterations: int) -> float:
    """``clients`` C clients calling ``model`` at once: all their calls over the longest one's
    time (each process times its own calls, after its warm-up)."""
    cmd = [str(binary), "bench", "--name", name, "--model", model, "--input", spec]
    cmd += ["--iterations", str(iterations), "--warmup", "1000"]
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(clients):
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:  # a failure or SIGTERM here: no client left running
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{model} clients failed: {outs}")
    runs = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    longest = max(r["iterations"] / r["rps"] for r in runs)
    return sum(r["iterations"] for r in runs) / longest


def echo_figures(
    binary: Path, tiny: str, kb: str, iterations: int, calls: int, rounds: int
) -> dict[str, Any]:
    """Against one Python echo server: two C clients calling at once (``tiny``: 16 bytes), and
    the 1 KB echo's p50 from a Python and from a C client, alternating in ``rounds`` rounds of
    ``calls`` calls (medians). A C client's own work is nearly free, so its round trip less the
    spin floor is about what the Python server's side costs."""
    from foundation_shm import ShmTransport

    from foundation_ml import InferenceRequest
    from foundation_ml._process import ServerProcess

    name = f"bclients_echo_{os.getpid()}"
    server = ServerProcess([])
    server.args = [sys.executable, "-m", "foundation_shm._echo", name]
    server._read = lambda: _read_until(server, "ready")  # type: ignore[method-assign]
    py: list[float] = []
    c: list[float] = []
    with server:  # __enter__ starts it
        rps = c_rps(binary, name, "echo", tiny, 2, iterations)
        request = InferenceRequest("echo", {"x": np.arange(256, dtype=np.float32)})
        cmd = [str(binary), "bench", "--name", name, "--model", "echo", "--input", kb, "--spin-us", "100"]
        cmd += ["--iterations", str(calls), "--warmup", "500"]
        with ShmTransport().connect(name, spin_us=100) as client:
            for _ in range(rounds):
                for _ in range(500):
                    client.infer(request)
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter_ns()
                    client.infer(request)
                    times.append((time.perf_counter_ns() - t0) / 1e3)
                py.append(percentile(times, 50))
                c.append(run_json(cmd)["p50_us"])
    return {
        "c_rps_2_clients": round(rps, 1),
        "python_echo_1kb_p50_us": round(statistics.median(py), 2),
        "c_echo_1kb_p50_us": round(statistics.median(c), 2),
    }


def demo_rps_batched(binary: Path, spec: str, clients: int, iterations: int) -> dict[str, Any]:
    """``clients`` C clients against a server batching the demo model (max batch ``clients``),
    beside the direct call's rate in this process measured just before and just after (this VM's
    speed drifts): how far batching goes when the clients cost (almost) no CPU of their own."""
    from foundation_torch.demo import build_demo

    from foundation_ml import InferenceClient
    from foundation_ml._bench import direct_call, rate
    from foundation_ml._process import ServerProcess

    direct, x = direct_call(build_demo())
    name = f"bclients_batched_{os.getpid()}"
    args = ["--transport", "shm", "--name", name, "--threads", "1"]
    args += ["--max-batch-size", str(clients), "--max-wait-us", "200"]
    before = rate(direct, x, 1.0)
    with ServerProcess(args):
        rps = c_rps(binary, name, "demo", spec, clients, iterations)
        with InferenceClient(name, transport="shm") as client:
            mean_batch = client.stats()["models"]["demo"]["mean_batch_size"]
    direct_rps = (before + rate(direct, x, 1.0)) / 2
    return {
        f"c_rps_{clients}_clients_batched": round(rps, 1),
        "c_batched_mean_batch_size": mean_batch,
        "direct_rps": round(direct_rps, 1),
        f"c_rps_{clients}_clients_batched_over_direct": round(rps / direct_rps, 2),
    }


def _read_until(server: Any, word: str) -> None:
    for line in server.proc.stdout:
        server.lines.append(line)
        if line.startswith(word):
            server._ready.set()
    server._ready.set()


def run(
    iterations: int, warmup: int, echo_iterations: int, rounds: int, batch_iterations: int = 20000
) -> dict[str, Any]:
    from foundation_ml._process import ServerProcess

    result: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "iterations": iterations,
        "rounds": rounds,
        "request": "demo x FP32[1, 784]",
    }
    binaries: dict[str, Path] = {}
    reasons: dict[str, str] = {}
    for lang in NATIVE:
        binary, why = build(lang)
        if binary is None:
            reasons[lang] = why or "unknown"
        else:
            binaries[lang] = binary
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        x_file, e_file, kb_file = Path(tmp) / "x.bin", Path(tmp) / "e.bin", Path(tmp) / "kb.bin"
        x.tofile(x_file)
        np.arange(4, dtype=np.float32).tofile(e_file)
        spec = f"x:FP32:1,784:{x_file}"
        name = f"bclients_{os.getpid()}"
        with ServerProcess(["--transport", "shm", "--name", name, "--threads", "1"]):
            got, failed = latencies(name, spec, x, binaries, iterations, warmup, rounds)
        reasons.update(failed)
        for lang in ["python", *NATIVE]:
            p50, p99 = got.get(lang, (None, None))
            result[f"{lang}_p50_us"] = None if p50 is None else round(p50, 2)
            result[f"{lang}_p99_us"] = None if p99 is None else round(p99, 2)
        result["c_floor_spin_p50_us"] = None
        if SPIN_FLOOR.exists():
            result["c_floor_spin_p50_us"] = round(run_json([str(SPIN_FLOOR), "100000"])["p50_us"], 3)
        np.arange(256, dtype=np.float32).tofile(kb_file)
        result["c_rps_2_clients"] = result["python_echo_1kb_p50_us"] = result["c_echo_1kb_p50_us"] = None
        result[f"c_rps_{BATCH_CLIENTS}_clients_batched"] = None
        if "c" in binaries:
            tiny, kb = f"x:FP32:1,4:{e_file}", f"x:FP32:256:{kb_file}"
            per_round = max(1, iterations // rounds)
            result.update(echo_figures(binaries["c"], tiny, kb, echo_iterations, per_round, rounds))
            result.update(demo_rps_batched(binaries["c"], spec, BATCH_CLIENTS, batch_iterations))
    python = result["python_p50_us"]
    for lang in NATIVE:
        p50 = result[f"{lang}_p50_us"]
        result[f"{lang}_over_python_p50"] = round(p50 / python, 3) if p50 is not None else None
    natives = [result[f"{lang}_p50_us"] for lang in NATIVE]
    result["targets_met"] = {
        "native_p50_le_python": all(p is not None and p <= python for p in natives),
        "go_p99_below_1000_us": result["go_p99_us"] is not None
        and result["go_p99_us"] < TARGETS["go_p99_us_below"],
        "c_rps_2_clients_ge_40000": (result["c_rps_2_clients"] or 0) >= TARGETS["c_rps_2_clients_at_least"],
    }
    result["missing"] = reasons
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    p.add_argument("--iterations", type=int, default=5000, help="timed calls per client, all rounds")
    p.add_argument("--warmup", type=int, default=200, help="untimed calls before each round")
    p.add_argument("--rounds", type=int, default=5, help="rounds, each client once per round")
    p.add_argument("--echo-iterations", type=int, default=100000, help="calls per echo client")
    p.add_argument("--batch-iterations", type=int, default=20000, help="calls per batched demo client")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup, args.echo_iterations, args.rounds = 500, 100, 5000, 2
        args.batch_iterations = 2000
    with benchmark_run(args.json):
        result = run(args.iterations, args.warmup, args.echo_iterations, args.rounds, args.batch_iterations)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
