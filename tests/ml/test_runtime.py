"""The runtime serves models on inproc, validates requests, and answers every bad input typed."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from foundation_ml import FunctionModel, InferenceClient, InferenceRequest, MLRuntime, ModelLoadError
from foundation_ml.errors import DeadlineExceeded, HandlerError, InvalidInput, ModelNotFound

from ._runtime_support import _backend_hub, _Linear, call
from .conftest import affine_model


def test_serves_a_model_over_inproc(served: InferenceClient, rows) -> None:
    x = rows(3)
    out = served.infer("affine", {"x": x})
    np.testing.assert_array_equal(out["y"], x * 2 + 1)


def test_response_carries_request_id_and_version(served: InferenceClient, rows) -> None:
    response = served.infer_response("affine", {"x": rows(1)})
    assert response.id != 0
    assert (response.model, response.version) == ("affine", "1")


def test_metadata_reports_the_signature(served: InferenceClient) -> None:
    meta = served.metadata("affine")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["versions"] == ["1"]


def test_unknown_model_names_the_served_ones(served: InferenceClient, rows) -> None:
    with pytest.raises(ModelNotFound, match=r"'nope'.*serving: affine"):
        served.infer("nope", {"x": rows(1)})


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"z": np.zeros((1, 4), np.float32)}, "missing input.*x.*unexpected input.*z"),
        ({"x": np.zeros((1, 4), np.float64)}, r"input x is FP64\[1, 4\], expected FP32\[-1, 4\]"),
        ({"x": np.zeros((1, 5), np.float32)}, r"input x is FP32\[1, 5\], expected FP32\[-1, 4\]"),
        ({"x": np.zeros((4,), np.float32)}, r"input x is FP32\[4\]"),
        ({}, "missing input"),
    ],
)
def test_bad_inputs_state_the_expected_signature(served: InferenceClient, inputs, problem) -> None:
    with pytest.raises(InvalidInput, match=problem) as info:
        served.infer("affine", inputs)
    assert r"expected inputs: x: FP32[-1, 4]" in str(info.value)


def test_unknown_requested_output_is_invalid(served: InferenceClient, rows) -> None:
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) w"):
        served.infer("affine", {"x": rows(1)}, outputs=["w"])


def test_model_that_raises_gets_handler_error_and_server_keeps_serving(runtime, name, rows) -> None:
    def fragile(x: np.ndarray) -> np.ndarray:
        if x[0, 0] < 0:
            raise ValueError("negative input")
        return x

    runtime.register_model(
        "fragile", FunctionModel(fragile, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    with pytest.raises(HandlerError, match="ValueError: negative input"):
        client.infer("fragile", {"x": -rows(1) - 1})
    np.testing.assert_array_equal(client.infer("fragile", {"x": rows(1)})["y"], rows(1))


def test_expired_deadline_is_refused_before_running(runtime, rows) -> None:
    ran = []
    runtime.register_model(
        "m",
        FunctionModel(
            lambda x: ran.append(1) or x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}
        ),
        warmup=False,
    )
    got = call(runtime, InferenceRequest("m", {"x": rows(1)}, id=7, deadline_ns=1))
    assert isinstance(got, DeadlineExceeded) and got.request_id == 7
    assert ran == []


def test_unbatched_model_runs_inline_in_the_transport_thread(runtime, rows) -> None:
    threads = []
    runtime.register_model(
        "m",
        FunctionModel(
            lambda x: threads.append(threading.get_ident()) or x,
            inputs={"x": "FP32[-1, 4]"},
            outputs={"y": "FP32[-1, 4]"},
        ),
        warmup=False,
    )
    call(runtime, InferenceRequest("m", {"x": rows(1)}))
    assert threads == [threading.get_ident()]


def test_versions_default_to_the_latest_and_can_be_named(runtime, name, rows) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(
        "m",
        FunctionModel(lambda x: x + 1, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}),
        version="2",
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    x = rows(1)
    assert client.infer_response("m", {"x": x}).version == "2"
    np.testing.assert_array_equal(client.infer("m", {"x": x}, version="1")["y"], x)
    assert client.metadata("m")["versions"] == ["1", "2"] == runtime.versions("m")
    assert [m.name for m in runtime.models()] == ["m"]
    with pytest.raises(ModelNotFound, match=r"no version '3' \(versions: 1, 2\)"):
        client.infer("m", {"x": x}, version="3")
    runtime.unload_model("m", "2")
    assert client.infer_response("m", {"x": x}).version == "1"
    runtime.unload_model("m")
    with pytest.raises(ModelNotFound):
        client.infer("m", {"x": x})


def test_a_bad_request_names_the_version_it_was_checked_against_when_several_are_served(
    runtime, name, rows
) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    three = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidInput) as info:
        client.infer("m", {"x": three})
    assert info.value.message == (  # one version served: nothing to tell apart
        "input x is FP32[1, 3], expected FP32[-1, 4] (expected inputs: x: FP32[-1, 4])"
    )
    runtime.register_model(  # version 2 answers with a column too few: its answer is refused
        "m",
        FunctionModel(lambda x: x[:, 1:], inputs={"x": "FP32[-1, 3]"}, outputs={"y": "FP32[-1, 3]"}),
        version="2",
        warmup=False,  # (its warm-up would refuse it)
    )
    with pytest.raises(InvalidInput) as info:
        client.infer("m", {"x": rows(1)})  # the latest, version 2, takes FP32[-1, 3]
    assert str(info.value) == (
        "model 'm': version '2': input x is FP32[1, 4], expected FP32[-1, 3] "
        "(expected inputs: x: FP32[-1, 3])"
    )
    with pytest.raises(InvalidInput, match=r"^model 'm': version '1': input x is FP32\[1, 3\]"):
        client.infer("m", {"x": three}, version="1")
    with pytest.raises(HandlerError, match=r"^model 'm': version '2': the model's answer breaks"):
        client.infer("m", {"x": three})
    with pytest.raises(InvalidInput) as info:  # version 1's output is y too: say whose list it is
        client.infer("m", {"x": three}, outputs=["z"])
    assert str(info.value) == "model 'm': version '2': unknown output(s) z (outputs: y: FP32[-1, 3])"
    runtime.unload_model("m", "2")  # one version again
    with pytest.raises(InvalidInput) as info:
        client.infer("m", {"x": three})
    assert info.value.message.startswith("input x is FP32[1, 3], expected FP32[-1, 4]")


def test_a_batched_answer_without_its_rows_names_the_version_when_several_are_served(
    runtime, name, rows
) -> None:
    """The broken answer's other message, rows missing from a batched model's output, said
    nothing of whose answer it was, while its signature message names the version."""
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.register_model(  # version 2 drops its last row
        "m",
        FunctionModel(lambda x: x[:-1], inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"}),
        version="2",
        max_batch_size=4,
        warmup=False,
    )
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    with pytest.raises(
        HandlerError, match=r"^model 'm': version '2': the model returned output\(s\) y without"
    ):
        client.infer("m", {"x": rows(2)})
    assert client.infer("m", {"x": rows(2)}, version="1")["y"].shape == (2, 4)


def test_a_model_that_raises_is_named_by_version_when_several_are_served(runtime, name, rows) -> None:
    """A model's own exception said only "RuntimeError: boom": with two versions served, not
    which of them raised (unbatched and batched both)."""

    def boom(x):
        raise RuntimeError("boom")

    sig = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 4]"}}
    runtime.register_model("m", FunctionModel(lambda x: x, **sig))
    runtime.register_model("m", FunctionModel(boom, **sig), version="2", warmup=False)
    runtime.register_model("b", FunctionModel(lambda x: x, **sig))
    runtime.register_model("b", FunctionModel(boom, **sig), version="2", warmup=False, max_batch_size=4)
    runtime.start("inproc", name)
    client = InferenceClient(name, transport="inproc", hub=runtime.hub)
    for model in ("m", "b"):
        with pytest.raises(HandlerError, match=rf"^model '{model}': version '2': RuntimeError: boom$"):
            client.infer(model, {"x": rows(1)}, version="2")
        assert client.infer(model, {"x": rows(1)}, version="1")["y"].shape == (1, 4)
    runtime.register_model("alone", FunctionModel(boom, **sig), warmup=False)
    with pytest.raises(HandlerError, match=r"^model 'alone': RuntimeError: boom$"):
        client.infer("alone", {"x": rows(1)})


def test_loading_the_same_version_twice_is_an_error(runtime) -> None:
    model = FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    runtime.register_model("m", model)
    batchers = {t.name for t in threading.enumerate() if t.name.startswith("batcher-")}
    with pytest.raises(ModelLoadError, match="version '1' is already loaded"):
        runtime.register_model("m", model, max_batch_size=4)
    assert {t.name for t in threading.enumerate() if t.name.startswith("batcher-")} == batchers


class _Counting(FunctionModel):
    def __init__(self, version: str = "") -> None:
        super().__init__(self._run, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        self.version = version
        self.calls = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return x


@pytest.mark.parametrize(("version", "own"), [(None, ""), ("1", ""), (None, "1"), ("2", "")])
def test_a_version_already_served_is_refused_before_the_new_model_loads_or_runs(
    runtime: MLRuntime, version: str | None, own: str
) -> None:
    """A second model for a name and version already served was loaded and warmed up in full, and
    only then refused by the registry."""
    runtime.register_model("a", _Counting())
    runtime.register_model("a", _Counting(), version="2")
    model = _Counting(own)
    with pytest.raises(ModelLoadError, match=f"version '{version or '1'}' is already loaded"):
        runtime.register_model("a", model, version=version)
    assert model.calls == 0 and runtime.versions("a") == ["1", "2"]


def test_a_version_already_served_is_refused_before_its_backend_loads_it() -> None:
    loads: list[int] = []

    def make() -> object:
        loads.append(1)
        return _Linear()

    with _backend_hub(make) as hub, MLRuntime(hub) as runtime:
        runtime.register_model("lin", {"w": 1}, version="3")
        with pytest.raises(ModelLoadError, match="version '3' is already loaded"):
            runtime.register_model("lin", {"w": 1}, version="3")
        assert loads == [1]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"inputs": {"x": "FP64[-1, 4]"}}, r"inputs= \(x: FP64\[-1, 4\]\) differ from the FunctionModel's"),
        ({"outputs": {"z": "FP32[-1, 4]"}}, r"outputs= \(z: FP32\[-1, 4\]\) differ"),
        ({"inputs": {"x": "FP32[-1"}}, r"inputs=: tensor spec 'FP32\[-1' for 'x' is not of the form"),
        ({"backend": "torch"}, r"backend='torch' given with a FunctionModel"),
        ({"threads": 2}, r"threads= given with a FunctionModel"),
        ({"device": "cuda:0"}, r"device='cuda:0' given with a FunctionModel that runs on 'cpu'"),
    ],
)
def test_what_a_loaded_model_is_given_besides_must_agree_with_it(runtime, given, says) -> None:
    """A LoadedModel is served as it is: a signature, backend, option or device that would be
    ignored is refused, naming it, rather than served as if it applied."""
    with pytest.raises(ModelLoadError, match=says):
        runtime.register_model("m", affine_model(), **given)
    assert runtime.registry.names() == []
    same = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}
    runtime.register_model("m", affine_model(), device="cpu", **same)  # agreeing: served
    assert runtime.registry.names() == ["m"]


def test_model_whose_outputs_contradict_its_signature_is_not_served(runtime) -> None:
    wrong = FunctionModel(lambda x: x[:, :2], inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    with pytest.raises(ModelLoadError, match=r"output y is FP32\[1, 2\]"):
        runtime.register_model("wrong", wrong)
    assert runtime.registry.names() == []


def test_model_returning_outputs_it_does_not_declare_is_not_served(runtime) -> None:
    extra = FunctionModel(
        lambda x: {"y": x, "secret": x.astype(np.float64)},
        inputs={"x": "FP32[-1, 4]"},
        outputs={"y": "FP32[-1, 4]"},
    )
    with pytest.raises(ModelLoadError, match=r"undeclared output\(s\) secret"):
        runtime.register_model("extra", extra)
    assert runtime.registry.names() == []


def test_model_that_fails_warmup_is_not_served(runtime) -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("weights missing")

    with pytest.raises(ModelLoadError, match=r"raised on its example input at warm-up.*weights missing"):
        runtime.register_model(
            "b", FunctionModel(broken, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        )
    assert runtime.registry.names() == []


def test_a_model_that_fails_warmup_is_told_what_the_example_input_held(runtime) -> None:
    """A model taking indices below 5 (an nn.Embedding(5, ...)) failed on the example's integers
    0..9 with only 'index out of range': nothing said what it had been given."""

    def lookup(ids: np.ndarray) -> np.ndarray:
        return np.arange(10, dtype=np.float32).reshape(5, 2)[ids]

    with pytest.raises(ModelLoadError) as info:
        runtime.register_model(
            "emb", FunctionModel(lookup, inputs={"ids": "INT64[-1, 4]"}, outputs={"e": "FP32[-1, 4, 2]"})
        )
    message = str(info.value)
    assert "IndexError" in message
    example = FunctionModel(lookup, inputs={"ids": "INT64[-1, 4]"}, outputs={"e": "FP32[-1, 4, 2]"})
    ids = example.example_inputs()["ids"]
    assert f"ids: INT64[1, 4], values {ids.min()}..{ids.max()}" in message
    assert runtime.registry.names() == []


def test_a_start_refused_leaves_the_runtime_unnamed(runtime: MLRuntime, name: str) -> None:
    """A runtime takes its first server's name; it took it before the transport had accepted it,
    so after a refused ``start`` (an address another server holds; over shm 'bad/name') its stats
    and Prometheus text called the server that then started by the refused address."""
    runtime.register_model("affine", affine_model())
    with MLRuntime(runtime.hub) as other:
        other.start("inproc", name + "_held")
        with pytest.raises(ValueError, match="already serves"):
            runtime.start("inproc", name + "_held")
    runtime.start("inproc", name)
    with InferenceClient(name, transport="inproc", hub=runtime.hub) as client:
        client.infer("affine", {"x": np.ones((1, 4), np.float32)})
        assert client.stats()["server"]["name"] == name
    assert runtime.name == name
    assert (
        f'foundation_requests_total{{server="{name}",model="affine",version="1"}} 1' in runtime.prometheus()
    )


@pytest.mark.parametrize("bad", [5, None])
def test_a_runtime_name_that_is_no_str_is_refused(bad: object) -> None:
    """``MLRuntime(name=5)`` was taken, and its first ``prometheus()`` raised AttributeError."""
    with pytest.raises(
        TypeError, match=rf"^MLRuntime: name must be a str \('' takes its first server's\), not {bad!r}$"
    ):
        MLRuntime(name=bad)  # type: ignore[arg-type]


def test_a_hub_that_is_no_hub_is_refused_naming_the_device_argument() -> None:
    """``MLRuntime("cuda:0")`` (the device, given where the hub goes) was taken, and its
    ``register_model`` raised AttributeError: 'str' object has no attribute 'model_backends'."""
    with pytest.raises(
        TypeError,
        match=r"^MLRuntime: hub must be a foundation_core Hub .* not str 'cuda:0' \(the device is device=\)$",
    ):
        MLRuntime("cuda:0")  # type: ignore[arg-type]


def test_a_function_model_of_something_not_callable_is_refused_when_made() -> None:
    """``FunctionModel(5, ...)`` was made; registering it failed at warm-up ('int' object is not
    callable) and with ``warmup=False`` it was served, each request a HandlerError."""
    with pytest.raises(TypeError, match=r"^FunctionModel: fn must be callable, not int 5$"):
        FunctionModel(5, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})  # type: ignore[arg-type]


@pytest.mark.parametrize("outputs", [{}, [], None])
def test_a_function_model_without_outputs_is_refused_when_made(outputs: object) -> None:
    """``outputs={}`` was made and registered; a function returning an array then failed each
    request with "with several outputs return a dict", the model having none."""
    with pytest.raises(
        ValueError,
        match=rf"^FunctionModel: outputs must declare at least one tensor, not {re.escape(repr(outputs))} ",
    ):
        FunctionModel(lambda x: x, inputs={"x": "FP32[-1]"}, outputs=outputs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argument", "sig", "error", "told"),
    [
        (
            "outputs",
            ["a", "a"],
            TypeError,
            r"a tensor is an object with name, datatype and shape, not str 'a'$",
        ),
        ("outputs", [""], TypeError, r"a tensor is an object with name, datatype and shape, not str ''$"),
        ("outputs", "y", TypeError, r"must map each tensor's name to its spec, .* not the str 'y'$"),
        ("outputs", [{"name": "a", "datatype": "FP32", "shape": [-1]}] * 2, ValueError, r"more than once"),
        ("outputs", {"": "FP32[-1]"}, ValueError, r"tensor name '' must be"),
        ("inputs", ["x", "x"], TypeError, r"not str 'x'$"),
        ("inputs", {"": "FP32[-1]"}, ValueError, r"tensor name '' must be"),
    ],
)
def test_a_function_model_signature_error_names_the_argument_and_the_item(
    argument: str, sig: object, error: type[Exception], told: str
) -> None:
    given = {"inputs": {"x": "FP32[-1]"}, "outputs": {"y": "FP32[-1]"}, argument: sig}
    with pytest.raises(error, match=rf"^FunctionModel: {argument}[: ].*{told}"):
        FunctionModel(lambda x: x, **given)  # type: ignore[arg-type]


@pytest.mark.parametrize("batchable", ["no", 0, 1])
def test_a_function_model_batchable_that_is_no_bool_is_refused_when_made(batchable: object) -> None:
    """``batchable="no"`` was taken (truthy): the model was batched under ``max_batch_size``, its
    rows stacked with other callers'; ``batchable=0`` left it unbatched and its stats said
    ``"batchable": 0``. Only True, False and None (told by the signature) are taken."""
    told = r"^FunctionModel: batchable must be True, False or None \(told by the signature\), not "
    with pytest.raises(TypeError, match=told + rf"{batchable!r}$"):
        FunctionModel(
            lambda x: x,
            inputs={"x": "FP32[-1]"},
            outputs={"y": "FP32[-1]"},
            batchable=batchable,  # type: ignore[arg-type]
        )
    for taken in (True, False, None):
        FunctionModel(lambda x: x, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"}, batchable=taken)
