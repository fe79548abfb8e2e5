"""The benchmarks still run: each one's ``--quick --json`` prints one JSON object with the figures
its issue names and a verdict per target. Smoke runs only: the figures are not checked, since
performance is measured by the benchmarks themselves, never by timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines, "no output"
    doc = json.loads(lines[-1])
    assert isinstance(doc, dict)
    return doc


@pytest.mark.slow
def test_the_shm_benchmark_reports_every_figure_and_target() -> None:
    doc = run("shm.py")
    for key in (
        "floor_spin_p50_us",
        "floor_python_api_p50_us",
        "floor_sem_p50_us",
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
    ):
        assert isinstance(doc[key], int | float) and doc[key] >= 0, key
    assert len(doc["targets_met"]) == 6  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_inference_benchmark_reports_every_figure_and_target() -> None:
    doc = run("inference.py")
    for key in (
        "direct_p50_us",
        "direct_p50_us_peer_spinning",
        "floor_spin_p50_us",
        "inproc_p50_us",
        "shm_p50_us",
        "shm_p99_us",
        "direct_rps",
        "shm_rps_1_client",
        "shm_rps_4_clients_unbatched",
        "shm_rps_4_clients_batched",
    ):
        assert isinstance(doc[key], int | float) and doc[key] > 0, key
    assert isinstance(doc["latency_target_met"], bool)
    assert isinstance(doc["throughput_target_met"], bool)
