"""Per-model metrics: counters, a sliding latency window and running latency sum, batch sizes,
queue depth; Prometheus text.

Recording is a few integer operations under an uncontended lock; percentiles are computed when
metrics are read (``snapshot()``), never per request. Latency is measured server-side, from the
moment the transport hands the request over to the moment the response is handed back.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ModelMetrics", "prometheus_text"]

WINDOW = 4096  # percentiles are over the most recent WINDOW requests


class ModelMetrics:
    """Counts for one served model (one version)."""

    __slots__ = (
        "_lat",
        "_lat_sum",
        "_lock",
        "_n",
        "batch_sizes",
        "batches",
        "errors",
        "errors_by_code",
        "failed_batches",
        "max_queue_depth",
        "queue_depth",
        "requests",
        "started",
        "window",
    )

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self.window = window
        self._lat = array("q", bytes(8 * window))
        self._n = 0  # latencies recorded, ever (the window holds the last ``window`` of them)
        self._lat_sum = 0  # their sum in ns, ever: an int, so exact however long it runs
        self.requests = 0
        self.errors = 0
        self.errors_by_code: dict[str, int] = {}
        self.batches = 0
        self.batch_sizes: dict[int, int] = {}
        self.failed_batches = 0
        self.queue_depth = 0
        self.max_queue_depth = 0
        self.started = time.monotonic()

    def record(self, latency_ns: int, error: str | None = None, batch: int = 0) -> None:
        """One request answered (``error``: the error's code name, or None on success); ``batch``:
        the size of the backend call it ran alone in (1), or 0 when the batcher counts calls."""
        with self._lock:
            self.requests += 1
            if batch:
                self.batches += 1
                self.batch_sizes[batch] = self.batch_sizes.get(batch, 0) + 1
            self._lat[self._n % self.window] = latency_ns
            self._n += 1
            self._lat_sum += latency_ns
            if error is not None:
                self.errors += 1
                self.errors_by_code[error] = self.errors_by_code.get(error, 0) + 1

    def refused(self, error: str) -> None:
        """One request the transport answered ``error`` (its code name) itself, without handing it
        over (``RequestHandler.rejected``): a request and an error, and no latency (none was
        measured: a refusal's would pull the percentiles towards 0)."""
        with self._lock:
            self.requests += 1
            self.errors += 1
            self.errors_by_code[error] = self.errors_by_code.get(error, 0) + 1

    def record_batch(self, size: int, failed: bool = False) -> None:
        """One batched backend call of ``size`` requests; ``failed``: it raised or broke the output
        signature, and its requests were re-run one by one (each of those calls counts too)."""
        with self._lock:
            self.batches += 1
            self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
            self.failed_batches += failed

    def enqueued(self, depth: int) -> None:
        self.queue_depth = depth
        if depth > self.max_queue_depth:
            self.max_queue_depth = depth

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able document: counts, latency percentiles in µs, batch sizes, queue depth.
        ``latency_count`` and ``latency_sum_us``: every latency recorded since the model was
        loaded (not only the window's), and their sum, for a Prometheus summary's ``_count`` and
        ``_sum``; a refused request (``refused``) has no latency and counts in neither."""
        with self._lock:
            n = min(self._n, self.window)
            count, total_ns = self._n, self._lat_sum
            lat = np.frombuffer(self._lat, dtype=np.int64)[:n].copy()
            doc: dict[str, Any] = {
                "requests": self.requests,
                "errors": self.errors,
                "errors_by_code": dict(sorted(self.errors_by_code.items())),
                "batches": self.batches,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "failed_batches": self.failed_batches,
                "queue_depth": self.queue_depth,
                "max_queue_depth": self.max_queue_depth,
            }
            # under the lock: a record() adding a new size would break the iteration
            rows = sum(k * v for k, v in self.batch_sizes.items())
        doc["latency_count"] = count
        doc["latency_sum_us"] = total_ns / 1e3
        batches = doc["batches"]
        doc["mean_batch_size"] = round(rows / batches, 3) if batches else None
        elapsed = max(time.monotonic() - self.started, 1e-9)
        doc["throughput_rps"] = round(doc["requests"] / elapsed, 1)
        if n:
            p50, p95, p99 = np.percentile(lat, [50, 95, 99]) / 1e3
            doc["latency_us"] = {
                "p50": round(float(p50), 1),
                "p95": round(float(p95), 1),
                "p99": round(float(p99), 1),
                "max": round(float(lat.max()) / 1e3, 1),
                "mean": round(float(lat.mean()) / 1e3, 1),
                "window": int(n),
            }
        else:
            doc["latency_us"] = None
        return doc


def prometheus_text(
    models: Mapping[str, Mapping[str, Any]],
    server: str = "",
    rejected: Mapping[str, int] | None = None,
    in_flight: Mapping[str, int] | None = None,
) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``{model: snapshot}``: one series per
    model *and version* (a snapshot's ``versions``, ``{version: snapshot}``, when it has them),
    so loading a new version neither resets a counter nor moves its history to another series.
    ``rejected``: the server's refusals counted for no model (``stats()["server"]["rejected"]``,
    ``{code: count}``), as ``foundation_rejected_total`` by code; ``in_flight``: the requests each
    transport holds unanswered (``stats()["server"]["in_flight"]``, ``{transport: count}``), as
    the gauge ``foundation_in_flight_requests``."""
    lines: list[str] = []
    series = [
        (model, str(version), snap)
        for model, doc in sorted(models.items())
        for version, snap in sorted((doc.get("versions") or {doc.get("version", ""): doc}).items())
    ]

    def metric(
        name: str, kind: str, help: str, samples: Sequence[tuple[str, float] | tuple[str, float, str]]
    ) -> None:
        """``samples``: ``(labels, value)``, or ``(labels, value, suffix)`` for a summary's
        ``_sum`` and ``_count``."""
        lines.append(f"# HELP foundation_{name} {help}")
        lines.append(f"# TYPE foundation_{name} {kind}")
        lines.extend(
            f"foundation_{name}{sample[2] if len(sample) > 2 else ''}{{{sample[0]}}} {_number(sample[1])}"
            for sample in samples
        )

    def lab(model: str, version: str, **extra: str) -> str:
        pairs = {"server": server, "model": model, "version": version, **extra}
        return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())

    metric(
        "requests_total", "counter", "Requests answered.", [(lab(m, v), s["requests"]) for m, v, s in series]
    )
    metric(
        "errors_total",
        "counter",
        "Requests answered with an error, by error code.",
        [(lab(m, v, code=c), n) for m, v, s in series for c, n in s["errors_by_code"].items()],
    )
    # a summary: per series its quantiles over the recent window (none before the first
    # latency), then _sum and _count over every latency recorded since the version was loaded
    latency: list[tuple[str, float] | tuple[str, float, str]] = []
    for m, v, s in series:
        if s["latency_us"]:
            latency.extend(
                (lab(m, v, quantile=q), s["latency_us"][k])
                for q, k in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
            )
        if "latency_count" in s:  # a server from before they were kept: quantiles only
            latency += [(lab(m, v), s["latency_sum_us"], "_sum"), (lab(m, v), s["latency_count"], "_count")]
    metric(
        "latency_microseconds",
        "summary",
        "Server-side latency: quantiles over the recent window; _sum and _count since loaded.",
        latency,
    )
    metric("batches_total", "counter", "Backend calls.", [(lab(m, v), s["batches"]) for m, v, s in series])
    metric(
        "batch_size_total",
        "counter",
        "Backend calls by batch size.",
        [(lab(m, v, size=k), n) for m, v, s in series for k, n in s["batch_sizes"].items()],
    )
    metric(
        "failed_batches_total",
        "counter",
        "Batched backend calls that failed; their requests were re-run one by one.",
        [(lab(m, v), s["failed_batches"]) for m, v, s in series],
    )
    metric(
        "queue_depth",
        "gauge",
        "Requests waiting for a batch.",
        [(lab(m, v), s["queue_depth"]) for m, v, s in series],
    )
    metric(
        "rejected_total",
        "counter",
        "Requests refused for no served model (unknown model, server stopping, malformed), by error code.",
        [(f'server="{_escape(server)}",code="{_escape(c)}"', n) for c, n in sorted((rejected or {}).items())],
    )
    metric(
        "in_flight_requests",
        "gauge",
        "Requests a transport has taken or holds waiting, not yet answered (a stuck model call holds them).",
        [
            (f'server="{_escape(server)}",transport="{_escape(t)}"', n)
            for t, n in sorted((in_flight or {}).items())
        ],
    )
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Exact: an integer as itself (``:g`` printed 1234567 as 1.23457e+06), a float round-trip."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    f = float(value)
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    return repr(f)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
