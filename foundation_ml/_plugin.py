"""foundation_ml's own plugin: the ``inproc`` transport and the ML commands (lazily: no numpy here).

Commands: ``serve``, ``infer``, ``stats``, ``package``, ``bench``, ``demo``. Their handlers are
``"module:attr"`` strings, imported only when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from foundation_core import CommandRegistrar, Registrar, hookimpl

DEFAULT_NAME = "foundation"  # the server name when none is given (serve, infer, stats)
DEMO_MODEL = "demo"
DEMO_SPEC = "foundation_torch.demo:build_demo"


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low`` (and <= ``high``, if given; argparse names the
    flag in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, not {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, not {value}")
        return value

    return parse


# _batching.MAX_WAIT_US (not imported: this module loads with every command, numpy-free)
_MAX_WAIT_US = 10_000_000
_MAX_THREADS = 1024  # foundation_torch's MAX_THREADS: a process asked for more crashes in torch


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text}")
    return value


_MAX_TIMEOUT_S = 1e9  # a client's longest timeout (_client_args.MAX_TIMEOUT_S; about 31 years)


def _timeout_seconds(text: str) -> float:
    """``--timeout``: seconds > 0, at most a client's longest timeout (1e300 passed here and was
    then refused as 'InferenceClient: timeout must be ...', naming no flag)."""
    value = _positive_seconds(text)
    if value > _MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_TIMEOUT_S:g} seconds, not {text}")
    return value


@hookimpl
def foundation_register_transports(register: Registrar) -> None:
    register("inproc", "foundation_ml._inproc:InprocTransport")


@hookimpl
def foundation_register_commands(cli: CommandRegistrar) -> None:
    p = cli.add_command(
        "serve",
        "foundation_ml._cli_serve:serve_main",
        help="serve models until SIGINT/SIGTERM (default: the demo)",
    )
    _serve_arguments(p)
    p = cli.add_command(
        "infer", "foundation_ml._cli_client:infer_main", help="call a model of a running server"
    )
    _client_arguments(p)
    p.add_argument("--model", default=DEMO_MODEL, help=f"model name (default: {DEMO_MODEL})")
    p.add_argument("--version", default="", help="model version (default: the latest loaded)")
    p.add_argument(
        "--input",
        default=None,
        metavar="FILE",
        help=".npz, .npy or .json (default: the example input)",
    )
    _timeout_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = cli.add_command("stats", "foundation_ml._cli_client:stats_main", help="metrics of a running server")
    p.add_argument("name", nargs="?", default=None, help=f"server name (default: {DEFAULT_NAME})")
    p.add_argument(
        "--name", dest="name_option", default=None, metavar="NAME", help="the same, as infer takes it"
    )
    p.add_argument("--transport", default="shm", metavar="T", help="transport (default: shm)")
    _timeout_argument(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--prometheus", action="store_true", help="print Prometheus text format")
    p = cli.add_command("package", "foundation_ml._cli:package_main", help="write a model package")
    p.add_argument("--model", required=True, metavar="[NAME=]FACTORY", help="e.g. mnist=mypkg.models:build")
    p.add_argument("--name", default=None, help="model name (or NAME= in --model)")
    p.add_argument("--version", default="1", metavar="V", help="model version (default: 1)")
    p.add_argument("--out", required=True, metavar="PATH", help="a directory to create, or a .zip file")
    p.add_argument("--backend", default="torch", metavar="B", help="model backend (default: torch)")
    p = cli.add_command("bench", "foundation_ml._bench:bench_main", help="run the inference benchmark")
    _bench_arguments(p)
    p = cli.add_command(
        "demo", "foundation_ml._demo:demo_main", help="serve the demo model, call it, stop: end to end"
    )
    p.add_argument("--transport", default="shm", help="transport (default: shm)")
    p.add_argument(
        "--calls", type=_int_at_least(1), default=1000, metavar="N", help="calls timed for the latency line"
    )


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a model to serve (repeatable). SPEC: a factory 'pkg.module:build', a TorchScript "
        "(.pt, .ts, .torchscript, .jit) or torch.export (.pt2) file, or a model package (directory "
        "or .zip; NAME= optional). "
        f"Default: the embedded demo model, as {DEMO_MODEL!r}",
    )
    p.add_argument(
        "--backend",
        default=None,
        metavar="NAME",
        help="the model backend that loads each file or factory SPEC (default: torch; "
        "`foundation plugins` lists those installed); a model package names its own",
    )
    _client_arguments(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (default: cpu)")
    p.add_argument(
        "--max-batch-size",
        metavar="N",
        type=_int_at_least(1),
        default=None,
        help="batch batchable models, up to this many requests (not rows) per call (default: 1, off)",
    )
    p.add_argument(
        "--max-wait-us",
        metavar="US",
        type=_int_at_least(0, _MAX_WAIT_US),
        default=None,
        help="with --max-batch-size: longest wait for a batch to fill, µs (default: 500; at most "
        "10000000: 10 s)",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        type=_int_at_least(0, _MAX_THREADS),
        default=1,
        help="torch intra-op threads, at most 1024 (default: 1, best for small models; 0: torch's default)",
    )
    p.add_argument(
        "--metrics-file",
        default=None,
        metavar="PATH",
        help="rewrite this file with Prometheus text every second",
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="serve each --model without running its example input first (integers 0..9, "
        "standard-normal floats), which also checks its outputs against its signature: for a "
        "model that cannot take that input (an embedding of fewer than 10 rows, say)",
    )


def _client_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transport", default="shm", help="transport (default: shm)")
    p.add_argument("--name", default=DEFAULT_NAME, help=f"server name (default: {DEFAULT_NAME})")


def _timeout_argument(p: argparse.ArgumentParser) -> None:
    # None, not 30: the client then takes the transport's configured timeout ([shm] client_timeout)
    p.add_argument(
        "--timeout",
        metavar="S",
        type=_timeout_seconds,
        default=None,
        help="seconds (default: the transport's configured client timeout, else 30)",
    )


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--transport", default="shm", metavar="T", help="transport to measure (default: shm)")
    p.add_argument(
        "--calls", type=_int_at_least(1), default=3000, metavar="N", help="timed calls per latency figure"
    )
    p.add_argument(
        "--seconds", type=_positive_seconds, default=2.0, metavar="S", help="duration of each throughput run"
    )
    p.add_argument(
        "--clients",
        type=_int_at_least(1),
        default=4,
        metavar="N",
        help="client processes in the throughput runs",
    )
    p.add_argument(
        "--max-batch-size",
        metavar="N",
        type=_int_at_least(0),
        default=0,
        help="batch size of the batched run (default, 0: --clients)",
    )
    p.add_argument(
        "--max-wait-us",
        metavar="US",
        type=_int_at_least(0, _MAX_WAIT_US),
        default=200,
        help="batch wait of the batched run",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        type=_int_at_least(0, _MAX_THREADS),
        default=1,
        help="torch intra-op threads, direct and server (default: 1; 0: torch's default)",
    )
