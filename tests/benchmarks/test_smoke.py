"""Every benchmark still runs on a fresh setup: each prints one JSON object (``--json``) with the
figures its issue names. Short runs only, and the figures are not checked: performance is
measured by the benchmarks themselves, never by timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# script, the arguments of a short run, figures that must be present (numbers >= 0)
BENCHMARKS = [
    ("startup.py", ["--quick"], []),
    ("patterns.py", ["--repeats", "1", "--target-seconds", "0.05"], []),
    ("logging.py", ["-n", "2000", "--repeat", "1"], []),
    (
        "shm.py",
        ["--quick"],
        [
            "floor_spin_p50_us",
            "floor_python_api_p50_us",
            "floor_sem_p50_us",
            "floor_sem_cpu_us",
            "pipe_p50_us",
            "grpc_p50_us",
            "shm_1kb_p50_us",
            "shm_1kb_p99_us",
            "shm_1mb_p50_us",
            "shm_100mb_ms",
            "shm_100mb_loan_ms",
            "memcpy_100mb_ms",
            "rps_1_client",
            "rps_2_clients",
            "rps_4_clients",
            "server_idle_cpu_pct",
        ],
    ),
    (
        "inference.py",
        ["--quick"],
        [
            "direct_p50_us",
            "direct_p50_us_peer_spinning",
            "direct_p50_us_peer_stopped",
            "floor_spin_p50_us",
            "inproc_p50_us",
            "shm_p50_us",
            "shm_p99_us",
            "direct_rps",
            "shm_rps_1_client",
            "shm_rps_4_clients_unbatched",
            "shm_rps_4_clients_batched",
            "direct_batch_p50_us",
            "batched_ceiling_rps",
            "batched_rps_over_ceiling",
            "batched_cycle_us",
            "batched_cycle_overhead_us",
            "target_cycle_overhead_us",
        ],
    ),
    ("runtime_overhead.py", ["--quick", "--sizes-kb", "0,1024"], ["overhead_growth"]),
    ("clients.py", ["--quick"], []),
    ("cuda_ipc.py", ["--quick"], []),  # without a GPU it says why and exits 0
]


SIGNED = {"batched_cycle_overhead_us", "target_cycle_overhead_us"}


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "figures"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_the_benchmark_runs_and_reports_its_figures(script: str, args: list[str], figures: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing"
    doc = json.loads(lines[-1])
    assert isinstance(doc, dict) and doc, f"{script}: not one JSON object"
    for key in figures:
        assert isinstance(doc[key], int | float), key
        # derived differences may be negative on a loaded machine (see foundation_ml._bench._cycle)
        assert doc[key] >= 0 or key in SIGNED, key
    if script == "inference.py":  # CPU per request of the clients and the server, both runs
        cpu = doc["cpu_us_per_request"]
        assert {k: sorted(v) for k, v in cpu.items()} == {
            "unbatched": ["client", "server"],
            "batched": ["client", "server"],
        }
        assert all(us > 0 for run in cpu.values() for us in run.values()), cpu
    if script == "runtime_overhead.py":  # each model: the three paths and the two overheads
        for key in ("read_0kb", "read_1024kb", "demo"):
            assert sorted(doc[key]) == [
                "direct_p50_us",
                "handler_overhead_us",
                "handler_p50_us",
                "inproc_overhead_us",
                "inproc_p50_us",
            ]
            assert doc[key]["direct_p50_us"] > 0 and doc[key]["inproc_p50_us"] > 0
    if script == "clients.py" and doc["c_rps_2_clients"] is not None:  # the C client built
        assert doc["c_rps_4_clients_batched"] > 0
        assert doc["c_batched_mean_batch_size"] >= 1
        assert doc["c_rps_4_clients_batched_over_direct"] > 0
        assert doc["python_echo_1kb_p50_us"] > 0 and doc["c_echo_1kb_p50_us"] > 0
