"""Metrics, as properties: for any sequence of what is recorded, the counts are what was recorded,
the percentiles numpy's over the window, and the Prometheus text parses and says what stats() says.

What the implementation promises (``_metrics``, docs/serving.md "Metrics"): exact counts; latency
percentiles over the most recent ``window`` latencies, computed exactly (``np.percentile``) and
rounded to 0.1 µs; ``latency_count`` and ``latency_sum_us`` over every latency ever recorded.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_ml._metrics import ModelMetrics, prometheus_text
from foundation_ml._names import MAX_NAME_BYTES, MAX_VERSION_BYTES
from foundation_ml.errors import ErrorCode

parser = pytest.importorskip("prometheus_client.parser")

CODES = [c.name for c in ErrorCode if c is not ErrorCode.OK]
ROUNDING_US = 0.05  # the document rounds each figure to 0.1 µs

# one recorded event each: what ModelMetrics is told by the runtime, the batcher and the transports
latencies = st.one_of(st.integers(0, 10**7), st.integers(0, 2**62))  # ns; a few huge ones
events = st.one_of(
    st.tuples(st.just("record"), latencies, st.none() | st.sampled_from(CODES), st.integers(0, 64)),
    st.tuples(st.just("refused"), st.sampled_from(CODES)),
    st.tuples(st.just("record_batch"), st.integers(1, 64), st.booleans()),
    st.tuples(st.just("enqueued"), st.integers(0, 10**6)),
)


def _apply(metrics: ModelMetrics, recorded: list[tuple[Any, ...]]) -> None:
    for event in recorded:
        getattr(metrics, event[0])(*event[1:])


def _expected(recorded: list[tuple[Any, ...]], window: int) -> dict[str, Any]:
    """What a snapshot must say of ``recorded``, counted here independently."""
    lat = [e[1] for e in recorded if e[0] == "record"]
    errors = Counter(e[2] for e in recorded if e[0] == "record" and e[2] is not None)
    errors.update(e[1] for e in recorded if e[0] == "refused")
    sizes = Counter(e[3] for e in recorded if e[0] == "record" and e[3])
    sizes.update(e[1] for e in recorded if e[0] == "record_batch")
    depths = [e[1] for e in recorded if e[0] == "enqueued"]
    return {
        "requests": sum(e[0] in ("record", "refused") for e in recorded),
        "errors": sum(errors.values()),
        "errors_by_code": dict(sorted(errors.items())),
        "batches": sum(sizes.values()),
        "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "failed_batches": sum(1 for e in recorded if e[0] == "record_batch" and e[2]),
        "queue_depth": depths[-1] if depths else 0,
        "max_queue_depth": max(depths, default=0),
        "latency_count": len(lat),
        "latency_sum_us": sum(lat) / 1e3,
        "window": lat[-window:],
        "rows": sum(k * v for k, v in sizes.items()),
    }


@settings(max_examples=150, deadline=None)
@given(recorded=st.lists(events, max_size=80), window=st.integers(1, 40))
def test_a_snapshot_counts_what_was_recorded_and_its_percentiles_are_numpys(
    recorded: list[tuple[Any, ...]], window: int
) -> None:
    metrics = ModelMetrics(window=window)
    _apply(metrics, recorded)
    snap = metrics.snapshot()
    want = _expected(recorded, window)
    for key in ("requests", "errors", "errors_by_code", "batches", "batch_sizes", "failed_batches"):
        assert snap[key] == want[key], key
    for key in ("queue_depth", "max_queue_depth", "latency_count"):
        assert snap[key] == want[key], key
    assert snap["latency_sum_us"] == pytest.approx(want["latency_sum_us"], rel=1e-12)
    batches = want["batches"]
    assert snap["mean_batch_size"] == (round(want["rows"] / batches, 3) if batches else None)
    recent = np.array(want["window"], np.int64)
    if not len(recent):
        assert snap["latency_us"] is None
        return
    lat = snap["latency_us"]
    assert lat["window"] == len(recent) == min(window, want["latency_count"])
    exact = dict(zip(("p50", "p95", "p99"), np.percentile(recent, [50, 95, 99]) / 1e3, strict=True))
    exact |= {"max": recent.max() / 1e3, "mean": recent.mean() / 1e3}
    for key, value in exact.items():
        assert abs(lat[key] - value) <= ROUNDING_US + abs(value) * 1e-12, (key, lat[key], value)
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


# what a label value must escape, or could be mistaken for, drawn often: any other character too
tricky = st.sampled_from([*'\\"{},=# n\né模'])
names = st.text(
    tricky | st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
).filter(lambda s: s.isprintable() and s.strip() == s and len(s.encode()) <= MAX_NAME_BYTES)
versions = names.filter(lambda s: len(s.encode()) <= MAX_VERSION_BYTES)
servers = st.text(tricky | st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """The parsed text: ``{family: [(sample name, labels, value)]}``."""
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in parser.text_string_to_metric_families(text)
    }


@settings(max_examples=60, deadline=None)
@given(
    models=st.dictionaries(
        names,
        st.dictionaries(versions, st.lists(events, max_size=30), min_size=1, max_size=3),
        max_size=3,
    ),
    server=servers,
    rejected=st.dictionaries(st.sampled_from(CODES), st.integers(1, 2**63)),
)
def test_the_prometheus_text_parses_and_says_what_the_snapshots_say(
    models: dict[str, dict[str, list[tuple[Any, ...]]]], server: str, rejected: dict[str, int]
) -> None:
    docs: dict[str, Any] = {}
    snaps: dict[tuple[str, str], dict[str, Any]] = {}
    for model, by_version in models.items():
        for version, recorded in by_version.items():
            metrics = ModelMetrics(window=16)
            _apply(metrics, recorded)
            snaps[(model, version)] = {"version": version, **metrics.snapshot()}
        latest = snaps[(model, max(by_version))]
        docs[model] = {**latest, "versions": {v: snaps[(model, v)] for v in by_version}}
    families = _families(prometheus_text(docs, server, rejected))

    def series(family: str, sample: str | None = None, **extra: str) -> dict[tuple[str, ...], float]:
        """``{(model, version, *extra label values): value}`` of one family's samples."""
        out: dict[tuple[str, ...], float] = {}
        for name, labels, value in families[family]:
            if sample is not None and name != sample:
                continue
            assert labels.pop("server") == server
            key = (labels.pop("model"), labels.pop("version"), *(labels.pop(k) for k in extra))
            assert not labels and key not in out, (family, key)
            out[key] = value
        return out

    def each(get: Any) -> dict[tuple[str, ...], float]:
        return {k: v for (m, ver), s in snaps.items() for k, v in get(m, ver, s).items()}

    assert series("foundation_requests") == each(lambda m, v, s: {(m, v): s["requests"]})
    assert series("foundation_batches") == each(lambda m, v, s: {(m, v): s["batches"]})
    assert series("foundation_failed_batches") == each(lambda m, v, s: {(m, v): s["failed_batches"]})
    assert series("foundation_queue_depth") == each(lambda m, v, s: {(m, v): s["queue_depth"]})
    assert series("foundation_errors", code="") == each(
        lambda m, v, s: {(m, v, c): n for c, n in s["errors_by_code"].items()}
    )
    assert series("foundation_batch_size", size="") == each(
        lambda m, v, s: {(m, v, k): n for k, n in s["batch_sizes"].items()}
    )
    family = "foundation_latency_microseconds"
    assert series(family, f"{family}_count") == each(lambda m, v, s: {(m, v): s["latency_count"]})
    assert series(family, f"{family}_sum") == each(lambda m, v, s: {(m, v): s["latency_sum_us"]})
    quantiles = {"0.5": "p50", "0.95": "p95", "0.99": "p99"}
    assert series(family, family, quantile="") == each(
        lambda m, v, s: (
            {(m, v, q): s["latency_us"][k] for q, k in quantiles.items()} if s["latency_us"] else {}
        )
    )
    got_rejected = {}
    for name, labels, value in families["foundation_rejected"]:
        assert name == "foundation_rejected_total" and labels.pop("server") == server
        got_rejected[labels.pop("code")] = value
    assert got_rejected == rejected  # exactly: integers beyond 2**53 too
