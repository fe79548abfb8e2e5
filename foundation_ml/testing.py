"""A test kit for transport authors: ``check_transport(name)`` holds a registered transport to
the contract of docs/transports.md, with real clients against real servers.

Each check serves either the runtime (``MLRuntime`` with small ``FunctionModel``s) or a handler
of the kit's own (which records what the transport handed it, answers out of order, or never
answers), connects the transport's own client, and compares what came back with what was sent
and with the runtime's answer in-process. Every check runs, whatever failed before it; a
failure raises ``TransportCheckFailed`` (an ``AssertionError``, so pytest reports it) listing
each failed check by name with what was wrong.

```python
from foundation_ml.testing import check_transport

def test_my_transport_keeps_the_contract():
    check_transport("uds")  # a hub with the installed plugins, or hub=... for one of your own
```
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from foundation_core import Hub

from ._backend import FunctionModel
from ._client import InferenceClient, registered_hub
from ._datatypes import DataType
from ._runtime import MLRuntime
from ._transport import Respond, Transport, TransportClient
from ._types import InferenceRequest, InferenceResponse
from .errors import (
    DeadlineExceeded,
    ErrorCode,
    HandlerError,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ServerUnavailable,
    ShuttingDown,
    error_for_code,
)

__all__ = ["CHECKS", "TransportCheckFailed", "check_transport"]

_names = itertools.count()


class TransportCheckFailed(AssertionError):
    """One or more checks failed; ``failures`` maps each check's name to what was wrong."""

    def __init__(self, transport: str, failures: dict[str, str]) -> None:
        self.transport = transport
        self.failures = failures
        lines = "\n".join(f"- {name}: {what}" for name, what in failures.items())
        super().__init__(f"transport {transport!r} failed {len(failures)} check(s):\n{lines}")


class _Fail(Exception):
    pass


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise _Fail(what)


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
    (code N), never for model ``kit-hang`` (until ``release()``), and pairs its requests for
    model ``kit-pair``: the first waits for a second (up to 2 s) and is answered after it."""

    def __init__(self) -> None:
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
            threading.Thread(target=self._later, args=(request, respond, self.delay), daemon=True).start()
            return
        respond(self.answer(request))

    def _later(self, request: InferenceRequest, respond: Respond, delay: float) -> None:
        time.sleep(delay)
        respond(self.answer(request))

    def _pair(self, request: InferenceRequest, respond: Respond) -> None:
        with self.lock:
            if self.waiting is None:  # first of a pair: answered by the second, or after 2 s
                me = self.waiting = (request, respond)
                threading.Thread(target=self._unpaired, args=(me,), daemon=True).start()
                return
            first, self.waiting = self.waiting, None
        respond(self.answer(request))  # the second is answered first
        first[1](self.answer(first[0]))

    def _unpaired(self, me: tuple[InferenceRequest, Respond]) -> None:
        time.sleep(2.0)  # a transport that hands over one request at a time per client
        with self.lock:
            if self.waiting is not me:
                return
            self.waiting = None
        me[1](self.answer(me[0]))

    @staticmethod
    def answer(request: InferenceRequest) -> InferenceResponse:
        x = np.asarray(request.inputs["x"])
        return InferenceResponse(request.id, request.model, {"y": x * 2}, "1", {"kit": "answer"})

    def release(self) -> None:
        with self.lock:
            hung, self.hung = self.hung, []
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
        serve_options: Mapping[str, Any],
        connect_options: Mapping[str, Any],
        address: Callable[[], str],
        leftovers: Callable[[], list[str]] | None,
        patience: float,
    ) -> None:
        self.name, self.hub, self.patience = name, hub, patience
        self.transport: Transport = hub.transports.get(name)()
        self.serve_options, self.connect_options = dict(serve_options), dict(connect_options)
        self.address, self.leftovers = address, leftovers

    def call(self, fn: Callable[[], Any], what: str) -> Any:
        return _call(fn, what, self.patience)

    def raises(self, kind: type[BaseException], fn: Callable[[], Any], what: str) -> BaseException:
        return _expect_raises(kind, fn, what, self.patience)

    def connect(self, address: str) -> TransportClient:
        return self.transport.connect(address, **self.connect_options)

    @contextmanager
    def own(self) -> Iterator[tuple[_Recorder, str, TransportClient]]:
        handler = _Recorder()
        address = self.address()
        server = self.transport.serve(address, handler, **self.serve_options)
        client: TransportClient | None = None
        try:
            client = self.connect(address)
            yield handler, address, client
        finally:
            handler.release()
            if client is not None:
                client.close()
            server.stop(2.0)

    @contextmanager
    def runtime(self) -> Iterator[tuple[MLRuntime, str, TransportClient]]:
        runtime = _runtime(self.hub)
        address = self.address()
        client: TransportClient | None = None
        try:
            runtime.start(transport=self.name, name=address, **self.serve_options)
            client = self.connect(address)
            yield runtime, address, client
        finally:
            if client is not None:
                client.close()
            runtime.close(drain_timeout=2.0)


def _call(fn: Callable[[], Any], what: str, wait: float) -> Any:
    """Run ``fn`` in a thread; a call still running after ``wait`` s is a failure (it hung)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:
            box.append(("err", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(wait)
    _expect(not thread.is_alive(), f"{what} had not returned after {wait:g} s")
    kind, value = box[0]
    if kind == "err":
        raise value
    return value


def _expect_raises(kind: type[BaseException], fn: Callable[[], Any], what: str, wait: float) -> BaseException:
    try:
        value = _call(fn, what, wait)
    except _Fail:
        raise
    except BaseException as exc:
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


def check_round_trip(kit: _Kit) -> None:
    """Every datatype comes back as the direct call returns it: values, shape, dtype (BF16 and
    BYTES keep their mark), with the request's id, model and version; for 0, 1 and 5 rows, and
    for inputs that are not contiguous in memory."""
    with kit.runtime() as (runtime, _, client):
        strided = {
            n: np.concatenate([a, a], axis=1)[:, ::2].view(_TYPES[n].numpy)
            for n, a in _typed_inputs(4, 4).items()
        }
        cases = [(f"{rows} row(s)", _typed_inputs(rows, rows)) for rows in (1, 5, 0)] + [
            ("strided inputs", strided)
        ]
        for rid, (what, inputs) in enumerate(cases, 1000):
            request = InferenceRequest("kit-types", inputs, id=rid)
            want = _direct(runtime, request)
            response = kit.call(
                functools.partial(client.infer, request, timeout=kit.patience), f"infer of {what}"
            )
            _same_arrays(response.outputs, want.outputs, what)
            _expect(response.id == rid, f"{what}: the response's id is {response.id}, the request's {rid}")
            _expect(
                response.model == "kit-types",
                f"{what}: the response's model is {response.model!r}, not 'kit-types'",
            )
            _expect(
                response.version == "1", f"{what}: the response's version is {response.version!r}, not '1'"
            )


def check_request_fields(kit: _Kit) -> None:
    """The handler gets the request as the client built it (model, id, version, parameters,
    outputs, inputs) with the call's deadline; the client gets the response's id, version and
    parameters as the handler answered them."""
    with kit.own() as (handler, _, client):
        x = np.arange(6, dtype=np.int64).reshape(2, 3)
        sent = InferenceRequest(
            "kit-fields",
            {"x": x},
            id=4242,
            version="7",
            parameters={"a": 1, "b": "s", "c": True, "d": 1.5},
            outputs=("y",),
        )
        before = time.monotonic_ns()
        response = kit.call(lambda: client.infer(sent, timeout=30.0), "infer")
        after = time.monotonic_ns()
        _expect(len(handler.requests) == 1, f"the handler got {len(handler.requests)} requests for one call")
        got = handler.requests[0]
        for field in ("model", "id", "version"):
            _expect(
                getattr(got, field) == getattr(sent, field),
                f"the handler got {field} {getattr(got, field)!r}, sent {getattr(sent, field)!r}",
            )
        _expect(
            dict(got.parameters) == dict(sent.parameters),
            f"the handler got parameters {dict(got.parameters)}, sent {dict(sent.parameters)}",
        )
        _expect(tuple(got.outputs) == ("y",), f"the handler got outputs {tuple(got.outputs)!r}, sent ('y',)")
        _same_arrays(got.inputs, {"x": x}, "the handler's inputs")
        window = (before + 30 * 10**9, after + 30 * 10**9)
        _expect(
            window[0] <= got.deadline_ns <= window[1],
            f"the handler got deadline_ns {got.deadline_ns}, expected the call's"
            f" (timeout=30 s: monotonic ns in {window})",
        )
        _expect(response.id == 4242, f"the response's id is {response.id}, the handler answered 4242")
        _expect(
            response.version == "1",
            f"the response's version is {response.version!r}, the handler answered '1'",
        )
        _expect(
            dict(response.parameters) == {"kit": "answer"},
            f"the response's parameters are {dict(response.parameters)}, answered {{'kit': 'answer'}}",
        )


def check_errors(kit: _Kit) -> None:
    """Each error comes back as its own class with the runtime's message, model and request id,
    and the server goes on serving."""
    with kit.runtime() as (runtime, _, client):
        cases = [
            (ModelNotFound, InferenceRequest("kit-nope", {"x": np.zeros((1, 2), np.int64)}, id=11)),
            (InvalidInput, InferenceRequest("kit-double", {"x": np.zeros((1, 3), np.int64)}, id=12)),
            (HandlerError, InferenceRequest("kit-boom", {"x": np.zeros((1, 2), np.float32)}, id=13)),
        ]
        for kind, request in cases:
            direct: list[Any] = []
            runtime(request, direct.append)  # the runtime in-process: what the client must see
            expected = direct[0]
            exc = kit.raises(
                kind,
                functools.partial(client.infer, request, timeout=kit.patience),
                f"a request for {kind.__name__}",
            )
            assert isinstance(exc, InferenceError)
            _expect(
                str(exc) == str(expected),
                f"{kind.__name__}'s message came back as {str(exc)!r}, in-process {str(expected)!r}",
            )
            _expect(
                exc.model == request.model,
                f"{kind.__name__}.model is {exc.model!r}, expected {request.model!r}",
            )
            _expect(
                exc.request_id == request.id,
                f"{kind.__name__}.request_id is {exc.request_id}, expected {request.id}",
            )
        ok = kit.call(
            lambda: client.infer(
                InferenceRequest("kit-double", {"x": np.ones((1, 2), np.int64)}), timeout=kit.patience
            ),
            "infer after the errors",
        )
        _expect(ok.outputs["y"].tolist() == [[2, 2]], "the server answered wrongly after the errors")


def check_error_codes(kit: _Kit) -> None:
    """An error of every wire code the handler answers comes back as its own class, with its
    message as the handler gave it (``str()`` equal: the model's name once, not twice)."""
    with kit.own() as (_, _, client):
        for code in ErrorCode:
            if code is ErrorCode.OK:
                continue
            kind = type(error_for_code(int(code), ""))
            model = f"kit-error-{int(code)}"
            exc = kit.raises(
                kind,
                functools.partial(
                    client.infer, InferenceRequest(model, {"x": np.ones((1, 1))}, id=5), timeout=kit.patience
                ),
                f"an answer of code {code.name}",
            )
            want = f"model {model!r}: kit: error {int(code)} on purpose"
            _expect(
                str(exc) == want, f"code {code.name}'s message came back as {str(exc)!r}, answered {want!r}"
            )


def check_concurrency(kit: _Kit) -> None:
    """Concurrent calls each get their own answer: from one client in several threads, with
    answers given out of order, and from several clients at once."""
    with kit.own() as (handler, address, client):

        def call(c: TransportClient, model: str, k: int) -> None:
            x = np.full((1, 2), k, np.int64)
            r = c.infer(InferenceRequest(model, {"x": x}, id=k), timeout=kit.patience)
            _expect(
                r.id == k and r.outputs["y"].tolist() == [[2 * k, 2 * k]],
                f"call {k} got the answer {r.outputs['y'].tolist()} (id {r.id}),"
                f" expected [[{2 * k}, {2 * k}]] (id {k})",
            )

        def run(jobs: list[Callable[[], None]]) -> None:
            errors: list[BaseException] = []

            def one(job: Callable[[], None]) -> None:
                try:
                    job()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=one, args=(j,), daemon=True) for j in jobs]
            for t in threads:
                t.start()
            for t in threads:
                t.join(kit.patience + 5)
            _expect(not any(t.is_alive() for t in threads), "a concurrent call hung")
            if errors:
                raise errors[0]

        # out of order: the second request of each pair is answered before the first
        run([functools.partial(call, client, "kit-pair", k) for k in (1, 2)])
        run([functools.partial(call, client, "kit-pair", k) for k in range(10, 18)])
        handler.delay = 0.01  # answered from another thread, in whatever order they finish
        run([functools.partial(call, client, "kit-late", k) for k in range(20, 36)])
        handler.delay = 0.0
        clients = [kit.connect(address) for _ in range(4)]
        try:
            run(
                [
                    functools.partial(call, c, "kit-x", 100 * (i + 1) + k)
                    for i, c in enumerate(clients)
                    for k in range(5)
                ]
            )
        finally:
            for c in clients:
                c.close()


def check_deadlines(kit: _Kit) -> None:
    """A call with no answer raises ``DeadlineExceeded`` at its timeout or at the request's
    deadline, whichever is sooner; a late answer is not taken for a later call's; a timeout that
    is no number of seconds in [0, 1e9] is a ``ValueError`` and nothing is sent."""
    with kit.own() as (handler, _, client):
        hang = InferenceRequest("kit-hang", {"x": np.ones((1, 1))}, id=1)
        kit.raises(
            DeadlineExceeded,
            lambda: client.infer(hang, timeout=0.2),
            "a call of timeout=0.2 s left unanswered",
        )
        own = InferenceRequest(
            "kit-hang", {"x": np.ones((1, 1))}, id=2, deadline_ns=time.monotonic_ns() + 200_000_000
        )
        kit.raises(
            DeadlineExceeded,
            lambda: client.infer(own, timeout=None),
            "a call of deadline_ns 0.2 s ahead left unanswered",
        )
        kit.raises(
            DeadlineExceeded,
            lambda: client.infer(own, timeout=30.0),
            "a call of deadline_ns in the past and timeout=30",
        )
        handler.release()  # the abandoned calls are answered now, late
        x = np.full((1, 1), 21.0)
        r = kit.call(
            lambda: client.infer(InferenceRequest("kit-x", {"x": x}, id=3), timeout=kit.patience),
            "a call after late answers",
        )
        _expect(
            r.id == 3 and r.outputs["y"].tolist() == [[42.0]],
            f"a call after late answers got {r.outputs['y'].tolist()} (id {r.id}):"
            " a late answer to an abandoned call",
        )
        sent = len(handler.requests)
        bads: tuple[Any, ...] = (math.nan, -1.0, True, "1", math.inf, 2e9)  # what a caller may pass
        for bad in bads:
            kit.raises(
                ValueError,
                functools.partial(client.infer, InferenceRequest("kit-x", {"x": x}), timeout=bad),
                f"infer(timeout={bad!r})",
            )
        _expect(
            len(handler.requests) == sent,
            f"{len(handler.requests) - sent} request(s) of a refused timeout reached the handler",
        )


def check_control(kit: _Kit) -> None:
    """``metadata`` and ``stats`` return the handler's documents as they are; an unknown model's
    metadata is ``ModelNotFound``."""
    with kit.own() as (handler, _, client):
        meta = kit.call(lambda: client.metadata("kit-meta", timeout=kit.patience), "metadata")
        _expect(meta == handler.metadata("kit-meta"), f"metadata came back as {meta!r}")
        stats = kit.call(lambda: client.stats(timeout=kit.patience), "stats")
        _expect(stats == handler.stats(), f"stats came back as {stats!r}")
        exc = kit.raises(
            ModelNotFound,
            lambda: client.metadata("kit-nope", timeout=kit.patience),
            "metadata of an unknown model",
        )
        _expect(
            str(exc) == "model 'kit-nope': kit: no such model",
            f"metadata's ModelNotFound came back as {str(exc)!r}",
        )
    with kit.runtime() as (runtime, _, client):
        _expect(
            kit.call(lambda: client.metadata("kit-double", timeout=kit.patience), "metadata")
            == runtime.metadata("kit-double"),
            "metadata differs from the runtime's",
        )


def check_async_and_client(kit: _Kit) -> None:
    """``ainfer`` and ``InferenceClient`` (infer, ainfer, metadata, stats) over the transport."""
    with kit.runtime() as (_, address, client):
        x = np.array([[3, 4]], np.int64)
        r = kit.call(
            lambda: asyncio.run(
                client.ainfer(InferenceRequest("kit-double", {"x": x}, id=9), timeout=kit.patience)
            ),
            "ainfer",
        )
        _expect(
            r.id == 9 and r.outputs["y"].tolist() == [[6, 8]],
            f"ainfer answered {r.outputs['y'].tolist()} (id {r.id})",
        )
        with InferenceClient(address, transport=kit.name, hub=kit.hub, **kit.connect_options) as ic:
            _expect(
                kit.call(lambda: ic.infer("kit-double", {"x": x}), "InferenceClient.infer")["y"].tolist()
                == [[6, 8]],
                "InferenceClient.infer answered wrongly",
            )
            got = kit.call(lambda: asyncio.run(ic.ainfer("kit-double", {"x": x})), "InferenceClient.ainfer")
            _expect(got["y"].tolist() == [[6, 8]], "InferenceClient.ainfer answered wrongly")
            _expect(
                "kit-double" in kit.call(ic.stats, "InferenceClient.stats")["models"],
                "InferenceClient.stats lacks kit-double",
            )


def check_close_and_stop(kit: _Kit) -> None:
    """After ``close()`` every call of that client fails ``ServerUnavailable`` (the server still
    serving others), and a second ``close()`` is fine; a request in flight when ``stop()`` is
    called is answered; after ``stop()`` nothing serves the address, calls fail
    ``ServerUnavailable`` (or ``ShuttingDown``), and it can be served again."""
    before = kit.leftovers() if kit.leftovers else []
    handler = _Recorder()
    address = kit.address()
    server = kit.transport.serve(address, handler, **kit.serve_options)
    client = kit.connect(address)
    x = np.ones((1, 1))
    try:
        closed = kit.connect(address)
        kit.call(closed.close, "close()")
        for call, what in (
            (
                functools.partial(closed.infer, InferenceRequest("kit-x", {"x": x}), timeout=kit.patience),
                "infer",
            ),
            (functools.partial(closed.metadata, "kit-meta", timeout=kit.patience), "metadata"),
            (functools.partial(closed.stats, timeout=kit.patience), "stats"),
        ):
            kit.raises(ServerUnavailable, call, f"{what} after close() (the server still serving)")
        kit.call(closed.close, "a second close()")
        sent = InferenceRequest("kit-x", {"x": x}, id=6)
        r = kit.call(functools.partial(client.infer, sent, timeout=kit.patience), "another client's infer")
        _expect(r.id == 6, "another client's call failed after one client closed")

        handler.delay = 0.3
        box: list[Any] = []
        request = InferenceRequest("kit-x", {"x": x}, id=8)
        t = threading.Thread(
            target=lambda: box.append(_catch(functools.partial(client.infer, request, timeout=kit.patience))),
            daemon=True,
        )
        t.start()
        deadline = time.monotonic() + kit.patience
        while len(handler.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        kit.call(lambda: server.stop(5.0), "stop(5.0) with a request in flight")
        t.join(kit.patience)
        _expect(bool(box), "the call in flight at stop() had not returned")
        _expect(
            isinstance(box[0], InferenceResponse),
            f"the call in flight at stop() got {box[0]!r} instead of its answer",
        )
        kit.raises(ServerUnavailable, lambda: kit.connect(address), "connect after stop()")
        late = _catch(
            lambda: kit.call(
                lambda: client.infer(InferenceRequest("kit-x", {"x": x}), timeout=kit.patience),
                "infer after stop()",
            )
        )
        _expect(
            type(late) in (ServerUnavailable, ShuttingDown),
            f"infer after stop() gave {late!r:.200}, expected ServerUnavailable or ShuttingDown",
        )
    except _Fail:
        server.stop(0.0)
        raise
    finally:
        client.close()
    again = kit.transport.serve(address, _Recorder(), **kit.serve_options)
    again.stop(1.0)
    after = kit.leftovers() if kit.leftovers else []
    _expect(sorted(after) == sorted(before), f"left behind after stop(): {sorted(set(after) - set(before))}")


def _catch(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as exc:
        return exc


def check_refusals(kit: _Kit) -> None:
    """``connect`` to an address nothing serves is ``ServerUnavailable``; an unknown option is a
    ``TypeError`` for ``serve`` and ``connect``, and a ``serve`` refused so leaves the address
    free; an empty address is a ``ValueError`` from ``check_address``."""
    address = kit.address()
    kit.raises(ServerUnavailable, lambda: kit.connect(address), "connect to an address nothing serves")
    kit.raises(
        TypeError,
        lambda: kit.transport.serve(address, _Recorder(), **kit.serve_options, kit_no_such_option=1),
        "serve(kit_no_such_option=1)",
    )
    server = kit.transport.serve(address, _Recorder(), **kit.serve_options)
    try:
        kit.raises(
            TypeError,
            lambda: kit.transport.connect(address, **kit.connect_options, kit_no_such_option=1),
            "connect(kit_no_such_option=1)",
        )
    finally:
        server.stop(1.0)
    kit.raises(ValueError, lambda: kit.transport.check_address(""), "check_address('')")


CHECKS: dict[str, Callable[[_Kit], None]] = {
    "round_trip": check_round_trip,
    "request_fields": check_request_fields,
    "errors": check_errors,
    "error_codes": check_error_codes,
    "concurrency": check_concurrency,
    "deadlines": check_deadlines,
    "control": check_control,
    "async_and_client": check_async_and_client,
    "close_and_stop": check_close_and_stop,
    "refusals": check_refusals,
}


def check_transport(
    name: str,
    *,
    hub: Hub | None = None,
    serve_options: Mapping[str, Any] | None = None,
    connect_options: Mapping[str, Any] | None = None,
    address: Callable[[], str] | None = None,
    leftovers: Callable[[], list[str]] | None = None,
    only: list[str] | None = None,
    patience: float = 10.0,
) -> list[str]:
    """Hold transport ``name`` to the contract; returns the names of the checks it passed, or
    raises ``TransportCheckFailed`` naming each that failed and what was wrong.

    ``hub``: where ``name`` is registered (default: a hub with every installed plugin);
    ``serve_options`` / ``connect_options``: passed to every ``serve`` / ``connect``;
    ``address()``: a fresh address the transport takes (default ``kitPIDxN``, which shm's rule
    allows); ``leftovers()``: the resources the transport holds (files, say), compared before and
    after a server's life; ``only``: the names of the checks to run (``CHECKS`` lists them);
    ``patience``: the seconds a call the kit expects to end may take before it counts as hung
    (also the timeout of the calls it expects answered)."""
    unknown = sorted(set(only or ()) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"check_transport: no check named {', '.join(unknown)} (checks: {', '.join(CHECKS)})"
        )
    hub = hub or registered_hub()
    fresh = address or (lambda: f"kit{os.getpid()}x{next(_names)}")
    kit = _Kit(name, hub, serve_options or {}, connect_options or {}, fresh, leftovers, patience)
    failures: dict[str, str] = {}
    passed: list[str] = []
    for check_name, check in CHECKS.items():
        if only is not None and check_name not in only:
            continue
        try:
            check(kit)
        except _Fail as exc:
            failures[check_name] = str(exc)
        except Exception as exc:
            failures[check_name] = f"raised {type(exc).__name__}: {exc}"
        else:
            passed.append(check_name)
    if failures:
        raise TransportCheckFailed(name, failures)
    return passed
