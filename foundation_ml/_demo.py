"""``foundation demo``: serve the demo model in a child process, call it, print outputs and latency, stop."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from ._plugin import DEMO_MODEL

if TYPE_CHECKING:
    import numpy as np

    from foundation_core import Hub

__all__ = ["demo_main"]


def _transport_problem(transport: str, hub: Hub) -> str:
    """Why the demo cannot run over ``transport`` ("" if it can): it serves the torch demo model
    from a child process."""
    from foundation_core.errors import NotRegisteredError

    from ._transport import make_transport

    try:
        cross_process = make_transport(hub, transport).cross_process
        hub.model_backends.get("torch")  # the demo model is a torch module
    except NotRegisteredError as exc:
        return str(exc)
    if not cross_process:
        return f"the demo serves from a child process; {transport} reaches only servers in the same process"
    return ""


def demo_main(args: argparse.Namespace, hub: Hub) -> int:
    import numpy as np

    from ._client import InferenceClient
    from ._process import ServerProcess, ServerStartError, shm_entries
    from ._signature import example_inputs, parse_signature

    problem = _transport_problem(args.transport, hub)
    if problem:
        print(f"foundation demo: error: {problem}", file=sys.stderr)
        return 2
    name = f"demo_{os.getpid()}"
    print(f"1. starting `foundation serve --transport {args.transport} --name {name}` (the demo MLP)")
    try:
        server = ServerProcess(["--transport", args.transport, "--name", name, "--threads", "1"]).start()
    except ServerStartError as exc:
        print("foundation demo: error: the server did not start; it printed:", file=sys.stderr)
        for line in exc.output.splitlines():
            print(f"   server: {line}", file=sys.stderr)
        return 1
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
            same &= _native_clients(name, x["x"], y)
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


#: The native clients' example drivers, where their builds put them (a source checkout).
NATIVE_CLIENTS = {
    "C": "clients/c/build/fdn-client",
    "Rust": "clients/rust/target/release/examples/fdn-client",
    "Go": "clients/go/bin/fdn-client",
}


def _native_clients(name: str, x: np.ndarray, y: np.ndarray) -> bool:
    """Call the model with every native client that is built; True if all gave ``y``."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    import numpy as np

    root = Path(__file__).resolve().parents[1]
    found = {lang: root / rel for lang, rel in NATIVE_CLIENTS.items() if (root / rel).is_file()}
    if not found:
        where = "make -C clients/c" if (root / "clients").is_dir() else "they build from a source checkout"
        print(f"   native clients: none built ({where}; see docs/clients.md)")
        return True
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "x.bin"
        raw.write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
        dims = ",".join(map(str, x.shape))
        for lang, exe in found.items():
            cmd = [
                str(exe),
                "infer",
                "--name",
                name,
                "--model",
                DEMO_MODEL,
                "--input",
                f"x:FP32:{dims}:{raw}",
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                doc = json.loads(proc.stdout.strip().splitlines()[-1])
                got = np.asarray(doc["outputs"]["y"]["data"], np.float32).reshape(y.shape)
                same = bool(np.array_equal(got, y))
            except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired) as exc:
                print(f"   {lang} client ({exe.name}): failed: {exc!r}")
                ok = False
                continue
            print(f"   {lang} client: y argmax {int(got.argmax())}, same as the Python client: {same}")
            ok &= same
    return ok


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
