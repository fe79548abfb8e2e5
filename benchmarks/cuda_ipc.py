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
Target: ``ipc_path_ms <= 0.2 * host_path_ms``. Without CUDA it prints why it could not run (exit 0).

.venv/bin/python benchmarks/cuda_ipc.py --json
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Scripts in benchmarks/ are named after what they measure (logging.py...): keep this directory
# off sys.path so that they cannot shadow the standard library's modules.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

SIZE_BYTES = 64 << 20
TARGET = 0.2
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
        "reason": reason,
        "tensor_bytes": SIZE_BYTES,
        **dict.fromkeys(KEYS),
        "host_path_over_copies": None,
        "ipc_view_over_direct": None,
        "ipc_over_host": None,
        "target": f"ipc_path_ms <= {TARGET} * host_path_ms",
        "target_met": None,
    }


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
        assert server.stdout is not None
        ready = server.stdout.readline().split()
        if not ready or ready[0] != "ready" or ready[1] == "0":
            return _not_run(f"the server did not offer CUDA IPC: {ready!r}")
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
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        remove_objects(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    p.add_argument("--iterations", type=int, default=20)
    args = p.parse_args(argv)
    iterations, warmup = (5, 1) if args.quick else (args.iterations, 3)
    result = run(iterations, warmup)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<24}  {value:,.3f}" if isinstance(value, float) else f"{key:<24}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
