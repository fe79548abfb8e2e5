"""Dynamic batching: compatible requests run as one call; each caller gets its own rows back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from foundation_ml import (
    DataType,
    FunctionModel,
    InferenceClient,
    InferenceRequest,
    InferenceResponse,
    MLRuntime,
)
from foundation_ml.errors import DeadlineExceeded, HandlerError, InvalidInput, ModelLoadError

from .conftest import Replies

LONG_WAIT_US = 10_000_000  # the batch closes when full, long before this


class Recorder:
    """A batchable model ``y = x * 10`` that records the row count of every call."""

    def __init__(self, fail_on: float | None = None, trailing: str = "4") -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.model = FunctionModel(
            self, inputs={"x": f"FP32[-1, {trailing}]"}, outputs={"y": f"FP32[-1, {trailing}]"}
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.shape[0])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError(f"poison {self.fail_on}")
        return x * 10


def submit(runtime: MLRuntime, replies: Replies, requests: list[InferenceRequest]) -> dict[int, object]:
    for r in requests:
        runtime(r, replies.respond(r.id))
    return replies.wait(len(requests))


def test_batch_stacks_requests_and_returns_each_its_own_rows(runtime: MLRuntime) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=4, max_wait_us=LONG_WAIT_US, warmup=False)
    sizes = [1, 2, 3, 1]  # rows per request: 7 rows in one call
    requests = [
        InferenceRequest("m", {"x": np.full((n, 4), i, np.float32)}, id=i + 1) for i, n in enumerate(sizes)
    ]
    got = submit(runtime, Replies(), requests)
    assert rec.calls == [7]
    for i, n in enumerate(sizes):
        response = got[i + 1]
        assert isinstance(response, InferenceResponse) and response.id == i + 1
        np.testing.assert_array_equal(response.outputs["y"], np.full((n, 4), i * 10, np.float32))


def test_a_request_whose_inputs_disagree_on_rows_runs_alone(runtime: MLRuntime) -> None:
    """Stacked and split back by the first input's rows, such a request would take rows of
    another caller's second input: it runs alone, as unbatched."""
    calls: list[tuple[int, int]] = []

    def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append((a.shape[0], b.shape[0]))
        return a + b

    model = FunctionModel(add, inputs={"a": "FP32[-1, 1]", "b": "FP32[-1, 1]"}, outputs={"y": "FP32[-1, 1]"})
    runtime.register_model("m", model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    col = lambda *v: np.array([[x] for x in v], np.float32)  # noqa: E731
    requests = [
        InferenceRequest("m", {"a": col(100), "b": col(1, 2)}, id=1),  # broadcasts: 2 rows
        InferenceRequest("m", {"a": col(1000, 2000), "b": col(5)}, id=2),
    ]
    got = submit(runtime, Replies(), requests)
    np.testing.assert_array_equal(got[1].outputs["y"], col(101, 102))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(got[2].outputs["y"], col(1005, 2005))  # type: ignore[attr-defined]
    assert sorted(calls) == [(1, 2), (2, 1)]  # each alone, never stacked


def test_batch_size_is_capped(runtime: MLRuntime) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    requests = [InferenceRequest("m", {"x": np.full((1, 4), i, np.float32)}, id=i + 1) for i in range(4)]
    submit(runtime, Replies(), requests)
    assert rec.calls == [2, 2]


def test_requests_with_different_trailing_shapes_batch_apart(runtime: MLRuntime) -> None:
    rec = Recorder(trailing="-1")
    runtime.register_model("m", rec.model, max_batch_size=4, max_wait_us=LONG_WAIT_US, warmup=False)
    shapes = [(1, 3), (2, 5), (1, 3), (1, 5)]
    requests = [InferenceRequest("m", {"x": np.ones(s, np.float32)}, id=i + 1) for i, s in enumerate(shapes)]
    got = submit(runtime, Replies(), requests)
    assert sorted(rec.calls) == [2, 3]
    for i, s in enumerate(shapes):
        assert got[i + 1].outputs["y"].shape == s  # type: ignore[attr-defined]


def test_a_poisoned_request_fails_alone(runtime: MLRuntime) -> None:
    rec = Recorder(fail_on=-1.0)
    runtime.register_model("m", rec.model, max_batch_size=3, max_wait_us=LONG_WAIT_US, warmup=False)
    values = [1.0, -1.0, 2.0]
    requests = [
        InferenceRequest("m", {"x": np.full((1, 4), v, np.float32)}, id=i + 1) for i, v in enumerate(values)
    ]
    got = submit(runtime, Replies(), requests)
    assert isinstance(got[2], HandlerError) and "poison -1.0" in got[2].message
    np.testing.assert_array_equal(got[1].outputs["y"], np.full((1, 4), 10, np.float32))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(got[3].outputs["y"], np.full((1, 4), 20, np.float32))  # type: ignore[attr-defined]
    # the failed batched call is a backend call too, and is counted as failed: it was not counted
    m = runtime.stats()["models"]["m"]
    assert rec.calls == [3, 1, 1, 1]
    assert (m["batches"], m["batch_sizes"], m["failed_batches"]) == (4, {"1": 3, "3": 1}, 1)
    assert 'foundation_failed_batches_total{server="",model="m",version="1"} 1' in runtime.prometheus()


def test_deadline_passed_in_the_queue_is_refused(runtime: MLRuntime) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    requests = [
        InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=1, deadline_ns=1),
        InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=2),
    ]
    got = submit(runtime, Replies(), requests)
    assert isinstance(got[1], DeadlineExceeded)
    assert isinstance(got[2], InferenceResponse)
    assert rec.calls == [1]


def test_unload_answers_what_is_queued(runtime: MLRuntime) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=8, max_wait_us=LONG_WAIT_US, warmup=False)
    replies = Replies()
    runtime(InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=1), replies.respond(1))
    runtime.unload_model("m")
    assert isinstance(replies.wait(1)[1], InferenceResponse)


def test_explicit_batching_of_an_unbatchable_model_is_an_error(runtime: MLRuntime) -> None:
    fixed = FunctionModel(lambda x: x, inputs={"x": "FP32[1, 4]"}, outputs={"y": "FP32[1, 4]"})
    with pytest.raises(ModelLoadError, match="cannot batch: dimension 0"):
        runtime.register_model("m", fixed, max_batch_size=4)


def test_runtime_default_batching_skips_unbatchable_models(hub) -> None:
    with MLRuntime(hub, max_batch_size=4) as rt:
        rt.register_model(
            "fixed", FunctionModel(lambda x: x, inputs={"x": "FP32[1, 4]"}, outputs={"y": "FP32[1, 4]"})
        )
        rt.register_model("rows", Recorder().model)
        assert rt.metadata("fixed")["batching"] == {"enabled": False, "batchable": False}
        assert rt.metadata("rows")["batching"]["enabled"] is True


def _labels() -> np.ndarray:
    return np.array([1.0, 2.0, 3.0], np.float32)


def test_a_model_without_inputs_is_not_batchable_and_its_rows_are_its_own(hub) -> None:
    """With no input, a model's dimension 0 counts no caller's rows: taken as batchable (every
    tensor's dim 0 is -1), its warm-up refused a variable-length answer ('3 rows for 1 input
    rows'), and a batch of its requests failed each IndexError."""
    model = FunctionModel(_labels, inputs={}, outputs={"labels": "FP32[-1]"})
    assert not model.batchable
    with MLRuntime(hub, max_batch_size=4, max_wait_us=LONG_WAIT_US) as rt:
        rt.register_model("labels", model)
        assert rt.metadata("labels")["batching"] == {"enabled": False, "batchable": False}
        got = submit(rt, Replies(), [InferenceRequest("labels", {}, id=i) for i in (1, 2)])
        for answer in got.values():
            assert isinstance(answer, InferenceResponse)
            np.testing.assert_array_equal(answer.outputs["labels"], _labels())
        with pytest.raises(ModelLoadError, match="cannot batch: a model without inputs has no rows to stack"):
            rt.register_model(
                "again", FunctionModel(_labels, inputs={}, outputs={"labels": "FP32[-1]"}), max_batch_size=4
            )


def test_requests_without_inputs_of_a_model_said_to_batch_each_run_alone(runtime: MLRuntime) -> None:
    """``batchable=True`` for a model without inputs: its requests have no rows to stack and split
    back by, so each runs alone (a batch of them failed each IndexError)."""
    calls: list[int] = []

    def labels() -> np.ndarray:
        calls.append(1)
        return _labels()

    model = FunctionModel(labels, inputs={}, outputs={"labels": "FP32[-1]"}, batchable=True)
    runtime.register_model("labels", model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    got = submit(runtime, Replies(), [InferenceRequest("labels", {}, id=i) for i in (1, 2)])
    assert len(calls) == 2
    for answer in got.values():
        assert isinstance(answer, InferenceResponse)
        np.testing.assert_array_equal(answer.outputs["labels"], _labels())


def test_concurrent_clients_each_get_their_own_rows(runtime: MLRuntime, name: str, concurrently) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=8, max_wait_us=2000)
    rec.calls.clear()  # forget the warm-up
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)

    def worker(k: int) -> None:
        for j in range(50):
            x = np.full((1 + j % 3, 4), k * 1000 + j, np.float32)
            y = client.infer("m", {"x": x})["y"]
            assert np.array_equal(y, x * 10), f"client {k} call {j}"

    assert concurrently(worker, 6) == []
    assert sum(rec.calls) == sum(1 + j % 3 for j in range(50)) * 6  # every row ran exactly once


def test_the_request_that_fills_a_batch_runs_it_in_its_own_thread(runtime: MLRuntime) -> None:
    threads: list[int] = []
    model = FunctionModel(
        lambda x: threads.append(threading.get_ident()) or x * 10,
        inputs={"x": "FP32[-1, 4]"},
        outputs={"y": "FP32[-1, 4]"},
    )
    runtime.register_model("m", model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    requests = [InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=i + 1) for i in range(2)]
    submit(runtime, Replies(), requests)
    assert threads == [threading.get_ident()]


def test_a_batch_that_does_not_fill_runs_when_max_wait_has_passed(runtime: MLRuntime) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=8, max_wait_us=1_000_000, warmup=False)
    requests = [InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=i + 1) for i in range(3)]
    got = submit(runtime, Replies(), requests)
    assert rec.calls == [3]  # one call, from the batcher thread, once the first had waited 1 s
    assert all(isinstance(r, InferenceResponse) for r in got.values())


def test_flush_runs_a_due_batch_in_the_transports_thread(runtime: MLRuntime) -> None:
    """A polling transport calls ``runtime.flush()`` once it handed over every pending request:
    a due batch runs right there (no hand-off), one that is not due reports when it will be."""
    threads: list[int] = []
    model = FunctionModel(
        lambda x: threads.append(threading.get_ident()) or x * 10,
        inputs={"x": "FP32[-1, 4]"},
        outputs={"y": "FP32[-1, 4]"},
    )
    runtime.register_model("m", model, max_batch_size=8, max_wait_us=0, warmup=False)
    assert runtime.flush() == 0  # nothing queued
    replies = Replies()
    runtime.flush()  # from now on the transport drives: the batcher thread only backs it up
    for i in range(3):
        runtime(
            InferenceRequest("m", {"x": np.full((1, 4), i, np.float32)}, id=i + 1), replies.respond(i + 1)
        )
    assert runtime.flush() == 0  # due at once (max_wait_us=0): ran here, nothing left
    assert threads == [threading.get_ident()]
    got = replies.wait(3)
    assert [got[i + 1].outputs["y"][0, 0] for i in range(3)] == [0.0, 10.0, 20.0]


def test_flush_leaves_a_batch_that_is_not_due_and_says_when(runtime: MLRuntime) -> None:
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=8, max_wait_us=2_000_000, warmup=False)
    runtime.flush()
    replies = Replies()
    runtime(InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=1), replies.respond(1))
    left = runtime.flush()
    assert 0 < left <= 2_000_000_000  # ns until the oldest request has waited max_wait_us
    assert rec.calls == []
    got = replies.wait(1)  # the batcher thread backs the transport up once the batch is overdue
    assert isinstance(got[1], InferenceResponse)
    assert rec.calls == [1]


def test_batched_requests_over_shm_each_get_their_own_rows_with_flush(name: str, concurrently) -> None:
    """The shm server calls flush(): batches form from concurrent clients and run in its loop."""
    rec = Recorder()
    with MLRuntime() as runtime:
        runtime.register_model("m", rec.model, max_batch_size=4, max_wait_us=0, warmup=False)
        runtime.start("shm", name)

        def call(k: int) -> None:
            with InferenceClient(name) as client:
                for j in range(40):
                    x = np.full((1, 4), k * 1000 + j, np.float32)
                    y = client.infer("m", {"x": x})["y"]
                    assert np.array_equal(y, x * 10)

        assert concurrently(call, 4) == []
    assert sum(rec.calls) == 160


def _rows(n: int, value: float = 1.0) -> np.ndarray:
    return np.full((n, 4), value, np.float32)


def test_a_batched_answer_without_a_row_per_input_row_is_an_error_for_each_caller(runtime: MLRuntime) -> None:
    """The model drops rows: neither the batch nor the re-run alone may hand a caller 2 rows for 3."""
    model = FunctionModel(lambda x: {"y": x[:2]}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("m", model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    got = submit(runtime, Replies(), [InferenceRequest("m", {"x": _rows(3)}, id=i) for i in (1, 2)])
    assert all(isinstance(v, HandlerError) and "one row per input row (3)" in str(v) for v in got.values())
    stats = runtime.stats()["models"]["m"]
    assert stats["requests"] == 2 and sum(stats["errors_by_code"].values()) == 2


def test_an_answer_breaking_the_output_signature_is_a_handler_error(runtime: MLRuntime) -> None:
    scalar = FunctionModel(
        lambda x: {"y": x.sum()}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
    )
    runtime.register_model("m", scalar, warmup=False)
    got = submit(runtime, Replies(), [InferenceRequest("m", {"x": _rows(1)}, id=1)])
    assert isinstance(got[1], HandlerError) and "output y is FP32[], declared FP32[-1, 4]" in str(got[1])


def test_a_batch_missing_one_requested_output_fails_no_neighbour_and_counts_each_once(
    runtime: MLRuntime,
) -> None:
    """Batched, the model omits z; alone it has it: each request is answered once, correctly."""
    model = FunctionModel(
        lambda x: {"y": x * 2} if len(x) > 2 else {"y": x * 2, "z": x * 3},
        inputs={"x": "FP32[-1, 4]"},
        outputs={"y": "FP32[-1, 4]", "z": "FP32[-1, 4]"},
    )
    runtime.register_model("m", model, max_batch_size=2, max_wait_us=LONG_WAIT_US, warmup=False)
    requests = [
        InferenceRequest("m", {"x": _rows(2)}, id=1, outputs=("z",)),
        InferenceRequest("m", {"x": _rows(2)}, id=2, outputs=("y",)),
    ]
    got = submit(runtime, Replies(), requests)
    assert sorted(got[1].outputs) == ["z"] and sorted(got[2].outputs) == ["y"]  # type: ignore[union-attr]
    stats = runtime.stats()["models"]["m"]
    assert stats["requests"] == 2 and stats["errors_by_code"] == {}


def test_a_batched_model_runs_one_call_at_a_time(runtime: MLRuntime, concurrently) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def slow(x: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return x

    model = FunctionModel(slow, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("m", model, max_batch_size=2, max_wait_us=1_000, warmup=False)
    replies = Replies()

    def one(i: int) -> None:
        runtime(InferenceRequest("m", {"x": _rows(1)}, id=i), replies.respond(i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replies.wait(16)
    assert peak[0] == 1


def test_a_request_racing_an_unload_is_told_the_version_is_unloaded(runtime: MLRuntime) -> None:
    from foundation_ml.errors import ShuttingDown

    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=8, max_wait_us=LONG_WAIT_US, warmup=False)
    served = runtime.registry.get("m")  # a transport thread looked it up just before the unload
    runtime.unload_model("m")
    replies = Replies()
    served.submit(InferenceRequest("m", {"x": _rows(1)}, id=1), replies.respond(1), time.monotonic_ns())
    answer = replies.wait(1)[1]
    assert isinstance(answer, ShuttingDown) and "version '1' is being unloaded" in str(answer)


def test_a_wait_longer_than_the_lock_can_take_does_not_end_the_batcher_thread(runtime: MLRuntime) -> None:
    """A Condition.wait past threading.TIMEOUT_MAX raised OverflowError and ended the thread."""
    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=4, max_wait_us=LONG_WAIT_US, warmup=False)
    batcher = runtime.registry.get("m").batcher
    assert batcher is not None
    batcher.max_wait_us = 10**20  # past every bound: the wait is capped at TIMEOUT_MAX
    replies = Replies()
    runtime(InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=1), replies.respond(1))
    time.sleep(0.2)
    assert batcher._thread.is_alive()
    batcher.drain()  # the thread wakes and runs the queued batch at once
    assert isinstance(replies.wait(1)[1], InferenceResponse)


def test_an_unexpected_error_in_the_batcher_thread_fails_the_queue_and_the_thread_serves_on(
    runtime: MLRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from foundation_ml.errors import InternalError

    rec = Recorder()
    runtime.register_model("m", rec.model, max_batch_size=4, max_wait_us=1000, warmup=False)
    served = runtime.registry.get("m")

    class OnceBroken:
        """The model's metrics, whose ``enqueued`` raises once in the batcher thread: a bug."""

        def __init__(self, metrics: object) -> None:
            self.metrics = metrics
            self.broken = True

        def __getattr__(self, name: str) -> object:
            return getattr(self.metrics, name)

        def enqueued(self, depth: int) -> None:
            if self.broken and threading.current_thread().name.startswith("batcher-"):
                self.broken = False
                raise RuntimeError("a bug")
            self.metrics.enqueued(depth)  # type: ignore[attr-defined]

    monkeypatch.setattr(served, "metrics", OnceBroken(served.metrics))
    replies = Replies()
    runtime(InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=1), replies.respond(1))
    failed = replies.wait(1)[1]
    assert isinstance(failed, InternalError) and "RuntimeError: a bug" in str(failed)
    assert "batcher of model 'm': RuntimeError: a bug" in caplog.text
    runtime(InferenceRequest("m", {"x": np.ones((1, 4), np.float32)}, id=2), replies.respond(2))
    assert isinstance(replies.wait(2)[2], InferenceResponse)  # the thread goes on serving


def test_a_batch_of_bf16_inputs_stays_bf16(runtime: MLRuntime) -> None:
    """BF16 bit patterns are uint16 marked BF16 (``DataType.BF16.numpy``); joining a batch dropped
    the mark, so a model answering with its input answered UINT16."""
    calls: list[np.dtype] = []

    def echo(x: np.ndarray) -> np.ndarray:
        calls.append(x.dtype)
        return x

    model = FunctionModel(echo, inputs={"x": "BF16[-1, 2]"}, outputs={"y": "BF16[-1, 2]"})
    runtime.register_model("bf", model, max_batch_size=3, max_wait_us=LONG_WAIT_US, warmup=False)
    bits = [np.full((n, 2), 0x3F80 + n, np.uint16).view(DataType.BF16.numpy) for n in (1, 2)]
    requests = [InferenceRequest("bf", {"x": b}, id=i + 1) for i, b in enumerate(bits)]
    got = submit(runtime, Replies(), [*requests, InferenceRequest("bf", {"x": bits[0]}, id=3)])
    assert len(calls) == 1 and DataType.from_numpy(calls[0]) is DataType.BF16
    for i, b in enumerate([*bits, bits[0]]):
        out = got[i + 1].outputs["y"]  # type: ignore[attr-defined]
        assert DataType.from_numpy(out.dtype) is DataType.BF16
        np.testing.assert_array_equal(out, b)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(
    ("marked", "plain"), [(DataType.BF16, DataType.UINT16), (DataType.BYTES, DataType.UINT8)]
)
def test_marked_outputs_travel_as_the_signature_declares(
    runtime: MLRuntime, batched: bool, marked: DataType, plain: DataType
) -> None:
    """A numpy model cannot say BF16 (or BYTES) but by the mark: its plain uint16 answer to a BF16
    output went out UINT16. It goes out as declared. A marked answer to a plain output (BF16 bits
    for a UINT16) went out BF16; it breaks the signature, as any other datatype would."""

    def answer(b: np.ndarray, u: np.ndarray) -> dict[str, np.ndarray]:
        return {"b_out": u, "u_out": b.view(plain.numpy)}  # plain bits as the marked output

    model = FunctionModel(
        answer,
        inputs={"b": f"{marked.name}[-1, 2]", "u": f"{plain.name}[-1, 2]"},
        outputs={"b_out": f"{marked.name}[-1, 2]", "u_out": f"{plain.name}[-1, 2]"},
    )
    batching = {"max_batch_size": 2, "max_wait_us": 1000} if batched else {"max_batch_size": 1}
    runtime.register_model("m", model, warmup=False, **batching)  # type: ignore[arg-type]
    b = np.array([[1, 2]], plain.numpy).view(marked.numpy)
    got = submit(
        runtime, Replies(), [InferenceRequest("m", {"b": b, "u": np.array([[3, 4]], plain.numpy)}, id=1)]
    )
    out = got[1].outputs  # type: ignore[attr-defined]
    assert DataType.from_numpy(out["b_out"].dtype) is marked
    assert DataType.from_numpy(out["u_out"].dtype) is plain
    assert out["b_out"].tolist() == [[3, 4]] and out["u_out"].tolist() == [[1, 2]]

    def swapped(b: np.ndarray, u: np.ndarray) -> dict[str, np.ndarray]:
        return {"b_out": u, "u_out": b}  # the marked input as the plain output

    model = FunctionModel(swapped, inputs=model.inputs, outputs=model.outputs)
    runtime.register_model("swapped", model, warmup=False, **batching)  # type: ignore[arg-type]
    request = InferenceRequest("swapped", {"b": b, "u": np.array([[3, 4]], plain.numpy)}, id=2)
    error = submit(runtime, Replies(), [request])[2]
    assert isinstance(error, HandlerError)
    assert f"output u_out is {marked.name}[1, 2], declared {plain.name}[-1, 2]" in str(error)


@pytest.mark.parametrize(
    ("marked", "plain"), [(DataType.BF16, DataType.UINT16), (DataType.BYTES, DataType.UINT8)]
)
def test_marked_input_for_a_plain_one_is_refused_and_plain_bits_for_a_marked_one_are_taken(
    runtime: MLRuntime, marked: DataType, plain: DataType
) -> None:
    """BF16 bits sent to a UINT16 input (a client saying BF16) are the wrong datatype, refused
    naming the signature; plain uint16 sent to a BF16 input are taken as its bits (a numpy client
    had no other way to send BF16)."""
    model = FunctionModel(
        lambda b, u: {"y": u},
        inputs={"b": f"{marked.name}[2]", "u": f"{plain.name}[2]"},
        outputs={"y": f"{plain.name}[2]"},
    )
    runtime.register_model("m", model, warmup=False)
    bits = np.array([1, 2], plain.numpy)
    ok = submit(runtime, Replies(), [InferenceRequest("m", {"b": bits, "u": bits}, id=1)])[1]
    assert isinstance(ok, InferenceResponse) and ok.outputs["y"].tolist() == [1, 2]
    bad = InferenceRequest("m", {"b": bits, "u": bits.view(marked.numpy)}, id=2)
    error = submit(runtime, Replies(), [bad])[2]
    assert isinstance(error, InvalidInput)
    assert f"input u is {marked.name}[2], expected {plain.name}[2]" in str(error)
