"""The inproc transport's client, called directly: a closed client refuses calls, a bad timeout is
refused before the request reaches the handler, and a call waits no longer than the sooner of its
timeout and the request's deadline."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from foundation_ml import InferenceRequest, InferenceResponse
from foundation_ml._inproc import InprocTransport
from foundation_ml._transport import Respond, TransportClient
from foundation_ml.errors import DeadlineExceeded, InvalidInput, Overloaded, ServerUnavailable

from .conftest import unique_name

X = np.ones((1, 4), np.float32)


class Handler:
    """Answers inline (echo), or keeps each ``respond`` unanswered when ``hold`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.requests: list[InferenceRequest] = []
        self.pending: list[Respond] = []
        self.arrived = threading.Event()

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        self.requests.append(request)
        self.arrived.set()
        if self.hold:
            self.pending.append(respond)
        else:
            respond(InferenceResponse(request.id, request.model, dict(request.inputs)))

    def metadata(self, model: str) -> dict[str, Any]:
        return {"name": model}

    def stats(self) -> dict[str, Any]:
        return {}

    def answer_all(self) -> None:
        for respond in self.pending:
            respond(InferenceResponse(0, "m", {}))


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def client(handler: Handler) -> Iterator[TransportClient]:
    transport = InprocTransport()
    server = transport.serve(unique_name(), handler)
    try:
        with transport.connect(server.address) as c:
            yield c
    finally:
        handler.answer_all()
        server.stop(drain_timeout=1)


def test_a_closed_client_refuses_every_call(client: TransportClient, handler: Handler) -> None:
    """``close()`` did nothing: the client went on calling the server (shm's refuses, and so
    does ``InferenceClient.ainfer``)."""
    client.infer(InferenceRequest("m", {"x": X}))
    client.close()
    with pytest.raises(ServerUnavailable, match=r"^model 'm': the client of inproc server '.*' is closed$"):
        client.infer(InferenceRequest("m", {"x": X}))
    with pytest.raises(ServerUnavailable, match=r"^model 'm': .* is closed$"):
        client.metadata("m")
    with pytest.raises(ServerUnavailable, match="is closed"):
        client.stats()
    assert len(handler.requests) == 1


def test_the_errors_of_a_call_name_its_model_and_request_id(handler: Handler) -> None:
    """A closed client's refusal, and the refusal where nothing serves the address, named neither
    (shm's name both: the kit's close_and_stop holds every transport to it)."""
    transport = InprocTransport()
    server = transport.serve(unique_name(), handler)
    client = transport.connect(server.address)
    client.close()
    with pytest.raises(ServerUnavailable) as closed:
        client.infer(InferenceRequest("m", {"x": X}, id=21))
    assert (closed.value.model, closed.value.request_id) == ("m", 21)
    with pytest.raises(ServerUnavailable) as meta:
        client.metadata("m")
    assert meta.value.model == "m"
    other = transport.connect(server.address)
    server.stop()
    with pytest.raises(ServerUnavailable, match="no inproc server") as gone:
        other.infer(InferenceRequest("m", {"x": X}, id=22))
    assert (gone.value.model, gone.value.request_id, str(gone.value)) == (
        "m",
        22,
        f"model 'm': no inproc server under {server.address!r}",
    )


class _Refuses:
    """Answers every request with one and the same error, naming no model or request."""

    def __init__(self) -> None:
        self.error = Overloaded("too busy")

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        respond(self.error)

    def metadata(self, model: str) -> dict[str, Any]:
        return {}

    def stats(self) -> dict[str, Any]:
        return {}


def test_an_error_the_handler_answers_naming_no_call_is_raised_naming_it() -> None:
    """Over shm the client names the call on every error answered; inproc raised the handler's
    own error as it was (model '' and request id 0). It names the call now on a copy, so a
    handler answering many calls with one error object sees none of them named on it."""
    refuses = _Refuses()
    transport = InprocTransport()
    server = transport.serve(unique_name(), refuses)
    try:
        with transport.connect(server.address) as client:
            for model, rid in (("a", 5), ("b", 6)):
                with pytest.raises(Overloaded) as info:
                    client.infer(InferenceRequest(model, {"x": X}, id=rid))
                assert (info.value.model, info.value.request_id) == (model, rid)
                assert str(info.value) == f"model {model!r}: too busy"
    finally:
        server.stop()
    assert (refuses.error.model, refuses.error.request_id, str(refuses.error)) == ("", 0, "too busy")


class _RaisesFrom(_Refuses):
    """Raises an error naming no call, ``from`` the exception that caused it."""

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        try:
            int("not a number")
        except ValueError as exc:
            raise InvalidInput("x is not a number") from exc


def test_an_error_named_on_a_copy_keeps_what_caused_it() -> None:
    """The copy that names the call dropped ``__cause__``: the traceback no longer showed the
    handler's own error ("The above exception was the direct cause..."), as it did before."""
    transport = InprocTransport()
    server = transport.serve(unique_name(), _RaisesFrom())
    try:
        with transport.connect(server.address) as client:
            with pytest.raises(InvalidInput) as info:
                client.infer(InferenceRequest("m", {"x": X}, id=7))
    finally:
        server.stop()
    assert (info.value.model, info.value.request_id) == ("m", 7)
    assert isinstance(info.value.__cause__, ValueError) and info.value.__suppress_context__


class _WarmingUp(Overloaded):
    """A handler's own error class, made from a model name (it names the model, not the id)."""

    def __init__(self, model: str) -> None:
        super().__init__("still warming up", model=model)


class _Busy(Overloaded):
    """A handler's own error class, made from a keyword alone."""

    def __init__(self, *, why: str) -> None:
        super().__init__(why)


@pytest.mark.parametrize(
    ("error", "said"), [(_WarmingUp("a"), "still warming up"), (_Busy(why="too busy"), "too busy")]
)
def test_a_handlers_own_error_class_is_named_on_a_faithful_copy(error: Overloaded, said: str) -> None:
    """The copy was made by calling the class with ``args``: one made from a model name came
    back as ``model "model 'a': still warming up": still warming up``, and one that cannot be
    made from its message was named in place, on the object the handler answers every call
    with (the next call raised it naming the previous call's request)."""
    refuses = _Refuses()
    refuses.error = error
    transport = InprocTransport()
    server = transport.serve(unique_name(), refuses)
    try:
        with transport.connect(server.address) as client:
            for rid in (5, 6):
                with pytest.raises(type(error)) as info:
                    client.infer(InferenceRequest("a", {"x": X}, id=rid))
                assert (info.value.model, info.value.request_id) == ("a", rid)
                assert str(info.value) == f"model 'a': {said}"
    finally:
        server.stop()
    assert error.request_id == 0 and error.message == said


def test_a_note_added_to_one_calls_error_is_not_on_the_next_calls() -> None:
    """The copy shared the handler's error's ``__notes__`` list: a note the caller added to one
    call's error (``add_note``) was on the error of every later call, and on the handler's."""
    refuses = _Refuses()
    refuses.error.add_note("from the handler")
    transport = InprocTransport()
    server = transport.serve(unique_name(), refuses)
    try:
        with transport.connect(server.address) as client:
            for rid in (1, 2):
                with pytest.raises(Overloaded) as info:
                    client.infer(InferenceRequest("m", {"x": X}, id=rid))
                assert info.value.__notes__ == ["from the handler"]
                info.value.add_note(f"seen by the caller of request {rid}")
    finally:
        server.stop()
    assert refuses.error.__notes__ == ["from the handler"]


@pytest.mark.parametrize(
    "timeout", [-1, -1e-9, math.nan, math.inf, 1e12, True, np.bool_(True), "1", np.float32(-1)]
)
def test_a_bad_timeout_is_refused_by_name_before_the_request_is_sent(
    client: TransportClient, handler: Handler, timeout: Any
) -> None:
    """-1 waited with no bound, NaN and 1e12 raised ValueError/OverflowError from the lock wait
    after the request had reached the handler, True and "1" were taken as 1 s / a TypeError."""
    message = rf"^timeout must be a number of seconds in \[0, 1e9\] or None, not {re.escape(repr(timeout))}$"
    with pytest.raises(ValueError, match=message):
        client.infer(InferenceRequest("m", {"x": X}), timeout=timeout)
    assert handler.requests == []


@pytest.mark.parametrize("timeout", [np.float32(5), np.float64(5), np.int64(5), np.uint8(5)])
def test_a_timeout_of_numpy_s_numbers_is_seconds(
    client: TransportClient, handler: Handler, timeout: Any
) -> None:
    """(numpy's numbers were refused as 'no number of seconds': np.float64(5), a float, among
    them; a timeout computed with numpy, a percentile times three, say, failed every call.)"""
    before = time.monotonic_ns()
    client.infer(InferenceRequest("m", {"x": X}), timeout=timeout)
    assert before + 5 * 10**9 <= handler.requests[0].deadline_ns <= time.monotonic_ns() + 5 * 10**9


def test_a_call_waits_no_longer_than_the_requests_deadline() -> None:
    """With no timeout, a call waited for an answer with no bound although its request had a
    deadline (the contract: a client never waits past the request's deadline)."""
    held = Handler(hold=True)
    transport = InprocTransport()
    server = transport.serve(unique_name(), held)
    outcome: list[BaseException | InferenceResponse] = []

    def call() -> None:
        request = InferenceRequest("m", {"x": X}, deadline_ns=time.monotonic_ns() + 50_000_000)
        try:
            outcome.append(transport.connect(server.address).infer(request))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert held.arrived.wait(10)
        thread.join(10)  # a guard only: the old code waited until the answer below
    finally:
        held.answer_all()
        thread.join()
        server.stop(drain_timeout=1)
    assert len(outcome) == 1 and isinstance(outcome[0], DeadlineExceeded), outcome
    assert "no response before the request's deadline" in str(outcome[0])


def test_the_request_carries_the_calls_deadline(client: TransportClient, handler: Handler) -> None:
    """The handler saw no deadline for a call given only a timeout: a batched model ran a request
    its caller had given up on (shm writes the call's deadline into the request)."""
    before = time.monotonic_ns()
    client.infer(InferenceRequest("m", {"x": X}), timeout=100)
    assert before + 100 * 10**9 <= handler.requests[0].deadline_ns <= time.monotonic_ns() + 100 * 10**9
    sooner = time.monotonic_ns() + 10**9
    client.infer(InferenceRequest("m", {"x": X}, deadline_ns=sooner), timeout=100)
    assert handler.requests[1].deadline_ns == sooner
    client.infer(InferenceRequest("m", {"x": X}))
    assert handler.requests[2].deadline_ns == 0


def test_a_request_sent_again_is_not_held_to_the_previous_calls_timeout(
    client: TransportClient, handler: Handler
) -> None:
    """The client wrote the call's deadline into the caller's request, so the same request sent
    again (a retry of one that timed out) carried the first call's deadline, long past: the
    second call, with a timeout of 5 s, failed at once 'no response within 5s'."""
    request = InferenceRequest("m", {"x": X})
    with pytest.raises(DeadlineExceeded):
        client.infer(request, timeout=0)  # answered inline, but after its deadline (now)
    assert request.deadline_ns == 0
    np.testing.assert_array_equal(client.infer(request, timeout=5).outputs["x"], X)
    assert handler.requests[1].deadline_ns > 0  # the handler still sees the call's deadline


def test_a_call_past_the_requests_own_deadline_says_so_not_the_timeout(client: TransportClient) -> None:
    """A request whose own deadline was the sooner was told 'no response within 100s'."""
    request = InferenceRequest("m", {"x": X}, deadline_ns=time.monotonic_ns())
    with pytest.raises(DeadlineExceeded, match=r"no response before the request's deadline$"):
        client.infer(request, timeout=100)


def test_an_option_is_refused_naming_it() -> None:
    """inproc took any options and ignored them (``serve(addr, h, mode=0o600)``, a misspelt
    ``timout=``); the contract has an unknown option a ``TypeError``, before anything is made."""
    transport = InprocTransport()
    address = unique_name()
    with pytest.raises(TypeError, match=r"inproc serve\(\) takes no options, got mode"):
        transport.serve(address, Handler(), mode=0o600)
    server = transport.serve(address, Handler())  # the refused serve took nothing
    try:
        with pytest.raises(TypeError, match=r"inproc connect\(\) takes no options, got spin_us, timout"):
            transport.connect(address, timout=1, spin_us=0)
    finally:
        server.stop()


@pytest.mark.parametrize("address", [5, None, ("a",)])
def test_an_address_that_is_no_str_is_refused_by_serve_and_connect(address: Any) -> None:
    """``runtime.start("inproc", 5)`` served under the int 5, which ``InferenceClient(5,
    transport="inproc")`` then reached; shm refuses both with a ``TypeError``, as inproc does now."""
    transport = InprocTransport()
    told = rf"the inproc address is a str, not {type(address).__name__} {re.escape(repr(address))}$"
    with pytest.raises(TypeError, match=told):
        transport.serve(address, Handler())
    with pytest.raises(TypeError, match=told):
        transport.connect(address)


def test_connect_applies_the_address_rule_serve_does() -> None:
    """The contract: ``serve`` and ``connect`` refuse the same addresses. ``connect("")`` was
    'no inproc server under ''' (``ServerUnavailable``), where ``serve("")`` names the rule."""
    with pytest.raises(ValueError, match=r"^the inproc address must not be empty$"):
        InprocTransport().connect("")
