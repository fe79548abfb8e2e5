"""CUDA IPC benchmark: a 64 MB float32 CUDA tensor round trip through host shm vs by IPC handle.

Both paths call the same server process (``python -m foundation_shm._cuda_serve``, model
``scale``: ``x * 2`` on ``cuda:0``) from a client whose input is a CUDA tensor and whose output
must be a CUDA tensor it owns:

- ``host_path_ms``: ``cuda_ipc=False``: device → host copy, the request area, host → device on the
  server, the model, device → host, the response area, host → device in the client;
- ``ipc_path_ms``: ``cuda_ipc=True, copy_outputs=True``: the input by handle, the model, the output
  by handle, one device-to-device copy so the client owns it (``ipc_view_path_ms``: no copy, the
  output is a view valid until the next call);
- ``torch_to_cuda_64mb_ms``: the floor of the host path's last step alone, ``x.to("cuda")``;
- ``host_copies_ms``: the host path's copies alone, in one process with no transport: device →
  host, into a host buffer, host → device, the model, device → host, into a buffer, host → device;
- ``direct_ms``: the model alone in one process (``x * 2``), the floor of ``ipc_view_path_ms``.

Medians of ``--iterations`` calls after warm-up, each ended by ``torch.cuda.synchronize()``.
Target: ``ipc_path_ms <= 0.2 * host_path_ms``. Without CUDA it prints why it could not run
(``cuda_available`` false, exit 0). With CUDA, a server that dies or does not answer ``ready
FEATURES`` (FEATURES non-zero) is a failed run: ``cuda_available`` true, the reason, exit 1.

.venv/bin/python benchmarks/cuda_ipc.py --json
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds modules named like the stdlib's (logging.py): never ahead of the stdlib on
# the import path; at its end only for _common
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from _common import benchmark_run, stop_process  # noqa: E402

SIZE_BYTES = 64 << 20
TARGET = 0.2
READY_TIMEOUT = 300.0  # s: the server imports torch and initialises CUDA before it answers
KEYS = (
    "host_path_ms",
    "ipc_path_ms",
    "ipc_view_path_ms",
    "torch_to_cuda_64mb_ms",
    "host_copies_ms",
    "direct_ms",
)


def _not_run(reason: str) -> dict[str, Any]:
    return {
        "cuda_available": False,
        "failed": False,
        "reason": reason,
        "tensor_bytes": SIZE_BYTES,
        **dict.fromkeys(KEYS),
        "host_path_over_copies": None,
        "ipc_view_over_direct": None,
        "ipc_over_host": None,
        "target": f"ipc_path_ms <= {TARGET} * host_path_ms",
        "target_met": None,
    }


def _failed(reason: str) -> dict[str, Any]:
    """The document of a run that failed on a machine with CUDA: no figures, the reason."""
    return {**_not_run(reason), "cuda_available": True, "failed": True}


def ready_problem(line: str, returncode: int | None) -> str | None:
    """What is wrong with the CUDA server, from the first line it printed (``""`` if none) and
    its exit status (``None`` while it runs), or ``None`` if it serves with CUDA IPC (``ready
    FEATURES``, FEATURES a non-zero number). Any other answer fails the run: CUDA was found
    before the server started, so this is not a machine without CUDA."""
    if returncode is not None:
        return f"the CUDA server exited with status {returncode} (its first line: {line!r})"
    words = line.split()
    if len(words) != 2 or words[0] != "ready" or not words[1].isdigit():
        return f"the CUDA server's first line is not 'ready FEATURES': {line!r}"
    if int(words[1]) == 0:
        return f"the CUDA server did not offer CUDA IPC with --cuda-ipc on: {line!r}"
    return None


def _ready_line(server: subprocess.Popen[str]) -> tuple[str, int | None]:
    """(the server's first line, or "" if it printed none in ``READY_TIMEOUT``; its exit status
    then, or None while it runs)."""
    assert server.stdout is not None
    readable, _, _ = select.select([server.stdout], [], [], READY_TIMEOUT)
    line = server.stdout.readline() if readable else ""
    if not line:  # ended (or silent): give an exiting process a moment to be reaped
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(2)
    return line.strip(), server.poll()


def _timed(fn: Any, iterations: int, warmup: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def run(iterations: int, warmup: int) -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return _not_run(f"torch is not importable: {exc}")
    if not torch.cuda.is_available():
        return _not_run(f"no CUDA device: torch {torch.__version__} reports torch.cuda.is_available() False")
    import numpy as np
    from foundation_shm import ShmTransport
    from foundation_shm._objects import remove_objects

    from foundation_ml import InferenceRequest

    name = f"bench_cuda_{os.getpid()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "foundation_shm._cuda_serve", name, "--cuda-ipc", "on"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        problem = ready_problem(*_ready_line(server))
        if problem is not None:
            return _failed(problem)
        x = torch.randn(SIZE_BYTES // 4, device="cuda:0")
        want = x * 2
        cap = SIZE_BYTES + (1 << 20)
        host = ShmTransport().connect(name, cuda_ipc=False, capacity=cap, timeout=60)
        ipc = ShmTransport().connect(name, cuda_ipc=True, copy_outputs=True, timeout=60)
        view = ShmTransport().connect(name, cuda_ipc=True, timeout=60)
        try:
            for client in (host, ipc, view):
                out = client.infer(InferenceRequest("scale", {"x": x})).outputs["x"]
                if not (out.is_cuda and torch.equal(out, want)):
                    raise AssertionError("wrong result")
            cpu = x.cpu()
            buf_in, buf_out = np.empty(SIZE_BYTES // 4, np.float32), np.empty(SIZE_BYTES // 4, np.float32)

            def host_copies() -> Any:  # what the host path copies, without processes or shm
                buf_in[:] = x.cpu().numpy()
                y = torch.from_numpy(buf_in).to("cuda:0") * 2
                buf_out[:] = y.cpu().numpy()
                return torch.from_numpy(buf_out).to("cuda:0")

            result = {
                "cuda_available": True,
                "failed": False,
                "device": torch.cuda.get_device_name(0),
                "torch": torch.__version__,
                "tensor_bytes": SIZE_BYTES,
                "iterations": iterations,
                "host_path_ms": _timed(
                    lambda: host.infer(InferenceRequest("scale", {"x": x})), iterations, warmup
                ),
                "ipc_path_ms": _timed(
                    lambda: ipc.infer(InferenceRequest("scale", {"x": x})), iterations, warmup
                ),
                "ipc_view_path_ms": _timed(
                    lambda: view.infer(InferenceRequest("scale", {"x": x})), iterations, warmup
                ),
                "torch_to_cuda_64mb_ms": _timed(lambda: cpu.to("cuda:0"), iterations, warmup),
                "host_copies_ms": _timed(host_copies, iterations, warmup),
                "direct_ms": _timed(lambda: x * 2, iterations, warmup),
            }
        finally:
            for client in (host, ipc, view):
                client.close()
        ratio = result["ipc_path_ms"] / result["host_path_ms"]
        result.update(
            host_path_over_copies=result["host_path_ms"] / result["host_copies_ms"],
            ipc_view_over_direct=result["ipc_view_path_ms"] / result["direct_ms"],
            ipc_over_host=ratio,
            target=f"ipc_path_ms <= {TARGET} * host_path_ms",
            target_met=ratio <= TARGET,
        )
        return result
    finally:
        stop_process(server)
        remove_objects(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    p.add_argument("--iterations", type=int, default=20)
    args = p.parse_args(argv)
    iterations, warmup = (5, 1) if args.quick else (args.iterations, 3)
    with benchmark_run(args.json):
        result = run(iterations, warmup)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<24}  {value:,.3f}" if isinstance(value, float) else f"{key:<24}  {value}")
    return 1 if result.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
