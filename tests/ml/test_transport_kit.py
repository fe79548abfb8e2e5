"""The transport test kit (``foundation_ml.testing.check_transport``): inproc passes it, and each
mistake a transport author makes (built here as a transport wrapping inproc) fails the check
that names it."""

from __future__ import annotations

import concurrent.futures
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest

import foundation_core
from foundation_core import Hub, hookimpl
from foundation_ml import ClientCounters, DataType, InferenceRequest, InferenceResponse, Transport
from foundation_ml import _plugin as ml_plugin
from foundation_ml._inproc import InprocTransport, _InprocClient, _servers
from foundation_ml._transport import RequestHandler, TransportClient, TransportServer
from foundation_ml.errors import InferenceError, InternalError, ServerUnavailable, error_for_code
from foundation_ml.testing import CHECKS, TransportCheckFailed, check_transport


class Wrapped(TransportClient):
    """inproc's client, as it is; each broken client below changes one thing."""

    def __init__(self, inner: TransportClient) -> None:
        self.inner = inner

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        return self.inner.infer(request, timeout=timeout)

    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self.inner.metadata(model, timeout=timeout)

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self.inner.stats(timeout=timeout)

    def close(self) -> None:
        self.inner.close()


class WrappedTransport(Transport):
    client: ClassVar[type[Wrapped]] = Wrapped

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return InprocTransport().serve(address, handler, **options)

    def connect(self, address: str, **options: Any) -> TransportClient:
        return self.client(InprocTransport().connect(address, **options))


class MatchesInOrder(Wrapped):
    """Hands each answer to the oldest waiting call, as a client matching answers to requests by
    their order on the wire (not by their id) does."""

    def __init__(self, inner: TransportClient) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.waiting: list[tuple[threading.Event, list[Any]]] = []

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        mine: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self.lock:
            self.waiting.append(mine)
        try:
            value: Any = self.inner.infer(request, timeout=timeout)
        except InferenceError as exc:
            value = exc
        with self.lock:
            oldest = self.waiting.pop(0)
        oldest[1].append(value)
        oldest[0].set()
        mine[0].wait()
        if isinstance(mine[1][0], InferenceError):
            raise mine[1][0]
        return mine[1][0]  # type: ignore[no-any-return]


class WrongResponseId(Wrapped):
    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        return attrs.evolve(self.inner.infer(request, timeout=timeout), id=request.id + 1)


class IgnoresDeadlines(Wrapped):
    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        return self.inner.infer(attrs.evolve(request, deadline_ns=0), timeout=None)


class OneErrorType(Wrapped):
    """Sends every error as INTERNAL (a transport that drops the code)."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        try:
            return self.inner.infer(request, timeout=timeout)
        except InferenceError as exc:
            raise InternalError(exc.message, model=exc.model, request_id=exc.request_id) from None


class SendsStrOfError(Wrapped):
    """Carries ``str(exc)`` (which names the model already) instead of ``exc.message``."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        try:
            return self.inner.infer(request, timeout=timeout)
        except InferenceError as exc:
            raise error_for_code(exc.code, str(exc), model=exc.model, request_id=exc.request_id) from None


class WidensFloats(Wrapped):
    """Answers FP32 outputs as FP64."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        response = self.inner.infer(request, timeout=timeout)
        outputs = {
            k: a.astype(np.float64) if a.dtype == np.float32 else a for k, a in response.outputs.items()
        }
        return attrs.evolve(response, outputs=outputs)


class RebuildsFromDtypeStr(Wrapped):
    """Writes bytes and rebuilds each output with ``a.dtype.str``: BF16 comes back UINT16."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        response = self.inner.infer(request, timeout=timeout)
        outputs = {
            k: np.frombuffer(a.tobytes(), a.dtype.str).reshape(a.shape) for k, a in response.outputs.items()
        }
        return attrs.evolve(response, outputs=outputs)


class DropsParameters(Wrapped):
    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        return self.inner.infer(attrs.evolve(request, parameters={}), timeout=timeout)


class CloseDoesNothing(Wrapped):
    def close(self) -> None:
        pass


class ClosedNamesNoCall(Wrapped):
    """Refuses calls itself once closed, with an error naming no model or request."""

    closed = False

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        if self.closed:
            raise ServerUnavailable("toy: this client is closed")
        return super().infer(request, timeout=timeout)

    def close(self) -> None:
        self.closed = True
        super().close()


class CountsEveryCall(Wrapped):
    """Counts each call a resend (a reconnect and a resend counted where a call merely succeeded)."""

    calls = 0

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        self.calls += 1
        return super().infer(request, timeout=timeout)

    def counters(self) -> ClientCounters:
        return ClientCounters(reconnects=0, resends=self.calls)


class IgnoresOptions(WrappedTransport):
    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return InprocTransport().serve(address, handler)

    def connect(self, address: str, **options: Any) -> TransportClient:
        return Wrapped(InprocTransport().connect(address))


def _transport(client: type[Wrapped]) -> type[WrappedTransport]:
    return type(f"{client.__name__}Transport", (WrappedTransport,), {"client": client})


BROKEN: dict[str, tuple[type[WrappedTransport], str, str]] = {
    # name: (transport, the check that must fail, what its message says)
    "in-order": (_transport(MatchesInOrder), "concurrency", "got the answer"),
    "wrong-id": (_transport(WrongResponseId), "round_trip", "the response's id is 1001, the request's 1000"),
    "no-deadline": (_transport(IgnoresDeadlines), "deadlines", "had not returned after 1 s"),
    "one-error": (_transport(OneErrorType), "errors", "raised InternalError"),
    "one-error-codes": (_transport(OneErrorType), "error_codes", "expected BadMagic"),
    "str-error": (_transport(SendsStrOfError), "error_codes", "model 'kit-error-1': model 'kit-error-1'"),
    "widens": (_transport(WidensFloats), "round_trip", "came back FP64 (float64), sent as FP32"),
    "dtype-str": (_transport(RebuildsFromDtypeStr), "round_trip", "came back UINT16 (uint16), sent as BF16"),
    "no-params": (_transport(DropsParameters), "request_fields", "the handler got parameters {}"),
    "no-close": (
        _transport(CloseDoesNothing),
        "close_and_stop",
        "infer after close() (the server still serving) returned",
    ),
    "closed-names-no-call": (
        _transport(ClosedNamesNoCall),
        "close_and_stop",
        "infer after close() (the server still serving): ServerUnavailable('toy: this client is closed')"
        " names model '' and request id 0, not the call's ('kit-x', 31)",
    ),
    "options": (IgnoresOptions, "refusals", "serve(kit_no_such_option=1) returned"),
    "counts-calls": (
        _transport(CountsEveryCall),
        "async_and_client",
        "InferenceClient.counters() is ClientCounters(reconnects=0, resends=2) after calls to a server that "
        "never restarted",
    ),
}


RUNNING: set[object] = set()  # the servers and clients of the transports below not yet ended


class CountedServer(TransportServer):
    def __init__(self, inner: TransportServer) -> None:
        self.inner = inner
        RUNNING.add(self)

    def stop(self, drain_timeout: float = 5.0) -> None:
        self.inner.stop(drain_timeout)
        RUNNING.discard(self)


class CountedClient(Wrapped):
    """Runs a thread until it is closed, as a client with a reader thread does."""

    def __init__(self, inner: TransportClient) -> None:
        super().__init__(inner)
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self.closed.wait, daemon=True)
        self.reader.start()
        RUNNING.add(self)

    def close(self) -> None:
        self.inner.close()
        self.closed.set()
        self.reader.join()
        RUNNING.discard(self)


class Counted(WrappedTransport):
    """inproc, counting the servers and clients it has running (``RUNNING``)."""

    client: ClassVar[type[Wrapped]] = CountedClient

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return CountedServer(super().serve(address, handler, **options))


class ConnectsToAnything(Counted):
    """Connects lazily: ``connect`` succeeds whatever serves the address (after ``stop()`` too);
    the calls fail ``ServerUnavailable``."""

    def connect(self, address: str, **options: Any) -> TransportClient:
        return self.client(_InprocClient(address))


class RaisesOnOneElement(CountedClient):
    """An open client's ``infer`` of a one-element tensor raises ``RuntimeError`` (a codec bug:
    an exception no check expects)."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        if not self.closed.is_set() and any(np.size(a) == 1 for a in request.inputs.values()):
            raise RuntimeError("toy codec: cannot pack a one-element tensor")
        return super().infer(request, timeout=timeout)


class StopRaises(CountedServer):
    def stop(self, drain_timeout: float = 5.0) -> None:
        super().stop(drain_timeout)
        raise RuntimeError("toy: stop failed after stopping")


STOP_UNSTUCK = threading.Event()


class StopHangs(CountedServer):
    """``stop`` waits for ``STOP_UNSTUCK`` (10 s at most), counting its calls."""

    calls: ClassVar[list[float]] = []

    def stop(self, drain_timeout: float = 5.0) -> None:
        StopHangs.calls.append(drain_timeout)
        STOP_UNSTUCK.wait(10.0)
        super().stop(drain_timeout)


class StopHangsTransport(Counted):
    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return StopHangs(InprocTransport().serve(address, handler, **options))


class StopAgainUnserves(CountedServer):
    """A second ``stop()`` forgets the address whoever serves it now: a ``close()`` interrupted by
    a Ctrl-C runs ``stop()`` again, and took a new server of the address down with it."""

    def __init__(self, inner: TransportServer) -> None:
        super().__init__(inner)
        self.stopped = False

    def stop(self, drain_timeout: float = 5.0) -> None:
        if self.stopped:
            _servers.pop(self.inner.address, None)
        self.stopped = True
        super().stop(drain_timeout)


class StopAgainUnservesTransport(Counted):
    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return StopAgainUnserves(InprocTransport().serve(address, handler, **options))


BROKEN["stop-again-unserves"] = (
    StopAgainUnservesTransport,
    "close_and_stop",
    "connect to the new server of the address, once the old one's stop() ran again raised "
    "ServerUnavailable(\"no inproc server under 'kit",
)


class DropsParametersStopRaises(Counted):
    client: ClassVar[type[Wrapped]] = type("DropsParametersCounted", (CountedClient, DropsParameters), {})

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return StopRaises(InprocTransport().serve(address, handler, **options))


UNSTUCK = threading.Event()


class MetadataNeverReturns(CountedClient):
    """``metadata`` waits for ``UNSTUCK``, whatever is closed or stopped."""

    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        UNSTUCK.wait()
        return super().metadata(model, timeout=timeout)


class CtrlCInMetadata(CountedClient):
    """``metadata`` of an unknown model is where the user presses Ctrl-C (SIGINT to the main
    thread, which waits for the call)."""

    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        if model == "kit-nope":
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            time.sleep(0.1)
        return super().metadata(model, timeout=timeout)


class StatsExits(CountedClient):
    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        raise SystemExit("toy: stats exited")


LEFT = threading.Event()  # what the threads below wait for: set once a test is done with them


class CloseLeavesAThread(CountedClient):
    """Starts a thread of its own (a heartbeat, say) that ``close()`` never ends."""

    def __init__(self, inner: TransportClient) -> None:
        super().__init__(inner)
        threading.Thread(target=LEFT.wait, name="toy-heartbeat", daemon=True).start()


class StopLeavesAThread(CountedServer):
    """Starts a thread of its own (an acceptor, say) that ``stop()`` never ends."""

    def __init__(self, inner: TransportServer) -> None:
        super().__init__(inner)
        threading.Thread(target=LEFT.wait, name="toy-acceptor", daemon=True).start()


class StopLeavesAThreadTransport(Counted):
    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return StopLeavesAThread(InprocTransport().serve(address, handler, **options))


LEAVES_RUNNING: dict[str, type[WrappedTransport]] = {
    "stats-exits": type("StatsExitsTransport", (Counted,), {"client": StatsExits}),
    "ctrl-c": type("CtrlC", (Counted,), {"client": CtrlCInMetadata}),
    "metadata-hangs": type("MetadataHangs", (Counted,), {"client": MetadataNeverReturns}),
    "connects-to-anything": ConnectsToAnything,
    "raises-mid-check": type("RaisesMidCheck", (Counted,), {"client": RaisesOnOneElement}),
    "stop-raises": DropsParametersStopRaises,
    "stop-hangs": StopHangsTransport,
    "close-leaves-a-thread": type("CloseLeavesAThreadTransport", (Counted,), {"client": CloseLeavesAThread}),
    "stop-leaves-a-thread": StopLeavesAThreadTransport,
}


_POOL: concurrent.futures.ThreadPoolExecutor | None = None


class UsesAProcessPool(Wrapped):
    """Runs each call in a thread pool kept for the process, made at the first call and growing
    as calls come (as the timeout pattern's is): its idle workers outlive every client, on purpose."""

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        global _POOL
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="toy-process-pool")
        return _POOL.submit(self.inner.infer, request, timeout=timeout).result()


class ServesOnly:
    """No ``Transport``: a ``serve`` and nothing else."""

    name = "serves-only"

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return InprocTransport().serve(address, handler, **options)


class NeedsASetting(WrappedTransport):
    def __init__(self, setting: str) -> None:
        self.setting = setting


class ExitsWhenMade(WrappedTransport):
    def __init__(self) -> None:
        raise SystemExit("toy: no transport here")


class Broken:
    @hookimpl
    def foundation_register_transports(self, register: Any) -> None:
        for name, (transport, _, _) in BROKEN.items():
            register(name, type(transport.__name__, (transport,), {"name": name}))
        for name, transport in LEAVES_RUNNING.items():
            register(name, type(transport.__name__, (transport,), {"name": name}))
        register("serves-only", ServesOnly)
        register(
            "uses-a-process-pool",
            type(
                "UsesAProcessPoolTransport",
                (WrappedTransport,),
                {"name": "uses-a-process-pool", "client": UsesAProcessPool},
            ),
        )
        register("needs-a-setting", NeedsASetting)
        register("exits-when-made", ExitsWhenMade)


@pytest.fixture(scope="module")
def kit_hub() -> Iterator[Hub]:
    with foundation_core.start(plugins=[ml_plugin, Broken()], entry_points=False) as h:
        yield h


def test_inproc_passes_every_check(kit_hub: Hub) -> None:
    before = set(threading.enumerate())
    assert check_transport("inproc", hub=kit_hub) == list(CHECKS)
    assert set(threading.enumerate()) <= before  # every thread of the kit's joined
    assert not [a for a in _servers if a.startswith("kit")]


def _fails_and_leaves_nothing_running(kit_hub: Hub, name: str) -> dict[str, str]:
    assert not RUNNING
    before = set(threading.enumerate())
    with pytest.raises(TransportCheckFailed) as info:
        check_transport(name, hub=kit_hub, patience=1.0)
    try:
        assert not RUNNING, RUNNING
        assert set(threading.enumerate()) <= before
    finally:
        for thing in list(RUNNING):  # (for the tests after this one)
            thing.stop(0.0) if isinstance(thing, TransportServer) else thing.close()  # type: ignore[attr-defined]
    return info.value.failures


def test_a_connect_that_should_have_failed_leaves_no_client_open(kit_hub: Hub) -> None:
    """The client a wrongly successful ``connect`` returned (after ``stop()``, to an address
    nothing serves) was never closed."""
    failures = _fails_and_leaves_nothing_running(kit_hub, "connects-to-anything")
    assert sorted(failures) == ["close_and_stop", "refusals"]
    assert "connect after stop() returned" in failures["close_and_stop"]
    assert "connect to an address nothing serves returned" in failures["refusals"]


def test_an_unexpected_exception_mid_check_leaves_no_server_running(kit_hub: Hub) -> None:
    """close_and_stop stopped its server only on a failed expectation: a ``RuntimeError`` from
    the transport left it serving."""
    failures = _fails_and_leaves_nothing_running(kit_hub, "raises-mid-check")
    assert failures["close_and_stop"] == ("raised RuntimeError: toy codec: cannot pack a one-element tensor")
    assert "deadlines" in failures and "error_codes" in failures


def test_a_failure_is_reported_as_itself_and_a_cleanup_error_after_it(kit_hub: Hub) -> None:
    """A server whose ``stop()`` raised replaced the check's own failure with its error."""
    failures = _fails_and_leaves_nothing_running(kit_hub, "stop-raises")
    assert re.fullmatch(
        r"the handler got parameters \{\}, sent \{.*\} \(and cleaning up after it: stop\(0\.0\) of the"
        r" server at 'kit\d+x\d+' raised RuntimeError: toy: stop failed after stopping\)",
        failures["request_fields"],
    ), failures["request_fields"]


def test_a_call_still_running_after_clean_up_is_named(kit_hub: Hub) -> None:
    assert not RUNNING
    try:
        with pytest.raises(TransportCheckFailed) as info:
            check_transport("metadata-hangs", hub=kit_hub, only=["control"], patience=0.5)
        assert not RUNNING
    finally:
        UNSTUCK.set()
    assert info.value.failures["control"] == (
        "metadata had not returned after 0.5 s (and cleaning up after it: 1 thread(s) of the kit's"
        " calls still running after clean-up)"
    )


@pytest.mark.parametrize("check", ["round_trip", "close_and_stop"])
def test_a_stop_that_hangs_fails_its_check_and_is_not_called_again(kit_hub: Hub, check: str) -> None:
    """A server's ``stop`` that did not return hung the kit in the checks that stop in the
    kit's own thread; where the kit waited for it (``close_and_stop``), clean-up called
    ``stop(0.0)`` again while the first still ran."""
    assert not RUNNING
    StopHangs.calls.clear()
    STOP_UNSTUCK.clear()
    try:
        with pytest.raises(TransportCheckFailed) as info:
            check_transport("stop-hangs", hub=kit_hub, only=[check], patience=1.0)
        calls = list(StopHangs.calls)  # (before the first stop, let go, returns)
    finally:
        STOP_UNSTUCK.set()
        deadline = time.monotonic() + 10.0
        while RUNNING and time.monotonic() < deadline:  # the hung stop, let go, ends
            time.sleep(0.01)
        for thing in list(RUNNING):
            thing.stop(0.0) if isinstance(thing, TransportServer) else thing.close()  # type: ignore[attr-defined]
    said = info.value.failures[check]
    hung = r"(stop\((2|5)(\.0)?\)[^\n]*|closing the runtime) had not returned after (3|6) s"
    assert re.match(hung, said), said
    assert len(calls) == 1, calls


@pytest.mark.parametrize(
    ("name", "thread"), [("close-leaves-a-thread", "toy-heartbeat"), ("stop-leaves-a-thread", "toy-acceptor")]
)
def test_a_thread_left_running_by_close_or_stop_is_named(kit_hub: Hub, name: str, thread: str) -> None:
    """A client whose ``close()`` (or a server whose ``stop()``) left a thread of its own running
    passed every check: the kit joined only the threads it started itself."""
    assert not RUNNING
    LEFT.clear()
    try:
        with pytest.raises(TransportCheckFailed) as info:
            check_transport(name, hub=kit_hub, only=["request_fields", "refusals"], patience=0.5)
        assert not RUNNING
    finally:
        LEFT.set()
    assert info.value.failures == {  # refusals' connect to an address nothing serves makes no client
        check: "cleaning up after it: 1 thread(s) started during the check still running after its clients"
        f" were closed and its servers stopped (waited 0.5 s): {thread!r}; close() and stop() must end the"
        " threads they started"
        for check in (
            ["request_fields"] if name == "close-leaves-a-thread" else ["request_fields", "refusals"]
        )
    }


def test_the_idle_workers_of_a_pool_kept_for_the_process_are_not_taken_for_a_leak(kit_hub: Hub) -> None:
    """A client running its calls in a process-wide thread pool (the timeout pattern's) failed
    round_trip and concurrency: the pool's workers, started as the calls came and kept idle,
    were named as threads left running by close() (15 'foundation-timeout_*')."""
    global _POOL
    try:
        check_transport("uses-a-process-pool", hub=kit_hub, only=["round_trip", "concurrency"], patience=0.5)
        workers = [t for t in threading.enumerate() if t.name.startswith("toy-process-pool")]
        assert workers  # started during the checks, alive after them: the case under test
    finally:
        if _POOL is not None:
            _POOL.shutdown()
            _POOL = None


def test_ctrl_c_while_the_kit_waits_ends_check_transport(kit_hub: Hub) -> None:
    """A ``KeyboardInterrupt`` while the kit waited for a call it expected to raise was taken
    for that call's exception: the check failed and the kit went on with the next ones."""
    assert not RUNNING
    with pytest.raises(KeyboardInterrupt):
        check_transport("ctrl-c", hub=kit_hub, only=["control", "refusals"], patience=1.0)
    assert not RUNNING  # what the interrupted check started is ended all the same


def test_a_transport_raising_what_is_no_exception_fails_its_check(kit_hub: Hub) -> None:
    """Its ``SystemExit``, raised in the kit's thread, ended check_transport."""
    failures = _fails_and_leaves_nothing_running(kit_hub, "stats-exits")
    assert failures["control"] == "stats raised SystemExit: toy: stats exited"


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_kit_catches_a_broken_transport(kit_hub: Hub, name: str) -> None:
    _, check, says = BROKEN[name]
    with pytest.raises(TransportCheckFailed) as info:
        check_transport(name, hub=kit_hub, only=[check], patience=1.0)
    assert not [a for a in _servers if a.startswith("kit")]  # ("options": the one it served wrongly)
    assert list(info.value.failures) == [check]
    assert says in info.value.failures[check]
    assert f"transport {name!r} failed 1 check(s):\n- {check}: " in str(info.value)


def test_a_check_that_does_not_exist_is_named() -> None:
    with pytest.raises(ValueError, match="no check named nope"):
        check_transport("inproc", only=["nope"])


@pytest.mark.parametrize(
    ("arguments", "error", "says"),
    [
        (
            {"only": "round_trip"},
            TypeError,
            "only must be a list of check names, not str 'round_trip' (only=['round_trip'] for one)",
        ),
        ({"only": iter(["round_trip"])}, TypeError, "only must be a list of check names, not list_iterator"),
        ({"only": ["round_trip", 1]}, TypeError, "only lists check names (str), not 1"),
        ({"only": []}, ValueError, "only names no check: nothing would be checked (None runs them all)"),
        ({"hub": "hub"}, TypeError, "hub must be a foundation_core.Hub, not str 'hub'"),
        (
            {"serve_options": [("mode", 1)]},
            TypeError,
            "serve_options must be a mapping of option names to values, not list [('mode', 1)]",
        ),
        (
            {"connect_options": "timeout=1"},
            TypeError,
            "connect_options must be a mapping of option names to values, not str 'timeout=1'",
        ),
        ({"address": "kit1"}, TypeError, "address must be a function taking no argument, not str 'kit1'"),
        ({"leftovers": []}, TypeError, "leftovers must be a function taking no argument, not list []"),
    ],
)
def test_an_argument_of_the_wrong_kind_is_named_before_anything_runs(
    kit_hub: Hub, arguments: dict[str, Any], error: type[Exception], says: str
) -> None:
    """only='round_trip' was 'no check named _, d, i, n, ...', an iterator or [] ran nothing and
    passed, only=[1] and serve_options=[...] were bare TypeErrors from inside, hub='hub' an
    AttributeError, address='kit1' failed every check ('str' object is not callable) and
    leftovers=[] was never looked at."""
    served = set(_servers)
    with pytest.raises(error) as info:
        check_transport("inproc", **{"hub": kit_hub, **arguments})
    assert str(info.value).startswith(f"check_transport: {says}"), str(info.value)
    assert set(_servers) == served


@pytest.mark.parametrize("returned", [None, "kit-file", [1]])
def test_a_leftovers_function_returning_no_list_of_names_is_named_as_the_callers(
    kit_hub: Hub, returned: object
) -> None:
    """None was "close_and_stop: raised TypeError: 'NoneType' object is not iterable", read as the
    transport's fault, and a str was compared letter by letter."""
    with pytest.raises(TransportCheckFailed) as info:
        check_transport("inproc", hub=kit_hub, only=["close_and_stop"], leftovers=lambda: returned)
    assert info.value.failures["close_and_stop"].startswith(
        f"raised TypeError: check_transport's leftovers() returned {type(returned).__name__} "
    ), info.value.failures
    assert "not a list of str: the names of what the transport holds" in info.value.failures["close_and_stop"]


def test_a_transport_missing_a_method_of_the_contract_is_named(kit_hub: Hub) -> None:
    """Each check failed with AttributeError 'no attribute connect', after the runtime served on it."""
    served = set(_servers)
    with pytest.raises(TypeError) as info:
        check_transport("serves-only", hub=kit_hub)
    assert str(info.value) == (
        "check_transport: transport 'serves-only' made a ServesOnly, which has no connect, check_address,"
        " check_serve: a transport subclasses foundation_ml.Transport (docs/transports.md)"
    )
    assert set(_servers) == served


def test_a_transport_that_cannot_be_made_is_named(kit_hub: Hub) -> None:
    """The factory's bare TypeError ended the kit, naming neither the transport nor the kit (and
    one calling sys.exit() ended it with that)."""
    with pytest.raises(TypeError) as info:
        check_transport("needs-a-setting", hub=kit_hub)
    assert str(info.value) == (
        "check_transport: transport 'needs-a-setting' cannot be made: NeedsASetting() raised TypeError:"
        " NeedsASetting.__init__() missing 1 required positional argument: 'setting'"
    )
    with pytest.raises(TypeError) as info:
        check_transport("exits-when-made", hub=kit_hub)
    assert str(info.value).startswith(
        "check_transport: transport 'exits-when-made' cannot be made: ExitsWhenMade() raised SystemExit:"
        " toy: no transport here"
    ), str(info.value)


@pytest.mark.parametrize("patience", [0, -1.0, float("nan"), float("inf"), 1e9, "10", None, True])
def test_a_patience_that_is_no_span_of_seconds_is_named(patience: object) -> None:
    """(0 failed 7 checks of inproc DeadlineExceeded and NaN all 10 with ValueErrors from the
    kit's own waits, each read as the transport's fault; '10' was a bare TypeError.)"""
    with pytest.raises(ValueError, match=r"patience must be seconds in \(0, 3600\], not "):
        check_transport("inproc", patience=patience)  # type: ignore[arg-type]


def test_a_patience_of_numpy_s_float_is_taken(kit_hub: Hub) -> None:
    assert check_transport("inproc", hub=kit_hub, only=["round_trip"], patience=np.float64(10.0)) == [
        "round_trip"
    ]


def test_bf16_inputs_keep_their_mark_through_the_kit(kit_hub: Hub) -> None:
    """The kit's inputs of BF16 and BYTES carry the mark, so a transport that drops it on the
    way in is seen too (the runtime takes plain bits for them, but answers them marked)."""
    from foundation_ml.testing._kit import _typed_inputs

    inputs = _typed_inputs(2, 0)
    assert DataType.from_numpy(inputs["t_bf16"].dtype) is DataType.BF16
    assert DataType.from_numpy(inputs["t_bytes"].dtype) is DataType.BYTES
