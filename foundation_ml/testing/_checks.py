"""The transport kit's checks, one function each, run in order by ``check_transport``
(``CHECKS``): each serves, connects, calls and compares, raising ``_Fail`` with what was wrong.
Each starts what it needs through the kit (``kit.serve``, ``kit.connect``, ``kit.thread``...),
which ends whatever a check that fails leaves running."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._client import InferenceClient
from .._transport import TransportClient
from .._types import ClientCounters, InferenceRequest
from ..errors import (
    DeadlineExceeded,
    ErrorCode,
    HandlerError,
    InferenceError,
    InvalidInput,
    ModelNotFound,
    error_for_code,
)
from ._checks_stop import check_close_and_stop, check_refusals
from ._kit import (
    _TYPES,
    _direct,
    _Kit,
    _same_arrays,
    _typed_inputs,
)
from ._owned import _expect, _Fail, _names_call, _raised

__all__ = ["CHECKS"]


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
    message as the handler gave it (``str()`` equal: the model's name once, not twice), naming
    the call's model and request id, also where the handler's error named neither."""
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
            _names_call(exc, model, 5, f"an answer of code {code.name}")
        exc = kit.raises(
            HandlerError,
            functools.partial(
                client.infer,
                InferenceRequest("kit-unnamed", {"x": np.ones((1, 1))}, id=6),
                timeout=kit.patience,
            ),
            "an error answered naming no model or request",
        )
        _names_call(exc, "kit-unnamed", 6, "an error answered naming no model or request")


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

            threads = [kit.thread(one, j) for j in jobs]
            for t in threads:
                t.join(kit.patience + 5)
            _expect(not any(t.is_alive() for t in threads), "a concurrent call hung")
            if errors:
                first = errors[0]
                raise first if isinstance(first, Exception) else _Fail(_raised("a concurrent call", first))

        # out of order: the second request of each pair is answered before the first
        run([functools.partial(call, client, "kit-pair", k) for k in (1, 2)])
        run([functools.partial(call, client, "kit-pair", k) for k in range(10, 18)])
        handler.delay = 0.01  # answered from another thread, in whatever order they finish
        run([functools.partial(call, client, "kit-late", k) for k in range(20, 36)])
        handler.delay = 0.0
        clients = [kit.connect(address) for _ in range(4)]
        run(
            [
                functools.partial(call, c, "kit-x", 100 * (i + 1) + k)
                for i, c in enumerate(clients)
                for k in range(5)
            ]
        )
        for c in clients:
            kit.close(c)


def check_deadlines(kit: _Kit) -> None:
    """A call with no answer raises ``DeadlineExceeded`` (naming its model and request id) at its
    timeout or at the request's deadline, whichever is sooner; a late answer is not taken for a
    later call's; a timeout that is no number of seconds in [0, 1e9] is a ``ValueError`` and
    nothing is sent."""
    with kit.own() as (handler, _, client):
        hang = InferenceRequest("kit-hang", {"x": np.ones((1, 1))}, id=1)
        what = "a call of timeout=0.2 s left unanswered"
        exc = kit.raises(DeadlineExceeded, lambda: client.infer(hang, timeout=0.2), what)
        _names_call(exc, "kit-hang", 1, what)
        own = InferenceRequest(
            "kit-hang", {"x": np.ones((1, 1))}, id=2, deadline_ns=time.monotonic_ns() + 200_000_000
        )
        what = "a call of deadline_ns 0.2 s ahead left unanswered"
        exc = kit.raises(DeadlineExceeded, lambda: client.infer(own, timeout=None), what)
        _names_call(exc, "kit-hang", 2, what)
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
    """``ainfer`` and ``InferenceClient`` (infer, ainfer, metadata, stats, counters) over the transport;
    a client whose server never restarted counted no reconnect and no resend."""
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
            # a server that never stopped: nothing reconnected, nothing was sent twice
            counts = kit.call(ic.counters, "InferenceClient.counters")
            _expect(
                counts == ClientCounters(),
                f"InferenceClient.counters() is {counts!r} after calls to a server that never restarted, "
                "not ClientCounters(reconnects=0, resends=0)",
            )


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
