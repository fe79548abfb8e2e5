"""A runtime closed, or closing in another thread, refuses requests, starts and registrations."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from foundation_core.errors import FoundationError
from foundation_ml import (
    FunctionModel,
    InferenceClient,
    InferenceRequest,
    MLRuntime,
    ModelLoadError,
    _runtime_models,
)
from foundation_ml.errors import ModelNotFound, ServerUnavailable, ShuttingDown

from ._runtime_support import _CountsCloses, call
from .conftest import unique_name


def test_requests_after_close_are_refused(runtime, rows) -> None:
    runtime.register_model(
        "m", FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
    )
    runtime.close()
    got = call(runtime, InferenceRequest("m", {"x": rows(1)}))
    assert isinstance(got, ShuttingDown | ModelNotFound)


def test_start_after_close_is_refused_and_serves_nothing(runtime, name) -> None:
    """``start()`` on a closed runtime started a server that nothing stopped (close() again did
    nothing, nor did the interpreter's exit): over shm its objects stayed in /dev/shm after the
    process ended. It is refused now, naming the runtime as closed, and nothing is served."""
    runtime.close()
    with pytest.raises(FoundationError, match=rf"^the runtime is closed: start\('inproc', '{name}'\)"):
        runtime.start("inproc", name)
    with pytest.raises(ServerUnavailable):
        InferenceClient(name, transport="inproc")
    assert runtime.servers == []


def test_a_start_that_a_close_in_another_thread_overtook_stops_its_server(
    runtime, name, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close() landing while start() was bringing up its server (after the check, before the
    server was listed) did not see it: the server was left serving, stopped by nobody."""
    from foundation_ml._inproc import InprocTransport

    serve = InprocTransport.serve

    def then_closed(self: Any, address: str, handler: Any, **options: Any) -> Any:
        server = serve(self, address, handler, **options)
        runtime.close()  # as another thread may, now
        return server

    monkeypatch.setattr(InprocTransport, "serve", then_closed)
    with pytest.raises(FoundationError, match=r"^the runtime is closed"):
        runtime.start("inproc", name)
    with pytest.raises(ServerUnavailable):
        InferenceClient(name, transport="inproc")
    assert runtime.servers == []


class _HeldClose(_CountsCloses):
    """A model whose close() waits until ``release`` is set (``closing`` says it began)."""

    def __init__(self) -> None:
        super().__init__()
        self.closing, self.release = threading.Event(), threading.Event()

    def close(self) -> None:
        super().close()
        self.closing.set()
        self.release.wait(60)


@contextlib.contextmanager
def _close_under_way(runtime: MLRuntime) -> Iterator[Callable[[], None]]:
    """Yields ``begin()``: a close() of ``runtime`` in another thread, returning once that close
    has stopped the servers and listed the models to unload, and is held in the first one's
    close() (a model registered here) until the block ends; then that close runs to its end."""
    held = _HeldClose()
    runtime.register_model("a_held", held)  # (unloaded first: in order of name)
    closing = threading.Thread(target=runtime.close)

    def begin() -> None:
        if closing.ident is None:
            closing.start()
        assert held.closing.wait(60)

    try:
        yield begin
    finally:
        held.release.set()
        if closing.ident is not None:
            closing.join(60)


@pytest.mark.parametrize("serve_fails", [False, True])
def test_a_start_overtaken_by_a_close_still_under_way_is_refused(
    runtime, name, monkeypatch: pytest.MonkeyPatch, serve_fails: bool
) -> None:
    """start() saw whether a close() had begun while it brought up its server by ``_closed``, set
    once close began; since 493a618 that is set when close ends, and with a close under way (its
    servers stopped already) the server started meanwhile was listed and left serving for good,
    or, the transport failing, the runtime left accepting. It reads ``_closing``: the start is
    refused (or raises the transport's failure), its server stopped, the runtime not accepting."""
    get = runtime.hub.transports.get
    with _close_under_way(runtime) as begin:

        def then_closing(transport: str) -> Any:
            begin()  # after start()'s check, before its server
            return _FailingTransport if serve_fails else get(transport)

        monkeypatch.setattr(runtime.hub.transports, "get", then_closing)
        raised = (
            (OSError, "the name is taken") if serve_fails else (FoundationError, r"^the runtime is closed")
        )
        with pytest.raises(raised[0], match=raised[1]):
            runtime.start("inproc", name)
        monkeypatch.undo()
        with pytest.raises(ServerUnavailable):
            InferenceClient(name, transport="inproc", hub=runtime.hub)
    assert runtime.servers == [] and runtime.stats()["server"]["accepting"] is False


def test_a_registration_overtaken_by_a_close_still_under_way_is_refused(runtime, monkeypatch) -> None:
    """register_model's last check (as it adds the model) read ``_closed``, set once close began;
    since 493a618 that is set when close ends, and a model whose loading ended while a close was
    unloading the others (having listed them) was added and left loaded, its batcher thread
    running, for good. It reads ``_closing``: refused, the model not served (nor closed: a
    LoadedModel handed over is the caller's to close)."""
    check_outputs = _runtime_models.check_outputs
    model, model_name = _CountsCloses(), unique_name("m")
    with _close_under_way(runtime) as begin:

        def then_closing(*args: Any) -> None:
            begin()  # after register_model's first check, before it adds the model
            check_outputs(*args)

        monkeypatch.setattr(_runtime_models, "check_outputs", then_closing)
        with pytest.raises(ModelLoadError, match="the runtime is closed"):
            runtime.register_model(model_name, model, max_batch_size=2)
    assert (model.closed, runtime.registry.names()) == (0, [])
    assert not [t for t in threading.enumerate() if t.name == f"batcher-{model_name}"]


class _FailingTransport:
    def serve(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the name is taken")


@pytest.mark.parametrize("serve_fails", [False, True])
def test_a_close_overtaking_a_start_before_its_server_leaves_the_runtime_not_accepting(
    runtime, name, monkeypatch: pytest.MonkeyPatch, serve_fails: bool
) -> None:
    """A close() that ran whole after start()'s check but before start() marked the runtime
    accepting left stats() saying ``accepting: true`` on a closed runtime: whether the start was
    then refused (as it should be), or raised the transport's failure (its name taken, say)."""
    get = runtime.hub.transports.get

    def then_closed(transport: str) -> Any:
        impl = get(transport)
        runtime.close()  # as another thread may, now: before start() marks the runtime accepting
        return _FailingTransport if serve_fails else impl

    monkeypatch.setattr(runtime.hub.transports, "get", then_closed)
    raised = (OSError, "the name is taken") if serve_fails else (FoundationError, r"^the runtime is closed")
    with pytest.raises(raised[0], match=raised[1]):
        runtime.start("inproc", name)
    assert runtime.servers == [] and runtime.stats()["server"]["accepting"] is False
