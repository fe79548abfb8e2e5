"""Every benchmark still runs on a fresh setup: each accepts ``--quick`` and, with ``--json``,
prints exactly one JSON object on stdout (even with the runtime's logs sent to stdout) with the
figures its issue names, and leaves nothing in /dev/shm. Short runs only, and the figures are not
checked: performance is measured by the benchmarks themselves, never by timed tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from foundation_ml._process import shm_entries

ROOT = Path(__file__).resolve().parents[2]

# script, the arguments of a short run, figures that must be present (numbers >= 0)
BENCHMARKS = [
    ("startup.py", ["--quick"], ["foundation_plugins_ms"]),
    ("patterns.py", ["--quick"], []),
    ("logging.py", ["--quick", "-n", "2000"], []),
    (
        "shm.py",
        ["--quick"],
        [
            "timer_overhead_ns",
            "floor_spin_p50_us",
            "floor_python_api_p50_us",
            "floor_sem_p50_us",
            "floor_sem_cpu_us",
            "pipe_p50_us",
            "grpc_p50_us",
            "shm_1kb_p50_us",
            "shm_1kb_p99_us",
            "shm_1kb_p99_us_median_of_rounds",
            "grpc_p99_us",
            "shm_1mb_p50_us",
            "shm_100mb_ms",
            "shm_100mb_loan_ms",
            "memcpy_100mb_ms",
            "rps_1_client",
            "rps_2_clients",
            "rps_4_clients",
            "server_idle_cpu_pct",
            "server_idle_cpu_pct_before_traffic",
            "server_idle_cpu_pct_after_traffic",
            "server_spin_us",
            "client_spin_us",
        ],
    ),
    (
        "inference.py",
        ["--quick"],
        [
            "timer_overhead_ns",
            "direct_p50_us",
            "direct_p50_us_peer_spinning",
            "direct_p50_us_peer_stopped",
            "floor_spin_p50_us",
            "inproc_p50_us",
            "shm_p50_us",
            "shm_p99_us",
            "shm_p99_us_median_of_rounds",
            "direct_rps",
            "direct_rps_rounds",
            "direct_rps_before_batched",
            "direct_rps_after_batched",
            "shm_rps_1_client",
            "shm_rps_4_clients_unbatched",
            "shm_rps_4_clients_batched",
            "direct_batch_p50_us",
            "batched_ceiling_rps",
            "batched_rps_over_ceiling",
            "batched_cycle_us",
            "batched_cycle_overhead_us",
            "target_cycle_overhead_us",
            "batched_mean_batch_size",
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
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # the runtimes these benchmarks run in-process log to stdout then: never into the JSON
        # PYTHONFAULTHANDLER: a SIGABRT (below, on a hang) prints every thread's stack first
        env={**os.environ, "FOUNDATION_LOGGING__OUTPUT": "stdout", "PYTHONFAULTHANDLER": "1"},
        start_new_session=True,  # its servers and clients too, if it must be killed
    )
    try:
        # under pytest-timeout's 300 s: a benchmark that hangs is killed here, with its servers,
        # and reported with what it had written, not left running with its output lost
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # where it hangs, on its stderr
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        with contextlib.suppress(ProcessLookupError):  # (none left in its group)
            os.killpg(proc.pid, signal.SIGTERM)  # its echo servers release their shared memory
        try:
            stdout, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"{script} ran past 240 s; it had written:\n{stderr[-4000:]}\n{stdout[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    lines = stdout.splitlines()
    assert len(lines) == 1, f"{script}: not exactly one line on stdout: {stdout[:2000]}"
    doc = json.loads(lines[0])
    assert isinstance(doc, dict) and doc, f"{script}: not one JSON object"
    # its servers and semaphores are named after its pid: none of them is left
    assert shm_entries(str(proc.pid)) == []
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
    if script == "startup.py":
        assert doc["target_met"] in (True, False) and doc["plugins_failed"] == []
    if script == "cuda_ipc.py" and not doc["cuda_available"]:
        assert doc["failed"] is False and doc["target_met"] is None
    if script == "clients.py" and doc["c_rps_2_clients"] is not None:  # the C client built
        assert doc["c_rps_4_clients_batched"] > 0
        assert doc["c_batched_mean_batch_size"] >= 1
        assert doc["c_rps_4_clients_batched_over_direct"] > 0
        assert doc["python_echo_1kb_p50_us"] > 0 and doc["c_echo_1kb_p50_us"] > 0
