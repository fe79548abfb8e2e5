"""The runtime's own cost per request, in one process, against how much memory the model reads.

    python benchmarks/runtime_overhead.py [--json] [--quick] [--sizes-kb 0,256,512,1024,4096]

A model that reads little memory leaves the runtime's Python in the CPU's caches; one that reads
about as much as a core's L2 cache (the demo MLP reads 800 KB of weights per call) evicts it,
and the same Python then runs from further away. This separates the two, with no transport and
no second process involved: for each size S it serves a torch module that reads an S KB buffer
and returns ``x[:, :10] * 2`` and times, interleaved call by call so that the machine's drift
hits them alike:

- ``direct``: the module called as a user's own code would (``inference_mode``, ``from_numpy``,
  ``.numpy()``): the baseline;
- ``handler``: ``runtime(request, respond)``, what every transport calls (validation, the
  backend, metrics, the response object);
- ``inproc``: ``InferenceClient(..., transport="inproc").infer``: the client's Python as well.

It does the same for the demo MLP itself (``demo``). Each figure is a p50 in µs; ``*_overhead_us``
is that path minus ``direct``, and ``overhead_growth`` the largest size's ``inproc`` overhead
over the smallest's. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds modules named like the stdlib's (logging.py): never ahead of the stdlib on
# the import path; at its end only for _common
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import BenchmarkFailed, benchmark_run  # noqa: E402
from foundation_torch.demo import SIGNATURE, build_demo  # noqa: E402

from foundation_ml import InferenceClient, InferenceError, InferenceRequest, MLRuntime  # noqa: E402
from foundation_ml._bench import direct_call  # noqa: E402


class Reader(torch.nn.Module):
    """Reads ``kb`` KB of memory per call (as a model's weights are read), returns 10 columns."""

    foundation_signature = SIGNATURE

    def __init__(self, kb: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.ones(kb * 256))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights.numel():
            self.weights.sum()
        return x[:, :10] * 2


def _check(path: str, answer: Any, want: np.ndarray) -> None:
    """``answer``, a path's first, is a success whose output ``y`` has ``want``'s shape and values:
    a path that fails or answers wrongly must fail the run, not be timed as if it worked."""
    if isinstance(answer, InferenceError):
        raise BenchmarkFailed(f"the {path} path failed: {type(answer).__name__}: {answer}")
    outputs = getattr(answer, "outputs", answer)  # a response (handler) or its outputs (client)
    y = outputs.get("y") if isinstance(outputs, Mapping) else None
    if y is None or np.shape(y) != want.shape or not np.allclose(y, want, rtol=1e-5, atol=1e-6):
        shown = {k: np.shape(v) for k, v in outputs.items()} if isinstance(outputs, Mapping) else outputs
        raise BenchmarkFailed(f"the {path} path answered {shown!r}, not y of shape {want.shape}")


def measure(model: torch.nn.Module, calls: int) -> dict[str, float]:
    """p50 µs of the three paths over ``model``, interleaved call by call."""
    direct, x = direct_call(model, threads=1)
    name = f"overhead_{os.getpid()}"
    with MLRuntime() as runtime:
        runtime.register_model("m", model, threads=1)
        runtime.start("inproc", name)
        got: list[Any] = []

        def handler(a: np.ndarray) -> Any:
            runtime(InferenceRequest("m", {"x": a}), got.append)
            return got.pop()

        with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
            paths: dict[str, Callable[[np.ndarray], Any]] = {
                "direct": direct,
                "handler": handler,
                "inproc": lambda a: client.infer("m", {"x": a}),
            }
            want = direct(x)
            if np.shape(want) != (x.shape[0], 10):  # the signature's y: FP32[-1, 10]
                raise BenchmarkFailed(
                    f"the direct call returned shape {np.shape(want)}, not {(x.shape[0], 10)}"
                )
            for k in ("handler", "inproc"):
                _check(k, paths[k](x), want)
            times = {k: np.empty(calls, np.int64) for k in paths}
            clock = time.perf_counter_ns
            for i in range(-min(300, calls), calls):  # the first (negative) calls warm up
                for k, call in paths.items():
                    t0 = clock()
                    call(x)
                    if i >= 0:
                        times[k][i] = clock() - t0
    p50 = {k: float(np.percentile(v, 50)) / 1e3 for k, v in times.items()}
    return {
        "direct_p50_us": round(p50["direct"], 2),
        "handler_p50_us": round(p50["handler"], 2),
        "inproc_p50_us": round(p50["inproc"], 2),
        "handler_overhead_us": round(p50["handler"] - p50["direct"], 2),
        "inproc_overhead_us": round(p50["inproc"] - p50["direct"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="fewer calls (smoke run)")
    p.add_argument("--sizes-kb", default="0,256,512,1024,4096", help="memory read per call, KB")
    p.add_argument("--calls", type=int, default=6000, help="calls per path and size")
    args = p.parse_args(argv)
    calls = 300 if args.quick else args.calls
    sizes = [int(s) for s in args.sizes_kb.split(",")]
    torch.set_num_threads(1)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "calls": calls, "sizes_kb": sizes}
    try:
        # the in-process runtime logs (server.started...): with --json, to stderr, never stdout
        with benchmark_run(args.json):
            for kb in sizes:
                result[f"read_{kb}kb"] = measure(Reader(kb).eval(), calls)
            result["demo"] = measure(build_demo(), calls)
    except BenchmarkFailed as exc:
        print(f"runtime_overhead.py: error: {exc}", file=sys.stderr)
        return 1
    first, last = result[f"read_{sizes[0]}kb"], result[f"read_{sizes[-1]}kb"]
    result["overhead_growth"] = round(last["inproc_overhead_us"] / max(first["inproc_overhead_us"], 0.01), 2)
    if args.json:
        print(json.dumps(result))
    else:
        head = f"{'model':<14}{'direct':>9}{'handler':>9}{'inproc':>9}{'+handler':>10}{'+inproc':>9}"
        print(f"{head}  (p50 µs)")
        for key in [f"read_{kb}kb" for kb in sizes] + ["demo"]:
            r = result[key]
            print(
                f"{key:<14}{r['direct_p50_us']:>9.1f}{r['handler_p50_us']:>9.1f}{r['inproc_p50_us']:>9.1f}"
                f"{r['handler_overhead_us']:>10.1f}{r['inproc_overhead_us']:>9.1f}"
            )
        print(f"overhead_growth {result['overhead_growth']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
