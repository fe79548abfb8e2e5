"""The transport contract: how requests reach a handler and responses get back.

A transport knows no model and no framework. The server side calls
``handler(request, respond)`` for every request; the handler calls ``respond`` exactly once, with
an ``InferenceResponse`` or an ``InferenceError``, inline or later from another thread (that is
what lets the runtime batch requests from many clients). The client side sends one request and
waits, never longer than the request's deadline.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from ._types import ClientCounters, InferenceRequest, InferenceResponse, seconds_of
from .errors import DeadlineExceeded, InferenceError

if TYPE_CHECKING:
    from foundation_core import Hub

__all__ = [
    "RequestHandler",
    "Respond",
    "Transport",
    "TransportClient",
    "TransportServer",
    "call_abandoned",
    "configured_options",
    "make_transport",
]

Respond = Callable[[InferenceResponse | InferenceError], None]
T = TypeVar("T")
_abandoned: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "foundation_ml_abandoned", default=None
)


def call_abandoned() -> bool:
    """Whether the ``ainfer`` call this thread runs was abandoned: its awaiting task was cancelled
    (``asyncio.wait_for`` or ``asyncio.timeout`` ran out, a ``TaskGroup`` sibling failed), and
    nobody will read the answer. A transport that waits before it sends (shm: for a free
    channel) asks between waits and, once true, gives up without sending (raising
    ``concurrent.futures.CancelledError``, which nobody reads): sent, the request would take the
    server's time and hold up the calls behind it. One that waits for the answer in slices may
    ask too and stop waiting (shm does), so that the thread is free, not kept until the server
    answers. False outside ``ainfer``'s calls."""
    event = _abandoned.get()
    return event is not None and event.is_set()


def time_left(timeout: Any, start: float, model: Any, request_id: Any = 0) -> Any:
    """The ``timeout`` an ``ainfer`` call gives its blocking call once a thread runs it: what is
    left of it since ``start`` (``time.monotonic()`` at the ``ainfer`` call). A call that waited
    for a thread past it raises ``DeadlineExceeded`` naming the call, unsent. A timeout that is no
    number of seconds in (0, 1e9] goes on as it is: None bounds nothing, and the call's own check
    names a bad one (0 included: the same answer as the synchronous call)."""
    seconds = timeout if type(timeout) is float or type(timeout) is int else seconds_of(timeout)
    if seconds is None or not 0 < seconds <= 1e9:
        return timeout
    left = seconds - (time.monotonic() - start)
    if left <= 0:
        late = DeadlineExceeded(f"no thread free to send the request within {timeout}s")
        raise late.with_call(model, request_id)
    return left


async def run_off_loop(start: Callable[[Callable[[], T]], Awaitable[T]], call: Callable[[], T]) -> T:
    """``ainfer``'s one way to run a blocking ``call``: ``start(fn)`` hands ``fn`` to a thread
    and returns the awaitable (``loop.run_in_executor``). ``call`` runs in a copy of the caller's
    context (as ``asyncio.to_thread``), where ``call_abandoned()`` turns true once the awaiting
    task is cancelled."""
    abandoned = threading.Event()
    context = contextvars.copy_context()
    context.run(_abandoned.set, abandoned)
    future = start(functools.partial(context.run, call))
    try:
        return await future
    except asyncio.CancelledError:
        abandoned.set()
        raise
    finally:  # an error raised here holds this frame: the future holding the error must go
        del future


class RequestHandler(Protocol):
    """What a transport serves. ``__call__`` takes requests; the two control calls answer
    ``client.metadata(model)`` (the model-metadata document, raising ``ModelNotFound``) and
    ``client.stats()`` (server metrics), both as JSON-able dicts: never pickle.

    A handler may also have ``flush() -> int``. A transport that polls (shm) calls it, when it
    has one, each time it has handed over every request pending at that moment: a batching
    handler then runs what it has gathered in the transport's own thread (no hand-off to another
    thread) once the batch is due, and returns in how many ns it wants to be called again (0:
    nothing is waiting). Transports that do not call it lose nothing: the handler's own timer
    runs the batch then.

    A handler may also have ``rejected(model, version, error)``. A transport that answers an
    inference request with an ``InferenceError`` itself, never calling ``__call__`` with it (its
    deadline passed before dispatch, the server is stopping, the message was malformed), calls
    it once per such request, before answering: ``model`` and ``version`` as far as the request
    named them (``""``: unknown), ``error`` what the client gets. The runtime counts them in its
    metrics. It must be cheap and never block (it runs in the transport's serving thread); a
    transport calls it only if the handler has it, and goes on serving whatever it raises.
    """

    def __call__(self, request: InferenceRequest, respond: Respond) -> None: ...

    def metadata(self, model: str) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...


class TransportServer(abc.ABC):
    """A started server. ``stop()`` stops accepting, answers or fails in-flight requests within
    ``drain_timeout``, and releases every resource (no leaked segments); called again it does
    nothing (a ``close()`` interrupted by Ctrl-C runs it once more), not even to a new server of
    the same address. Nothing else is asked of
    it: the runtime remembers the address it started each server under. (inproc's and shm's
    servers keep theirs as ``address``; ``foundation_ml._server_info`` lists the optional parts
    the runtime reads when a server has them.)"""

    address: str  # inproc and shm: the address served; optional for other transports

    @abc.abstractmethod
    def stop(self, drain_timeout: float = 5.0) -> None: ...

    def __enter__(self) -> TransportServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class TransportClient(abc.ABC):
    """A connection to one server. Thread-safe unless the transport documents otherwise.

    Optional: ``infer_copy(request, *, timeout=None)``, as ``infer`` but returning outputs the
    caller owns (not views on transport memory). ``InferenceClient`` looks for it once, when it
    connects, and uses it for ``copy=True`` and ``ainfer`` so that nothing is copied twice and the
    transport need keep nothing alive for the caller's views (shm gives the channel back)."""

    @abc.abstractmethod
    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        """Send one request, return its response or raise its ``InferenceError``."""

    @abc.abstractmethod
    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        """The server's metadata document for ``model`` (inputs, outputs, versions)."""

    @abc.abstractmethod
    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The server's metrics document (per-model counts and latency percentiles)."""

    async def ainfer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        """The async form: ``infer`` run off the event loop (in the loop's default executor), or
        ``infer_copy`` where the client has it (outputs the caller owns: the worker thread's next
        call may serve another coroutine). The timeout runs from this call, not from when a thread
        of the loop's executor comes free: a call that waited for one past its timeout raises
        ``DeadlineExceeded`` without being sent; 0 and bad values reach ``infer`` as they are.
        Cancelled, it abandons the answer (``call_abandoned``)."""
        send = getattr(self, "infer_copy", None) or self.infer
        start = time.monotonic()

        def call() -> InferenceResponse:
            return send(request, timeout=time_left(timeout, start, request.model, request.id))

        return await run_off_loop(functools.partial(asyncio.get_running_loop().run_in_executor, None), call)

    def counters(self) -> ClientCounters:
        """What this client did on its own to keep calls going (reconnects, resends): a snapshot,
        read without waiting for a call. The default, zeros, is true of a client that never
        reconnects nor sends a request twice (``inproc``); a transport whose client does either
        overrides it (shm: spec 10.5)."""
        return ClientCounters()

    @abc.abstractmethod
    def close(self) -> None: ...

    async def aclose(self) -> None:
        """The async form: ``close`` in a thread (shm's may wait for the server's region mutex),
        so that the event loop goes on meanwhile."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> TransportClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> TransportClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Transport(abc.ABC):
    """A way to move requests. Registered by name through ``foundation_register_transports``.

    A transport may declare a config section under its own name (``foundation_config_sections``)
    with methods ``serve_options()`` and ``connect_options()``: the runtime and the client then
    take their defaults from it (see ``configured_options``).
    """

    name: ClassVar[str]
    # Whether a client in another process can reach this transport's servers. False (inproc):
    # only the serving process can; ``foundation serve``, ``infer``, ``stats``, ``bench`` and
    # ``demo``, each running its servers or clients in a process of its own, refuse it by name.
    cross_process: ClassVar[bool] = True

    @abc.abstractmethod
    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        """Start serving ``handler`` under ``address``; returns once clients can connect."""

    @abc.abstractmethod
    def connect(self, address: str, **options: Any) -> TransportClient:
        """Connect to the server under ``address`` (``ServerUnavailable`` if there is none)."""

    def check_address(self, address: str) -> None:
        """Raise ``ValueError`` naming the rule if ``serve``/``connect`` would refuse ``address``
        (``TypeError`` if it is no ``str``). ``foundation serve`` asks before it loads any model.
        Default: any non-empty ``str``."""
        if not isinstance(address, str):
            raise TypeError(f"the {self.name} address is a str, not {type(address).__name__} {address!r}")
        if not address:
            raise ValueError(f"the {self.name} address must not be empty")

    def check_serve(self, address: str) -> None:
        """Raise if ``serve`` would refuse ``address`` now: ``ValueError`` naming the rule it
        breaks, ``OSError`` (``FileExistsError``) when a live server holds it. ``foundation serve``
        asks before it loads any model, so that a taken name costs no loading; ``serve`` still
        decides (another server may take the name meanwhile). Default: ``check_address``."""
        self.check_address(address)


def configured_options(hub: Hub, transport: str, kind: Literal["serve", "connect"]) -> dict[str, Any]:
    """Defaults for ``transport``'s ``serve`` or ``connect`` options from ``hub``'s configuration:
    what the config section named after the transport returns from ``serve_options()`` or
    ``connect_options()``. Empty when the hub was never configured (a bare ``InferenceClient``
    uses the transport's own defaults) or the transport declares no such section. Options passed
    in code win over these."""
    config = hub.config
    # a name that is no str is the registry's to refuse, naming it (a list was 'unhashable type')
    if config is None or not isinstance(transport, str) or transport not in config:
        return {}
    method = getattr(config[transport], f"{kind}_options", None)
    return dict(method()) if callable(method) else {}


def make_transport(hub: Hub, name: str) -> Transport:
    """The transport registered in ``hub`` as ``name``, made (``hub.transports.get(name)()``). A
    factory that raises (a third-party transport that needs a setting, say) is a ``PluginError``
    naming its plugin and the transport, which the CLI reports on one line, where its bare
    exception came out of ``MLRuntime.start``, ``InferenceClient`` and ``foundation serve`` as a
    traceback; Ctrl-C passes. A name not registered is ``NotRegisteredError``, as before."""
    factory = hub.transports.get(name)
    try:
        return factory()  # type: ignore[no-any-return]
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a plugin's sys.exit() too: see foundation_core's Registry.get
        from foundation_core.errors import PluginError

        plugin = hub.transports.entry(name).plugin
        raise PluginError(plugin, f"transport {name!r} cannot be made: {type(exc).__name__}: {exc}") from exc
