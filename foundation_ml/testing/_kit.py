"""The transport kit's machinery: the inputs and models it serves, the recording handler, the
kit (a transport, its hub and options, fresh addresses, what a check started: ``_owned``) and
the expectations checks make."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from foundation_core import Hub

from .._backend import FunctionModel
from .._datatypes import DataType
from .._runtime import MLRuntime
from .._transport import RequestHandler, Respond, Transport, TransportClient, TransportServer
from .._types import InferenceRequest, InferenceResponse
from ..errors import (
    HandlerError,
    InferenceError,
    ModelNotFound,
    error_for_code,
)
from ._owned import Phase, _expect, _Fail, _Owned

__all__ = ["TransportCheckFailed"]


class TransportCheckFailed(AssertionError):
    """One or more checks failed; ``failures`` maps each check's name to what was wrong."""

    def __init__(self, transport: str, failures: dict[str, str]) -> None:
        self.transport = transport
        self.failures = failures
        lines = "\n".join(f"- {name}: {what}" for name, what in failures.items())
        super().__init__(f"transport {transport!r} failed {len(failures)} check(s):\n{lines}")


# --- what the kit serves --------------------------------------------------------------------

#: one input (and the same output) per datatype, in a shape that batches
_TYPES: dict[str, DataType] = {f"t_{dt.name.lower()}": dt for dt in DataType}


def _typed_inputs(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, dt in _TYPES.items():
        if dt is DataType.BOOL:
            a = rng.integers(0, 2, (rows, 3)).astype(bool)
        elif dt in (DataType.FP16, DataType.FP32, DataType.FP64):
            a = rng.standard_normal((rows, 3)).astype(dt.numpy)
        else:
            info = np.iinfo(dt.numpy)
            a = rng.integers(info.min, info.max, (rows, 3), dtype=dt.numpy, endpoint=True)
        out[name] = a.view(dt.numpy)  # BF16 and BYTES carry their mark
    return out


def _identity(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    return {f"o{name}": a for name, a in inputs.items()}


def _tag(x: np.ndarray) -> np.ndarray:
    return x * 2


def _boom(x: np.ndarray) -> np.ndarray:
    raise RuntimeError("kit: the model raised on purpose")


def _runtime(hub: Hub) -> MLRuntime:
    runtime = MLRuntime(hub)
    runtime.register_model(
        "kit-types",
        FunctionModel(
            _identity,
            inputs={n: f"{dt.name}[-1, 3]" for n, dt in _TYPES.items()},
            outputs={f"o{n}": f"{dt.name}[-1, 3]" for n, dt in _TYPES.items()},
        ),
    )
    runtime.register_model(
        "kit-double", FunctionModel(_tag, inputs={"x": "INT64[-1, 2]"}, outputs={"y": "INT64[-1, 2]"})
    )
    runtime.register_model(
        "kit-boom",
        FunctionModel(_boom, inputs={"x": "FP32[-1, 2]"}, outputs={"y": "FP32[-1, 2]"}),
        warmup=False,
    )
    return runtime


class _Recorder:
    """A handler of the kit's own: records each request; answers ``x * 2`` as ``y`` (with the
    request's id and the parameters ``{"kit": "answer"}``), an error for model ``kit-error-N``
    (code N), a ``HandlerError`` naming no model or request for model ``kit-unnamed``, never for
    model ``kit-hang`` (until ``release()``), and pairs its requests for model ``kit-pair``: the
    first waits for a second (up to 2 s) and is answered after it. ``spawn(target, *args)``
    starts the threads it answers from."""

    def __init__(self, spawn: Callable[..., Any]) -> None:
        self.spawn = spawn
        self.requests: list[InferenceRequest] = []
        self.lock = threading.Lock()
        self.hung: list[tuple[InferenceRequest, Respond]] = []
        self.waiting: tuple[InferenceRequest, Respond] | None = None
        self.paired = threading.Condition(self.lock)
        self.delay = 0.0

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        with self.lock:
            self.requests.append(request)
        if request.model == "kit-hang":
            with self.lock:
                self.hung.append((request, respond))
            return
        if request.model == "kit-unnamed":  # the client names the call (over shm: always)
            respond(HandlerError("kit: an error naming no call"))
            return
        if request.model.startswith("kit-error-"):
            code = int(request.model.rsplit("-", 1)[1])
            respond(
                error_for_code(
                    code, f"kit: error {code} on purpose", model=request.model, request_id=request.id
                )
            )
            return
        if request.model == "kit-pair":
            self._pair(request, respond)
            return
        if self.delay:
            self.spawn(self._later, request, respond, self.delay)
            return
        respond(self.answer(request))

    def _later(self, request: InferenceRequest, respond: Respond, delay: float) -> None:
        time.sleep(delay)
        respond(self.answer(request))

    def _pair(self, request: InferenceRequest, respond: Respond) -> None:
        with self.lock:
            if self.waiting is None:  # first of a pair: answered by the second, or after 2 s
                me = self.waiting = (request, respond)
                self.spawn(self._unpaired, me)
                return
            first, self.waiting = self.waiting, None
            self.paired.notify_all()  # the first's waiting thread ends now, not 2 s later
        respond(self.answer(request))  # the second is answered first
        first[1](self.answer(first[0]))

    def _unpaired(self, me: tuple[InferenceRequest, Respond]) -> None:
        """Answer the first of a pair alone if no second comes within 2 s (a transport that hands
        over one request at a time per client). Woken as soon as it is paired: a thread asleep
        2 s held the request and its respond, views on the transport's memory, after the kit
        had returned."""
        with self.lock:
            self.paired.wait_for(lambda: self.waiting is not me, timeout=2.0)
            if self.waiting is not me:
                return
            self.waiting = None
        me[1](self.answer(me[0]))

    @staticmethod
    def answer(request: InferenceRequest) -> InferenceResponse:
        x = np.asarray(request.inputs["x"])
        return InferenceResponse(request.id, request.model, {"y": x * 2}, "1", {"kit": "answer"})

    def release(self) -> None:
        """Answer every request held: those of ``kit-hang``, and the first of a pair still
        waiting for its second (its thread ends now)."""
        with self.lock:
            hung, self.hung = self.hung, []
            if self.waiting is not None:
                hung.append(self.waiting)
                self.waiting = None
                self.paired.notify_all()
        for request, respond in hung:
            respond(self.answer(request))

    def metadata(self, model: str) -> dict[str, Any]:
        if model != "kit-meta":
            raise ModelNotFound("kit: no such model", model=model)
        return {"name": model, "versions": ["1"], "nested": {"list": [1, 2.5, "s", True, None]}}

    def stats(self) -> dict[str, Any]:
        return {"server": {"name": "kit"}, "models": {"kit-meta": {"requests": 3}}}


# --- the checks ---------------------------------------------------------------------------


class _Kit:
    def __init__(
        self,
        name: str,
        hub: Hub,
        transport: Transport,
        serve_options: Mapping[str, Any],
        connect_options: Mapping[str, Any],
        address: Callable[[], str],
        leftovers: Callable[[], list[str]] | None,
        patience: float,
    ) -> None:
        self.name, self.hub, self.patience = name, hub, patience
        self.transport = transport
        self.serve_options, self.connect_options = dict(serve_options), dict(connect_options)
        self.address, self.leftovers = address, leftovers
        self.owned = _Owned(patience)

    # everything a check starts goes through these, so that ``clean_up`` ends what the check
    # did not, however it ended (a failure, an unexpected exception, a connect that should
    # have failed and returned a client)

    def call(self, fn: Callable[[], Any], what: str) -> Any:
        return self.owned.call(fn, what, self.patience)

    def raises(self, kind: type[BaseException], fn: Callable[[], Any], what: str) -> BaseException:
        return _expect_raises(self, kind, fn, what)

    def thread(self, target: Callable[..., Any], *args: Any) -> threading.Thread:
        return self.owned.thread(target, *args)

    def recorder(self) -> _Recorder:
        handler = _Recorder(self.owned.thread)
        self.owned.add(handler, Phase.RELEASE, "releasing the kit's handler", handler.release)
        return handler

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        server = self.transport.serve(address, handler, **{**self.serve_options, **options})
        self.owned.add(
            server, Phase.STOP, f"stop(0.0) of the server at {address!r}", lambda: server.stop(0.0)
        )
        return server

    def stop(self, server: TransportServer, drain_timeout: float, what: str | None = None) -> None:
        """``server.stop(drain_timeout)``, given ``drain_timeout`` + ``patience`` s to return (one
        that hangs fails the check, not the kit). Tried once: clean-up does not stop it again
        (a second ``stop`` under a hung one would only hang, or race it)."""
        self.owned.ended(server)
        self.owned.call(
            lambda: server.stop(drain_timeout),
            what or f"stop({drain_timeout:g})",
            drain_timeout + self.patience,
        )

    def connect(self, address: str, **options: Any) -> TransportClient:
        client = self.transport.connect(address, **{**self.connect_options, **options})
        self.owned.add(client, Phase.CLOSE, f"close() of a client of {address!r}", client.close)
        return client

    def close(self, client: TransportClient, what: str = "close()") -> None:
        """``client.close()``, given ``patience`` s; tried once, as ``stop``."""
        self.owned.ended(client)
        self.owned.call(client.close, what, self.patience)

    def clean_up(self, before: Collection[threading.Thread] = ()) -> list[str]:
        """After each check: end what it left running, and wait for the threads started since
        ``before`` to end; what went wrong doing so, one line each."""
        return self.owned.clean_up(before)

    @contextmanager
    def own(self) -> Iterator[tuple[_Recorder, str, TransportClient]]:
        handler = self.recorder()
        address = self.address()
        server = self.serve(address, handler)
        client = self.connect(address)
        yield handler, address, client  # (a check that raises leaves the rest to clean_up)
        handler.release()
        self.owned.ended(handler)
        self.close(client)
        self.stop(server, 2.0)

    @contextmanager
    def runtime(self) -> Iterator[tuple[MLRuntime, str, TransportClient]]:
        runtime = _runtime(self.hub)
        self.owned.add(runtime, Phase.STOP, "closing the runtime", lambda: runtime.close(drain_timeout=0.0))
        address = self.address()
        runtime.start(transport=self.name, name=address, **self.serve_options)
        client = self.connect(address)
        yield runtime, address, client
        self.close(client)
        self.owned.ended(runtime)
        self.owned.call(lambda: runtime.close(drain_timeout=2.0), "closing the runtime", 2.0 + self.patience)


def _expect_raises(kit: _Kit, kind: type[BaseException], fn: Callable[[], Any], what: str) -> BaseException:
    try:
        value = kit.call(fn, what)
    except _Fail:
        raise
    except Exception as exc:  # (not an interrupt: Ctrl-C while the kit waits ends check_transport)
        _expect(
            type(exc) is kind
            or (kind is not InferenceError and isinstance(exc, kind) and not isinstance(exc, InferenceError)),
            f"{what} raised {type(exc).__name__}: {exc}, expected {kind.__name__}",
        )
        return exc
    raise _Fail(f"{what} returned {value!r:.200}, expected {kind.__name__}")


def _same_arrays(got: Mapping[str, Any], want: Mapping[str, np.ndarray], what: str) -> None:
    _expect(sorted(got) == sorted(want), f"{what}: outputs {sorted(got)}, expected {sorted(want)}")
    for name, expected in want.items():
        a = got[name]
        _expect(
            isinstance(a, np.ndarray), f"{what}: output {name} is a {type(a).__name__}, not a numpy array"
        )
        _expect(
            a.dtype == expected.dtype and DataType.from_numpy(a.dtype) is DataType.from_numpy(expected.dtype),
            f"{what}: output {name} came back {DataType.from_numpy(a.dtype).name} ({a.dtype}), "
            f"sent as {DataType.from_numpy(expected.dtype).name} ({expected.dtype})",
        )
        _expect(
            a.shape == expected.shape, f"{what}: output {name} has shape {a.shape}, expected {expected.shape}"
        )
        _expect(bool(np.array_equal(a, expected)), f"{what}: output {name} differs from the direct call's")


def _direct(runtime: MLRuntime, request: InferenceRequest) -> InferenceResponse:
    """The runtime's answer in-process: what the transport's client must return."""
    answers: list[Any] = []
    runtime(InferenceRequest(request.model, request.inputs, id=request.id), answers.append)
    if isinstance(answers[0], InferenceError):
        raise answers[0]
    return answers[0]  # type: ignore[no-any-return]
