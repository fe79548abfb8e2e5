"""``foundation infer`` and ``stats``: a running server's client from the shell."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from ._cli_inputs import load_inputs
from ._plugin import DEFAULT_NAME

if TYPE_CHECKING:
    import numpy as np

    from foundation_core import Hub

    from ._client import InferenceClient

__all__ = ["infer_main", "stats_main"]


def _connect(args: argparse.Namespace, hub: Hub, command: str, **kw: Any) -> InferenceClient:
    """The client of ``args.name`` on ``args.transport``, with ``args.timeout`` if one was given; a
    name or option the transport refuses (``ValueError``: ``a/b`` for shm), a transport that is
    not installed, or one that reaches no other process (inproc: this command's process serves
    nothing), ends the command with exit 2 and the reason."""
    from ._cli import check_cross_process
    from ._client import InferenceClient

    if args.timeout is not None:  # else the client's default: the configured timeout, else 30 s
        kw["timeout"] = args.timeout
    from foundation_core.errors import NotRegisteredError

    try:
        check_cross_process(hub, args.transport, command)
        return InferenceClient(args.name, transport=args.transport, hub=hub, **kw)
    except (ValueError, NotRegisteredError) as exc:  # --transport names none installed: as serve says it
        print(f"foundation {command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def infer_main(args: argparse.Namespace, hub: Hub) -> int:
    import numpy as np

    from ._client_args import check_version
    from .errors import InferenceError

    hub.configure(args.config, args.set)  # the transport's config section sets the client's options
    try:
        with _connect(args, hub, "infer") as client:
            if args.version:  # as infer would, before the metadata
                check_version(args.model, args.version)
            meta = _version_metadata(client.metadata(args.model), args.model, args.version)
            inputs = load_inputs(args.input, meta)
            t0 = time.perf_counter()
            response = client.infer_response(args.model, inputs, version=args.version)
            elapsed_us = (time.perf_counter() - t0) * 1e6
    except InferenceError as exc:
        print(f"foundation infer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    outputs = {k: _shown(v) for k, v in response.outputs.items()}
    if args.json:
        doc = {
            "model": response.model,
            "version": response.version,
            "outputs": {
                k: {"shape": list(v.shape), "dtype": dtype, "datatype": datatype, "data": _json_data(v)}
                for k, (datatype, dtype, v) in outputs.items()
            },
            "latency_us": round(elapsed_us, 1),
        }
        print(json.dumps(doc, allow_nan=False))
        return 0
    with np.printoptions(precision=4, suppress=True, threshold=64):
        for k, (_, dtype, v) in outputs.items():
            print(f"{k}: {dtype}{list(v.shape)}\n{v}")
    print(
        f"latency: {elapsed_us:.0f} µs (one call over {args.transport}, "
        f"model {response.model} v{response.version})"
    )
    return 0


def _shown(array: np.ndarray) -> tuple[str, str, np.ndarray]:
    """An output's datatype, its dtype's name and its values: BF16 bit patterns as the float32
    values they are (exactly), dtype ``bfloat16``; anything else as it came."""
    from ._bfloat16 import bf16_values
    from ._datatypes import DataType

    datatype = DataType.from_numpy(array.dtype)
    if datatype is DataType.BF16:
        return datatype.name, "bfloat16", bf16_values(array)
    return datatype.name, str(array.dtype), array


def _version_metadata(meta: dict[str, Any], model: str, version: str) -> dict[str, Any]:
    """The metadata with the signature of ``version`` (the latest's when empty, or when the server
    sends no per-version ``signatures``); a version the server does not have is ModelNotFound."""
    from .errors import ModelNotFound

    if not version or "signatures" not in meta:
        return meta
    signature = meta["signatures"].get(version)
    if signature is None:
        have = ", ".join(meta["signatures"])
        raise ModelNotFound(f"no version {version!r} (versions: {have})", model=model)
    return {**meta, **signature}


def _json_data(array: np.ndarray) -> Any:
    """``array.tolist()`` as strict JSON holds it: a NaN or an infinity (which ``json.dumps``
    would write as the bare ``NaN``/``Infinity`` that strict parsers refuse) becomes the string
    ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    import numpy as np

    data = array.tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _finite(data)
    return data


def _finite(data: Any) -> Any:
    if isinstance(data, list):
        return [_finite(x) for x in data]
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else "Infinity" if data > 0 else "-Infinity"
    return data


def stats_main(args: argparse.Namespace, hub: Hub) -> int:
    from ._metrics import prometheus_text
    from .errors import InferenceError

    given = [n for n in (args.name, args.name_option) if n is not None]  # "" is a name, refused as one
    if len(given) == 2 and given[0] != given[1]:
        names = f"{given[0]!r} and --name {given[1]!r}"
        print(f"foundation stats: error: two server names, {names}", file=sys.stderr)
        return 2
    args.name = given[0] if given else DEFAULT_NAME
    hub.configure(args.config, args.set)
    try:
        with _connect(args, hub, "stats") as client:
            doc = client.stats()
    except InferenceError as exc:
        print(f"foundation stats: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if args.prometheus:
        server = doc.get("server", {})  # (a server from before in_flight was kept: none)
        sys.stdout.write(
            prometheus_text(doc["models"], args.name, server.get("rejected"), server.get("in_flight"))
        )
        return 0
    server = doc.get("server", {})
    print(f"server {args.name!r} on {args.transport}: up {server.get('uptime_s', 0):.0f} s")
    rejected = server.get("rejected") or {}
    if rejected:  # refused for no model: unknown ones, the server stopping, malformed requests
        print("rejected (no model): " + ", ".join(f"{c} {n}" for c, n in sorted(rejected.items())))
    rows: list[tuple[str, ...]] = [
        ("model", "version", "requests", "errors", "p50 µs", "p95 µs", "p99 µs", "batch", "queue")
    ]
    for name, top in doc.get("models", {}).items():
        for version, m in (top.get("versions") or {top.get("version", ""): top}).items():
            lat = m.get("latency_us") or {}
            rows.append(
                (
                    name,
                    str(version),
                    str(m["requests"]),
                    str(m["errors"]),
                    # none recorded yet is "-": a 0.0 µs latency read as a fast model
                    *(f"{lat[k]:.1f}" if k in lat else "-" for k in ("p50", "p95", "p99")),
                    "-" if m.get("mean_batch_size") is None else f"{m['mean_batch_size']:.2f}",
                    str(m["queue_depth"]),
                )
            )
    print(_table(rows))
    return 0


def _table(rows: list[tuple[str, ...]]) -> str:
    """Columns sized to their widest cell, two spaces apart; the first left-aligned, the rest right
    (fixed widths ran a 1 s p95 into the p99 beside it, and a long model name shifted every column)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )
