"""Failure injection: a model or a transport that misbehaves costs a request (or ends ``serve``
with a clear error), never leaves a live-looking server that answers no one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from foundation_core import Hub
from foundation_ml import FunctionModel, InferenceClient, MLRuntime
from foundation_ml.errors import HandlerError, ModelLoadError

RAISED = [SystemExit(7), KeyboardInterrupt("model"), GeneratorExit()]


def raising_model(exc: BaseException) -> FunctionModel:
    """``y = 2x``, except that a first element of 1001 raises ``exc``."""

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        if x.size and x.flat[0] == 1001:
            raise exc
        return {"y": x * 2}

    return FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})


def always_raising(exc: BaseException) -> FunctionModel:
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        raise exc

    return FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})


@pytest.fixture
def shm_runtime(shm_hub: Hub, name: str) -> Iterator[MLRuntime]:
    rt = MLRuntime(shm_hub)
    yield rt
    rt.close()


@pytest.mark.parametrize("batch", [1, 4], ids=["unbatched", "batched"])
@pytest.mark.parametrize("exc", RAISED, ids=lambda e: type(e).__name__)
def test_a_model_raising_a_base_exception_fails_its_request_and_serving_goes_on(
    shm_runtime: MLRuntime, shm_hub: Hub, name: str, exc: BaseException, batch: int
) -> None:
    shm_runtime.register_model("bad", raising_model(exc), max_batch_size=batch, max_wait_us=200)
    shm_runtime.start("shm", name)
    bad = np.full((1, 4), 1001, np.float32)
    good = np.ones((2, 4), np.float32)
    with InferenceClient(name, transport="shm", hub=shm_hub, timeout=10) as client:
        with pytest.raises(HandlerError, match=type(exc).__name__):
            client.infer("bad", {"x": bad})
        for _ in range(3):
            np.testing.assert_array_equal(client.infer("bad", {"x": good})["y"], good * 2)


@pytest.mark.parametrize("exc", [SystemExit(7), GeneratorExit()], ids=lambda e: type(e).__name__)
def test_a_model_raising_a_base_exception_at_warm_up_is_a_load_error(
    shm_runtime: MLRuntime, exc: BaseException
) -> None:
    with pytest.raises(ModelLoadError, match=rf"at warm-up \(the example input: .*\): {type(exc).__name__}"):
        shm_runtime.register_model("bad", always_raising(exc))
    assert shm_runtime.registry.names() == []


@pytest.mark.parametrize(
    "exc", [RuntimeError("out of memory"), SystemExit(7)], ids=lambda e: type(e).__name__
)
def test_a_model_raising_in_its_warm_up_rounds_is_a_load_error(
    shm_runtime: MLRuntime, exc: BaseException
) -> None:
    """The warm-up's first calls (checked against the signature) passed, a later round raised: that
    came out of register_model as it was (a RuntimeError, not a load error; a SystemExit that
    ended `foundation serve`, or an application registering a model while it serves)."""
    calls = [0]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        calls[0] += 1
        if calls[0] > 2:  # the output check's batches of 1 and 2 rows pass
            raise exc
        return {"y": x}

    model = FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with pytest.raises(ModelLoadError, match=rf"raised in its warm-up: {type(exc).__name__}") as raised:
        shm_runtime.register_model("bad", model)
    assert raised.value.__cause__ is exc
    assert shm_runtime.registry.names() == []


def test_a_load_error_a_model_raises_in_its_warm_up_is_not_wrapped_again(shm_runtime: MLRuntime) -> None:
    """A ``warmup()`` that says itself what failed, as a ``ModelLoadError``, reaches the caller as
    it said it, named for the model (not "raised in its warm-up: ModelLoadError: ...")."""

    class Cold(FunctionModel):
        def warmup(self) -> None:
            raise ModelLoadError("its weights are on cuda:1, which this host lacks")

    model = Cold(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with pytest.raises(ModelLoadError) as raised:
        shm_runtime.register_model("cold", model)
    assert str(raised.value) == "model 'cold': its weights are on cuda:1, which this host lacks"
    assert shm_runtime.registry.names() == []


def test_a_keyboard_interrupt_off_the_main_thread_at_warm_up_is_a_load_error(
    shm_runtime: MLRuntime,
) -> None:
    """On the main thread a KeyboardInterrupt may be Ctrl-C and propagates; elsewhere it is the
    model's doing."""
    got: list[BaseException] = []

    def load() -> None:
        try:
            shm_runtime.register_model("bad", always_raising(KeyboardInterrupt("x")))
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=load)
    t.start()
    t.join(30)
    assert len(got) == 1 and isinstance(got[0], ModelLoadError), got


SERVE_WITH_A_DYING_LOOP = textwrap.dedent(
    """
    import sys
    from foundation_ml import FunctionModel, MLRuntime
    from foundation_ml._client import registered_hub
    from foundation_shm._server import ShmServer

    def die(self):
        raise KeyboardInterrupt("injected into the serving loop")

    ShmServer._serve_loop = die
    rt = MLRuntime(registered_hub())
    echo = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})
    rt.register_model("m", echo)
    try:
        rt.serve("shm", sys.argv[1], ready=lambda: print("ready", flush=True))
    except Exception as exc:
        print(f"serve raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)
    print("serve returned", flush=True)
    """
)


@pytest.mark.slow
def test_serve_ends_with_an_error_when_the_transport_serving_loop_dies(shm_hub: Hub, name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_A_DYING_LOOP, name], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "serve raised InternalError" in proc.stdout, proc.stdout + proc.stderr
    assert "KeyboardInterrupt: injected into the serving loop" in proc.stdout


def test_a_drain_that_times_out_counts_and_logs_the_requests_it_abandoned(
    shm_runtime: MLRuntime, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def stuck(x: np.ndarray) -> dict[str, np.ndarray]:
        if x.size and x.flat[0] == 1001:
            release.wait(10)
        return {"y": x * 2}

    model = FunctionModel(stuck, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    shm_runtime.register_model("stuck", model)
    shm_runtime.start("shm", name)
    got: list[BaseException] = []

    def call() -> None:
        with InferenceClient(name, transport="shm", hub=shm_runtime.hub, timeout=10) as client:
            try:
                client.infer("stuck", {"x": np.full((1, 4), 1001, np.float32)})
            except Exception as exc:
                got.append(exc)

    t = threading.Thread(target=call)
    t.start()
    server = shm_runtime.servers[0][1]
    deadline = time.monotonic() + 60  # until the request runs (5 s of polls ran on, loaded)
    while not server.in_flight():
        assert time.monotonic() < deadline, "the request never reached the model"
        time.sleep(0.01)
    try:
        with caplog.at_level("WARNING", logger="foundation_ml"):
            shm_runtime.close(drain_timeout=0.2)
    finally:
        release.set()
        t.join(15)
    assert shm_runtime.abandoned == 1
    assert "stopped without answering 1 in-flight request(s): the 0.2 s drain timed out" in caplog.text


@pytest.mark.parametrize("batch", [1, 4], ids=["unbatched", "batched"])
def test_a_model_raising_logs_its_traceback_once_per_exception_and_line(
    runtime: MLRuntime, name: str, caplog: pytest.LogCaptureFixture, batch: int
) -> None:
    """A model's exception reached its client as a HandlerError's message and the server logged
    nothing: an operator saw ``errors`` rise with no traceback anywhere. Each distinct failure
    (type and raising line) is logged once at error level with its traceback; every request is
    still answered and counted."""

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        if x.flat[0] == 1001:
            raise RuntimeError("weights are NaN")
        if x.flat[0] == 2002:
            raise ValueError(f"row of {x.flat[1]} out of range")  # its message differs each time
        return {"y": x}

    model = FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("flaky", model, max_batch_size=batch, max_wait_us=200)
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub, timeout=10) as client:
        with caplog.at_level("ERROR", logger="foundation_ml"):
            for first in [1001, 2002, 1001, 2002, 1001]:
                x = np.full((1, 4), float(first), np.float32)
                x[0, 1] = len(caplog.records)
                with pytest.raises(HandlerError):
                    client.infer("flaky", {"x": x})
            client.infer("flaky", {"x": np.ones((1, 4), np.float32)})
    records = [r for r in caplog.records if r.name == "foundation_ml"]
    assert [r.exc_info[1].__class__ for r in records if r.exc_info] == [RuntimeError, ValueError]
    assert len(records) == 2
    assert (
        records[0].getMessage().startswith("model 'flaky' version '1' raised RuntimeError: weights are NaN")
    )
    assert runtime.stats()["models"]["flaky"]["errors_by_code"] == {"HANDLER_ERROR": 5}


def test_a_model_raising_from_many_lines_logs_a_bounded_number_of_them(
    runtime: MLRuntime, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    places = [compile(f"raise RuntimeError('place {i}')", f"<place {i}>", "exec") for i in range(25)]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        if x.flat[0] >= 0:
            exec(places[int(x.flat[0])])
        return {"y": x}

    model = FunctionModel(run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("many", model, warmup=False)
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub, timeout=10) as client:
        with caplog.at_level("ERROR", logger="foundation_ml"):
            for i in range(25):
                with pytest.raises(HandlerError, match=f"place {i}"):
                    client.infer("many", {"x": np.full((1, 4), i, np.float32)})
    messages = [r.getMessage() for r in caplog.records if r.name == "foundation_ml"]
    assert len(messages) == 20
    assert messages[-1].endswith(
        "logged once per exception type and line: the last of 20 logged for this version)"
    )
