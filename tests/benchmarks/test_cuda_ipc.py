"""benchmarks/cuda_ipc.py's verdict on its CUDA server, without a GPU: a server that died or
answered anything but ``ready FEATURES`` fails the run (exit 1, ``cuda_available`` true, the
reason), where it used to read as a machine without CUDA (exit 0)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cuda_ipc(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script edits the import path
    spec = importlib.util.spec_from_file_location("bench_cuda_ipc", ROOT / "benchmarks" / "cuda_ipc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_server_that_offers_cuda_ipc_is_no_problem(cuda_ipc: ModuleType) -> None:
    assert cuda_ipc.ready_problem("ready 1", None) is None
    assert cuda_ipc.ready_problem("ready 3", None) is None


@pytest.mark.parametrize(
    ("line", "returncode", "reason"),
    [
        ("", 1, "exited with status 1"),  # died before its ready line
        ("ready 1", -9, "exited with status -9"),  # ready, then died
        ("", None, "not 'ready FEATURES'"),  # silent
        ("ready", None, "not 'ready FEATURES'"),  # no features: ready[1] was an IndexError
        ("Traceback (most recent call last):", None, "not 'ready FEATURES'"),
        ("ready yes", None, "not 'ready FEATURES'"),
        ("ready 0", None, "did not offer CUDA IPC"),
    ],
)
def test_a_dead_or_malformed_server_is_a_problem(
    cuda_ipc: ModuleType, line: str, returncode: int | None, reason: str
) -> None:
    problem = cuda_ipc.ready_problem(line, returncode)
    assert problem is not None and reason in problem


def test_a_failed_run_prints_its_reason_with_cuda_available_and_exits_1(
    cuda_ipc: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "the CUDA server exited with status 1 (its first line: '')"
    monkeypatch.setattr(cuda_ipc, "run", lambda iterations, warmup: cuda_ipc._failed(reason))
    assert cuda_ipc.main(["--json", "--quick"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    doc = json.loads(out[0])
    assert doc["cuda_available"] is True and doc["failed"] is True and doc["reason"] == reason
    assert doc["target_met"] is None


def test_a_machine_without_cuda_is_not_a_failure(
    cuda_ipc: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cuda_ipc, "run", lambda iterations, warmup: cuda_ipc._not_run("no CUDA device"))
    assert cuda_ipc.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cuda_available"] is False and doc["failed"] is False
