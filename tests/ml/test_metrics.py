"""Per-model metrics count requests, errors, batches and queue depth; percentiles on read."""

from __future__ import annotations

import time

import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import FunctionModel, InferenceClient, MLRuntime
from foundation_ml._metrics import ModelMetrics, prometheus_text
from foundation_ml.errors import DeadlineExceeded, HandlerError, InvalidInput, ShuttingDown, TooLarge


def test_counts_requests_and_errors_by_code(runtime: MLRuntime, name: str, rows) -> None:
    def model(x: np.ndarray) -> np.ndarray:
        if x[0, 0] < 0:
            raise ValueError("no")
        return x

    runtime.register_model(
        "m", FunctionModel(model, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    before = runtime.stats()["models"]["m"]["requests"]
    assert before == 0, "warm-up does not count as traffic"
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    for _ in range(5):
        client.infer("m", {"x": rows(1)})
    with pytest.raises(HandlerError):
        client.infer("m", {"x": -rows(1) - 1})
    with pytest.raises(InvalidInput):
        client.infer("m", {"x": np.zeros((1, 3), np.float32)})
    m = client.stats()["models"]["m"]
    assert (m["requests"], m["errors"]) == (7, 2)
    assert m["errors_by_code"] == {"HANDLER_ERROR": 1, "INVALID_INPUT": 1}
    assert m["batches"] == 6  # the invalid request never reached the model
    assert m["batch_sizes"] == {"1": 6}
    assert m["latency_us"]["window"] == 7
    assert (
        0
        < m["latency_us"]["p50"]
        <= m["latency_us"]["p95"]
        <= m["latency_us"]["p99"]
        <= m["latency_us"]["max"]
    )


def test_unknown_models_are_counted_at_server_level(served: InferenceClient, rows) -> None:
    with pytest.raises(Exception, match="no such model"):
        served.infer("nope", {"x": rows(1)})
    assert served.stats()["server"]["rejected"] == {"MODEL_NOT_FOUND": 1}


def test_batched_calls_are_counted_by_size(runtime: MLRuntime) -> None:
    from foundation_ml import InferenceRequest

    calls: list[int] = []
    model = FunctionModel(
        lambda x: calls.append(len(x)) or x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
    )
    runtime.register_model("m", model, max_batch_size=3, max_wait_us=10_000_000, warmup=False)
    got: list[object] = []
    for i in range(3):
        runtime(InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=i + 1), got.append)
    served = runtime.registry.get("m")
    served.batcher.stop()  # type: ignore[union-attr]
    m = served.metrics.snapshot()
    assert len(got) == 3
    assert (m["requests"], m["batches"], m["batch_sizes"], m["mean_batch_size"]) == (3, 1, {"3": 1}, 3.0)
    assert m["max_queue_depth"] == 2 and m["queue_depth"] == 0  # the third request ran the batch


def test_latency_window_keeps_the_most_recent_requests() -> None:
    metrics = ModelMetrics(window=4)
    for ns in (1_000_000, 1_000_000, 1_000, 2_000, 3_000, 4_000):
        metrics.record(ns)
    lat = metrics.snapshot()["latency_us"]
    assert lat["window"] == 4
    assert lat["max"] == 4.0  # the two slow requests left the window
    assert metrics.snapshot()["requests"] == 6


def test_snapshot_reads_the_batch_sizes_only_under_the_lock() -> None:
    """A backend call of a size not seen before, recorded while ``snapshot()`` summed the batch
    sizes outside the lock, failed it with 'dictionary changed size during iteration'."""
    metrics = ModelMetrics()
    metrics.record_batch(2)

    class Racing(dict[int, int]):
        def items(self):  # type: ignore[no-untyped-def]
            for item in super().items():
                yield item
                if not metrics._lock.locked():  # what a concurrent record_batch can do then
                    self[len(self) + 100] = 1

    metrics.batch_sizes = Racing(metrics.batch_sizes)
    snap = metrics.snapshot()
    assert (snap["batches"], snap["mean_batch_size"]) == (1, 2.0)


def test_no_traffic_has_no_percentiles() -> None:
    assert ModelMetrics().snapshot()["latency_us"] is None


def test_prometheus_text_exposes_counters_and_quantiles(
    served: InferenceClient, runtime: MLRuntime, rows
) -> None:
    served.infer("affine", {"x": rows(1)})
    text = runtime.prometheus()
    assert "# TYPE foundation_requests_total counter" in text
    assert 'foundation_requests_total{server="' in text and 'model="affine",version="1"} 1' in text
    assert 'quantile="0.99"' in text
    assert prometheus_text({}).count("# TYPE") == 9  # in_flight_requests the ninth


def test_latency_sum_and_count_cover_every_recorded_latency_not_only_the_window() -> None:
    metrics = ModelMetrics(window=4)
    for ns in (1_000_000, 1_000_000, 1_000, 2_000, 3_000, 4_000):
        metrics.record(ns)
    metrics.refused("DEADLINE_EXCEEDED")  # measured no latency: counts in neither
    snap = metrics.snapshot()
    assert (snap["latency_count"], snap["latency_sum_us"]) == (6, 2010.0)
    assert (snap["requests"], snap["latency_us"]["window"]) == (7, 4)
    empty = ModelMetrics().snapshot()
    assert (empty["latency_count"], empty["latency_sum_us"]) == (0, 0.0)


def _summaries(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], dict[str, float]]]:
    """Every summary family of ``text`` (read by prometheus_client's parser, which fails on
    malformed text): ``{family: {labels without quantile: {"0.5"..., "_sum", "_count": value}}}``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple[tuple[str, str], ...], dict[str, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "summary":
            continue
        groups = out.setdefault(family.name, {})
        for sample in family.samples:
            labels = dict(sample.labels)
            quantile = labels.pop("quantile", None)
            if quantile is not None:
                assert sample.name == family.name, sample
            key = quantile if quantile is not None else sample.name[len(family.name) :]
            groups.setdefault(tuple(sorted(labels.items())), {})[key] = sample.value
    return out


def test_prometheus_summary_has_quantiles_sum_and_count_per_series(
    runtime: MLRuntime, name: str, rows
) -> None:
    """A summary is its quantiles plus ``_sum`` and ``_count`` (the exposition format): without
    them, ``rate(x_sum) / rate(x_count)``, the mean latency, cannot be queried."""
    runtime.register_model("m", _identity(), version="1")
    runtime.register_model("m", _identity(), version="2")
    runtime.register_model("idle", _identity())
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        for _ in range(5):
            client.infer("m", {"x": rows(1)}, version="1")
        for _ in range(3):
            client.infer("m", {"x": rows(1)})
        with pytest.raises(InvalidInput):  # answered by the runtime: a latency like any other
            client.infer("m", {"x": np.zeros((1, 3), np.float32)})
    runtime.rejected("m", "1", DeadlineExceeded("late", model="m"))  # a refusal: no latency
    text = runtime.prometheus()
    stats = runtime.stats()["models"]

    summaries = _summaries(text)
    assert list(summaries) == ["foundation_latency_microseconds"]
    series = summaries["foundation_latency_microseconds"]
    for labels, got in series.items():
        assert {"_sum", "_count"} <= set(got), f"{dict(labels)}: {got}"
    base = (("model", "m"), ("server", name))
    m1, m2 = series[(*base, ("version", "1"))], series[(*base, ("version", "2"))]
    idle = series[(("model", "idle"), ("server", name), ("version", "1"))]
    assert len(series) == 3
    for got, doc in ((m1, stats["m"]["versions"]["1"]), (m2, stats["m"]["versions"]["2"])):
        assert set(got) == {"0.5", "0.95", "0.99", "_sum", "_count"}
        assert got["_count"] == doc["latency_count"] == doc["latency_us"]["window"]
        assert got["_sum"] == doc["latency_sum_us"] > 0
        assert got["_sum"] / got["_count"] == pytest.approx(doc["latency_us"]["mean"], abs=0.051)
    assert (m1["_count"], stats["m"]["versions"]["1"]["requests"]) == (5, 6)  # the refusal: no latency
    assert (m2["_count"], stats["m"]["versions"]["2"]["requests"]) == (4, 4)
    assert idle == {"_sum": 0.0, "_count": 0.0}  # no latency yet: no quantiles, but the series


def test_prometheus_text_of_a_server_that_kept_no_latency_sum_has_its_quantiles() -> None:
    """``foundation stats --prometheus`` against a server from before ``latency_count``."""
    metrics = ModelMetrics()
    metrics.record(2_000)
    snap = {k: v for k, v in metrics.snapshot().items() if k not in ("latency_count", "latency_sum_us")}
    text = prometheus_text({"m": snap})
    assert 'foundation_latency_microseconds{server="",model="m",version="",quantile="0.5"} 2.0\n' in text
    assert "_count{" not in text and "_sum{" not in text


def test_prometheus_numbers_are_exact() -> None:
    metrics = ModelMetrics()
    snap = {**metrics.snapshot(), "requests": 1_234_567, "batches": 2**53 + 1, "queue_depth": 0}
    text = prometheus_text({"m": snap})
    assert 'foundation_requests_total{server="",model="m",version=""} 1234567\n' in text
    assert f"{2**53 + 1}\n" in text and "e+" not in text


def test_prometheus_has_one_series_per_model_version() -> None:
    v1 = {**ModelMetrics().snapshot(), "requests": 5, "version": "1"}
    v2 = {**ModelMetrics().snapshot(), "requests": 2, "version": "2"}
    text = prometheus_text({"m": {**v2, "versions": {"1": v1, "2": v2}}, "m:1": {**v1, "requests": 1}})
    assert 'model="m",version="1"} 5\n' in text and 'model="m",version="2"} 2\n' in text
    assert 'model="m:1",version="1"} 1\n' in text  # a model named like a version key: its own series


def test_stats_keep_each_versions_figures_under_its_version(runtime: MLRuntime) -> None:
    def model() -> FunctionModel:
        return FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 2]"}, outputs={"y": "FP32[-1, 2]"})

    runtime.register_model("m", model(), version="1")
    for _ in range(3):
        runtime.registry.get("m").metrics.record(1000, None, 1)
    runtime.register_model("m", model(), version="2")
    runtime.register_model("m:1", model())  # a legal name that once collided with version 1's key
    doc = runtime.stats()["models"]
    assert sorted(doc) == ["m", "m:1"]
    assert doc["m"]["version"] == "2" and doc["m"]["requests"] == 0
    assert {v: d["requests"] for v, d in doc["m"]["versions"].items()} == {"1": 3, "2": 0}
    assert 'model="m",version="1"} 3\n' in runtime.prometheus()


def test_stats_survive_a_model_unloaded_meanwhile(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unload lands between the stats' listing of the models and its look-up of one of them
    (what a concurrent unload_model does once in some thousands of calls)."""
    model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 2]"}, outputs={"y": "FP32[-1, 2]"})
    runtime.register_model("x", model, warmup=False)
    registry = runtime.registry
    real_get = registry.get

    def get_after_unload(name: str, version: str = "") -> object:
        if "x" in registry.names():
            registry.remove("x")
        return real_get(name, version)

    monkeypatch.setattr(registry, "get", get_after_unload)
    assert "foundation_requests_total" in runtime.prometheus()


def _identity() -> FunctionModel:
    return FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})


def test_a_transports_refusals_count_for_their_model_or_the_server(runtime: MLRuntime) -> None:
    """``RequestHandler.rejected``: a request a transport answered itself (its deadline passed
    before dispatch, the server stopping, malformed) counts where the runtime would have counted
    it: for the served model it names, else by code at server level; no latency is invented."""
    runtime.register_model("m", _identity(), version="1")
    runtime.register_model("m", _identity(), version="2")
    late = DeadlineExceeded("deadline passed before the request ran", model="m")
    runtime.rejected("m", "", late)  # the latest version
    runtime.rejected("m", "1", late)
    runtime.rejected("m", "1", InvalidInput("input 'x' appears twice", model="m"))
    runtime.rejected("m", "7", late)  # no such version: the server's
    runtime.rejected("nope", "", late)
    runtime.rejected("", "", TooLarge("1048577 bytes"))
    runtime.rejected(None, None, TooLarge("1048577 bytes"))
    runtime.rejected("m", "", ShuttingDown("the server is stopping", model="m"))  # as the runtime's own
    stats = runtime.stats()
    v1, v2 = stats["models"]["m"]["versions"]["1"], stats["models"]["m"]["versions"]["2"]
    assert (v1["requests"], v1["errors"]) == (2, 2)
    assert v1["errors_by_code"] == {"DEADLINE_EXCEEDED": 1, "INVALID_INPUT": 1}
    assert (v2["requests"], v2["errors"], v2["errors_by_code"]) == (1, 1, {"DEADLINE_EXCEEDED": 1})
    assert v1["latency_us"] is None and v2["latency_us"] is None
    assert stats["server"]["rejected"] == {"DEADLINE_EXCEEDED": 2, "TOO_LARGE": 2, "SHUTTING_DOWN": 1}
    text = runtime.prometheus()
    assert "# TYPE foundation_rejected_total counter" in text
    assert 'foundation_rejected_total{server="",code="DEADLINE_EXCEEDED"} 2\n' in text
    assert 'foundation_rejected_total{server="",code="SHUTTING_DOWN"} 1\n' in text
    assert 'foundation_errors_total{server="",model="m",version="1",code="DEADLINE_EXCEEDED"} 1\n' in text


def test_foundation_stats_shows_the_servers_refusals(
    shm_hub: Hub, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    with MLRuntime(shm_hub) as runtime:
        runtime.register_model("m", _identity())
        runtime.start("shm", name)
        runtime.rejected("", "", TooLarge("too large"))
        runtime.rejected("m", "", DeadlineExceeded("late", model="m"))
        assert main(["stats", name]) == 0
        out = capsys.readouterr().out
        assert "rejected (no model): TOO_LARGE 1" in out
        assert main(["stats", name, "--prometheus"]) == 0
        out = capsys.readouterr().out
    assert f'foundation_rejected_total{{server="{name}",code="TOO_LARGE"}} 1\n' in out
    assert f'foundation_latency_microseconds_count{{server="{name}",model="m",version="1"}} 0\n' in out
    assert (
        f'foundation_errors_total{{server="{name}",model="m",version="1",code="DEADLINE_EXCEEDED"}} 1' in out
    )


def test_every_key_of_the_stats_document_is_named_in_the_cli_docs(
    runtime: MLRuntime, name: str, rows
) -> None:
    """docs/cli.md is where an operator learns `foundation stats --json`'s schema: a model's
    ``version`` and the keys inside ``latency_us``, ``batching`` and ``server`` were in the
    document and named nowhere."""
    import re
    from pathlib import Path

    docs = Path(__file__).parents[2] / "docs" / "cli.md"
    section = docs.read_text().split("## foundation stats", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r'"([a-z_0-9]+)"', section))
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(
        "b",
        FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}),
        max_batch_size=2,
    )
    runtime.start("inproc", name)
    InferenceClient(name, transport="inproc", hub=runtime.hub).infer("m", {"x": rows(1)})
    doc = runtime.stats()
    keys = set(doc) | set(doc["server"])
    for model in doc["models"].values():
        keys |= set(model) | set(model["latency_us"] or {}) | set(model["batching"])
    assert keys - named == set()


def test_a_stuck_model_call_shows_as_requests_in_flight(shm_hub: Hub, name: str) -> None:
    """Over shm one serving thread takes every request: while a model call was stuck, every other
    request waited behind it and the metrics file still read as an idle server (no count moves
    until a request is answered). The requests the transport holds unanswered are a gauge,
    ``foundation_in_flight_requests``, and ``stats()["server"]["in_flight"]``."""
    import threading

    release, entered = threading.Event(), threading.Event()

    def stuck(x: np.ndarray) -> np.ndarray:
        if x.flat[0] == 7:
            entered.set()
            release.wait(10)
        return x

    def gauge(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("foundation_in_flight_requests")]

    with MLRuntime(shm_hub) as runtime:
        runtime.register_model(
            "stuck", FunctionModel(stuck, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        )
        runtime.start("shm", name)
        assert gauge(runtime.prometheus()) == [
            f'foundation_in_flight_requests{{server="{name}",transport="shm"}} 0'
        ]
        with InferenceClient(name, hub=shm_hub, timeout=10) as one, InferenceClient(name, hub=shm_hub) as two:
            calls = [
                threading.Thread(target=c.infer, args=("stuck", {"x": np.full((1, 4), v, np.float32)}))
                for c, v in ((one, 7), (two, 1))
            ]
            calls[0].start()
            assert entered.wait(10)
            calls[1].start()  # waits behind the stuck call
            deadline = time.monotonic() + 5
            while runtime.stats()["server"]["in_flight"] != {"shm": 2} and time.monotonic() < deadline:
                time.sleep(0.01)
            assert runtime.stats()["server"]["in_flight"] == {"shm": 2}
            assert gauge(runtime.prometheus())[0].endswith(" 2")
            assert runtime.stats()["models"]["stuck"]["requests"] == 0  # nothing answered yet
            release.set()
            for call in calls:
                call.join(10)
        assert runtime.stats()["server"]["in_flight"] == {"shm": 0}


def test_a_transport_that_cannot_count_its_requests_has_no_in_flight_series(
    runtime: MLRuntime, name: str
) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.start("inproc", name)
    assert runtime.stats()["server"]["in_flight"] == {}
    assert "foundation_in_flight_requests{" not in runtime.prometheus()
    assert "# TYPE foundation_in_flight_requests gauge" in runtime.prometheus()
