"""Dynamic batching, as properties: whatever requests arrive, batched answers are the unbatched ones.

Each example serves one model twice in a runtime, batched (``"b"``) and not (``"a"``), sends the
same random requests to both and compares: every caller of ``"b"`` gets what the same request
alone gets from ``"a"`` (its own rows, bit for bit, or the same typed error naming ``"b"``). The
model sees a ``tag`` input holding each row's request id, so every call's requests are known:
never more than ``max_batch_size`` (which counts requests, docs/serving.md), each whole, in order,
and all of them compatible (one trailing shape, rows agreeing across inputs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import foundation_core
from foundation_core import Hub
from foundation_ml import DataType, FunctionModel, InferenceRequest, InferenceResponse, MLRuntime
from foundation_ml import _plugin as ml_plugin
from foundation_ml.errors import HandlerError, InferenceError

from .conftest import Replies

DATATYPES = list(DataType)
LONG_WAIT_US = 10_000_000  # a batch closes when it fills, or when the runtime closes (it drains)


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with foundation_core.start(plugins=[ml_plugin], entry_points=False) as h:
        yield h


def _array(rng: np.random.Generator, datatype: DataType, shape: tuple[int, ...]) -> np.ndarray:
    """Random values of ``datatype`` (every bit pattern, NaNs too; bools 0 or 1)."""
    if datatype is DataType.BOOL:
        return rng.integers(0, 2, shape).astype(bool)
    n = int(np.prod(shape)) * datatype.itemsize
    return rng.integers(0, 256, n, dtype=np.uint8).view(datatype.numpy).reshape(shape)


@st.composite
def requests(draw: st.DrawFn, a_type: DataType, b_type: DataType) -> dict[str, Any]:
    """One request's inputs: mostly valid, of one of a few trailing shapes; some with inputs
    disagreeing on rows, of another datatype or rank (refused), or with marked or plain bits."""
    rows = draw(st.integers(0, 4))
    width = draw(st.sampled_from([2, 2, 2, 1, 3]))  # mostly compatible
    kind = draw(
        st.sampled_from(["ok", "ok", "ok", "ok", "rows_disagree", "wrong_dtype", "wrong_rank", "plain_bits"])
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = _array(rng, a_type, (rows, width))
    b_rows = rows
    if kind == "rows_disagree":
        b_rows = draw(st.integers(0, 4).filter(lambda n: n != rows))
    b = _array(rng, b_type, (b_rows,))
    if kind == "wrong_dtype":
        other = draw(st.sampled_from([d for d in DATATYPES if d.numpy != a_type.numpy]))
        a = _array(rng, other, (rows, width))
    elif kind == "wrong_rank":
        a = _array(rng, a_type, (rows,))
    elif kind == "plain_bits" and a_type in (DataType.BF16, DataType.BYTES):
        a = a.view(np.dtype(a.dtype.str))  # the same bits, unmarked: plain uint16 or uint8
    layout = draw(st.sampled_from(["c", "fortran", "strided"]))
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim == 2:
        wide = np.repeat(a, 2, axis=1)
        a = wide[:, ::2]  # a view, not contiguous
    outputs = draw(st.sampled_from([(), (), ("y",), ("z", "t"), ("t",), ("nope",)]))
    return {"a": a, "b": b, "rows": rows, "outputs": outputs}


class Calls:
    """What the model was called with: per call, the request ids of its rows (the ``tag``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batched: list[tuple[list[int], np.dtype]] = []


def _model(a_type: DataType, b_type: DataType, mode: str, limit: int, calls: Calls | None) -> FunctionModel:
    """``y = a`` with its columns reversed, ``z = b``, ``t = tag``; ``mode`` breaks calls of
    ``limit`` rows or more (the same whether batched or alone, so the unbatched model is the
    reference): they raise, drop a row of every output or add one, or leave outputs out."""

    def fn(a: np.ndarray, b: np.ndarray, tag: np.ndarray) -> dict[str, np.ndarray]:
        if calls is not None:
            with calls.lock:
                calls.batched.append((tag.tolist(), a.dtype))
        n = a.shape[0]
        if mode == "raise_always" or (mode == "raise" and n >= limit):
            raise ValueError(f"no call of {n} rows")
        out = {"y": a[:, ::-1], "z": b, "t": tag}
        if n < limit:
            return out
        if mode == "drop":
            return {k: v[:-1] for k, v in out.items()}
        if mode == "extra":
            return {k: np.concatenate([v, v[:1]]) for k, v in out.items()}
        if mode == "missing":
            return {"y": out["y"]}
        return out

    return FunctionModel(
        fn,
        inputs={"a": f"{a_type.name}[-1, -1]", "b": f"{b_type.name}[-1]", "tag": "INT64[-1]"},
        outputs={"y": f"{a_type.name}[-1, -1]", "z": f"{b_type.name}[-1]", "t": "INT64[-1]"},
    )


def _same(got: object, want: object, rid: int, inputs: dict[str, np.ndarray]) -> None:
    """``got`` (the batched model's answer) is ``want`` (the unbatched one's): the same arrays bit
    for bit and dtype (marks too), or the same error type and message, naming model ``b``. Except
    that batched, dimension 0 is the batch: an answer without a row per input row (which an
    unbatched model may give) is a HandlerError saying so."""
    rows = {x.shape[0] for x in inputs.values()}
    if isinstance(want, InferenceResponse) and len(rows) == 1:
        short = [n for n, w in want.outputs.items() if w.shape[0] not in rows]
        if short:
            assert isinstance(got, HandlerError), f"request {rid}: {got!r}"
            assert (got.model, got.request_id) == ("b", rid)
            assert f"without one row per input row ({rows.pop()})" in got.message  # of every output
            return
    if isinstance(want, InferenceResponse):
        assert isinstance(got, InferenceResponse), f"request {rid}: {got!r}, alone {want!r}"
        assert got.id == rid and got.model == "b"
        assert sorted(got.outputs) == sorted(want.outputs)
        for name, w in want.outputs.items():
            g = got.outputs[name]
            assert (g.shape, g.dtype, g.dtype.metadata) == (w.shape, w.dtype, w.dtype.metadata), name
            assert g.tobytes() == w.tobytes(), f"request {rid}: output {name} holds other rows"
        return
    assert isinstance(want, InferenceError), want
    assert type(got) is type(want), f"request {rid}: {got!r}, alone {want!r}"
    assert isinstance(got, InferenceError)
    assert (got.model, got.request_id) == ("b", rid)
    assert got.message == want.message
    assert str(got).startswith("model 'b': ")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    a_type=st.sampled_from(DATATYPES),
    b_type=st.sampled_from(DATATYPES),
    max_batch_size=st.integers(2, 5),
    max_wait_us=st.sampled_from([0, 200, 2000, LONG_WAIT_US, LONG_WAIT_US]),
    mode=st.sampled_from(["ok", "ok", "raise", "drop", "extra", "missing", "raise_always"]),
    limit=st.integers(1, 8),
    flushing=st.booleans(),
)
def test_every_caller_gets_what_its_request_alone_gets(
    hub: Hub,
    data: st.DataObject,
    a_type: DataType,
    b_type: DataType,
    max_batch_size: int,
    max_wait_us: int,
    mode: str,
    limit: int,
    flushing: bool,
) -> None:
    drawn = data.draw(st.lists(requests(a_type, b_type), min_size=2, max_size=12), label="requests")
    calls = Calls()
    with MLRuntime(hub) as rt:
        rt.register_model("a", _model(a_type, b_type, mode, limit, None), warmup=False)
        rt.register_model(
            "b",
            _model(a_type, b_type, mode, limit, calls),
            max_batch_size=max_batch_size,
            max_wait_us=max_wait_us,
            warmup=False,
        )
        served = rt.registry.get("b")
        alone, batched = Replies(), Replies()
        inputs: dict[int, dict[str, np.ndarray]] = {}
        for rid, r in enumerate(drawn, start=1):
            tag = np.full(r["rows"], rid, np.int64)
            inputs[rid] = {"a": r["a"], "b": r["b"], "tag": tag}
            wanted = r["outputs"]
            rt(InferenceRequest("a", dict(inputs[rid]), id=rid, outputs=wanted), alone.respond(rid))
            rt(InferenceRequest("b", dict(inputs[rid]), id=rid, outputs=wanted), batched.respond(rid))
            if flushing and data.draw(st.booleans(), label="flush now"):
                rt.flush()  # as a polling transport does once it handed over what was pending
    want = alone.wait(len(drawn))
    got = batched.wait(len(drawn))
    stats = served.metrics.snapshot()
    for rid in inputs:
        _same(got[rid], want[rid], rid, inputs[rid])
    for tags, dtype in calls.batched:
        ids = list(dict.fromkeys(tags))  # the call's requests, in the order of their rows
        assert len(ids) <= max_batch_size, f"a call of {len(ids)} requests: {tags}"
        assert tags == [rid for rid in ids for _ in range(inputs[rid]["tag"].shape[0])], (
            f"a call's rows are not its requests' rows, each whole and in order: {tags}"
        )
        if len(ids) > 1:
            widths = {inputs[rid]["a"].shape[1:] for rid in ids}
            assert len(widths) == 1, f"requests of trailing shapes {widths} stacked together"
            for rid in ids:
                x = inputs[rid]
                assert x["a"].shape[0] == x["b"].shape[0], f"request {rid}'s rows disagree, yet batched"
            unseen = [r for r in drawn if not r["rows"] and not r["a"].dtype.metadata]  # no tag
            if all(inputs[rid]["a"].dtype.metadata for rid in ids) and not unseen:  # BF16, BYTES
                assert dtype.metadata == inputs[ids[0]]["a"].dtype.metadata, "the batch lost the mark"
    assert all(int(size) <= max_batch_size for size in stats["batch_sizes"])
    assert stats["requests"] == len(drawn)
    assert sum(stats["errors_by_code"].values()) == sum(isinstance(v, InferenceError) for v in got.values())
