"""``foundation demo``: serve the demo model in a child process, call it, print outputs and latency, stop."""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

from ._plugin import DEMO_MODEL

if TYPE_CHECKING:
    import numpy as np

    from foundation_core import Hub

__all__ = ["demo_main"]


def demo_main(args: argparse.Namespace, hub: Hub) -> int:
    import numpy as np

    from ._client import InferenceClient
    from ._process import ServerProcess, shm_entries
    from ._signature import example_inputs, parse_signature

    name = f"demo_{os.getpid()}"
    print(f"1. starting `foundation serve --transport {args.transport} --name {name}` (the demo MLP)")
    server = ServerProcess(["--transport", args.transport, "--name", name, "--threads", "1"]).start()
    try:
        for line in server.lines:
            print(f"   server: {line.rstrip()}")
        with InferenceClient(name, transport=args.transport, hub=hub) as client:
            meta = client.metadata(DEMO_MODEL)
            sig = ", ".join(f"{t['name']}: {t['datatype']}{t['shape']}" for t in meta["inputs"])
            print(f"2. model {DEMO_MODEL!r} v{meta['versions'][-1]} takes {sig}")
            x = example_inputs(parse_signature(meta["inputs"]))
            y = client.infer(DEMO_MODEL, x)["y"]
            with np.printoptions(precision=4, suppress=True):
                print(f"3. infer -> y: {y.dtype}{list(y.shape)} = {y[0]}, argmax {int(y.argmax())}")
            reference = _direct(x["x"])
            same = reference is not None and np.array_equal(y, reference)
            print(f"   same as calling the PyTorch module directly in this process: {same}")
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter_ns()
                client.infer(DEMO_MODEL, x)
                times.append(time.perf_counter_ns() - t0)
            p50, p99 = np.percentile(times, [50, 99]) / 1e3
            print(
                f"4. latency over {args.calls} calls ({args.transport}, batch 1): "
                f"p50 {p50:.1f} µs, p99 {p99:.1f} µs"
            )
            served = client.stats()["models"][DEMO_MODEL]
            lat = served["latency_us"]
            print(
                f"   server side: {served['requests']} requests, p50 {lat['p50']} µs, "
                f"{served['errors']} errors"
            )
    finally:
        rc = server.stop()
    left = shm_entries(name)
    print(f"5. SIGTERM -> server exited with status {rc}; /dev/shm entries left: {left or 'none'}")
    for line in server.output.splitlines()[-1:]:
        print(f"   server: {line}")
    return 0 if rc == 0 and not left and same else 1


def _direct(x: np.ndarray) -> np.ndarray | None:
    """The demo MLP called in-process on ``x`` (None if torch is not installed)."""
    try:
        import torch
        from foundation_torch.demo import build_demo
    except ImportError:
        return None
    with torch.inference_mode():
        y: np.ndarray = build_demo()(torch.from_numpy(x)).numpy()
        return y
