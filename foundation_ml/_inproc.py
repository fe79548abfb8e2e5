"""The ``inproc`` transport: same process, no copies. The reference every transport is tested against.

The handler runs in the calling thread: an unbatched model runs inline in it, as does a batch the
call fills, so a model that blocks holds its caller past ``timeout`` (a call is not interrupted,
only answered ``DeadlineExceeded`` once it returns late). A call waiting for a batch run by
another thread does give up at its timeout or the request's deadline, whichever comes first. A
closed client's calls fail ``ServerUnavailable``."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, ClassVar

import attrs
import numpy as np

from ._batching import wait_unless_hurried
from ._tensors import is_tensor
from ._transport import RequestHandler, Transport, TransportClient, TransportServer
from ._types import InferenceRequest, InferenceResponse, call_deadline
from .errors import DeadlineExceeded, InferenceError, InternalError, ServerUnavailable

__all__ = ["InprocTransport"]

_servers: dict[str, _InprocServer] = {}
_lock = threading.Lock()


class _Reply:
    """The ``respond`` of one call: a lock held until the answer is in (cheaper than an Event)."""

    __slots__ = ("answered", "done", "value")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.value: InferenceResponse | InferenceError | None = None
        self.answered = False

    def __call__(self, value: InferenceResponse | InferenceError) -> None:
        if not self.answered:  # respond exactly once; a second call is ignored
            self.value = value
            self.answered = True
            self.done.release()

    def wait(self, timeout: float | None) -> bool:
        return self.answered or self.done.acquire(timeout=-1 if timeout is None else timeout)

    def take(self) -> InferenceResponse | InferenceError | None:
        """The answer, no longer held here: the handler's frame holds this respond, and an
        error's traceback (or its cause's) may hold that frame; an error kept here would be a
        cycle, keeping the request's inputs alive until the garbage collector ran."""
        value, self.value = self.value, None
        return value


class _InprocServer(TransportServer):
    def __init__(self, address: str, handler: RequestHandler) -> None:
        self.address = address
        self.handler = handler
        self.accepting = True
        self.inflight = 0
        # a call counts itself in and out under the Condition's own lock (an RLock, as the
        # Condition's default: a C-level ``with``, where the Condition's __enter__ and __exit__
        # are Python calls); stop waits on the Condition
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._hurry = False

    def hurry(self) -> None:
        """End a drain that ``stop`` is waiting on now (a second Ctrl-C): the calls still under
        way go on in their callers' threads, unwaited for. A flag: a signal handler may call it."""
        self._hurry = True

    def stop(self, drain_timeout: float = 5.0) -> None:
        with _lock:
            if _servers.get(self.address) is self:
                del _servers[self.address]
        with self.cond:
            self.accepting = False
            wait_unless_hurried(self._drained_within, drain_timeout, self._hurried)

    def _hurried(self) -> bool:
        return self._hurry

    def _drained_within(self, timeout: float) -> bool:
        return self.cond.wait_for(lambda: self.inflight == 0, timeout=timeout)


class _InprocClient(TransportClient):
    def __init__(self, address: str) -> None:
        self.address = address
        self._ids = itertools.count(1)
        self._closed = False

    def infer(self, request: InferenceRequest, *, timeout: float | None = None) -> InferenceResponse:
        try:
            return self._call(request, timeout)
        except InferenceError as exc:  # one made where the call is not known (closed, no server)
            exc.with_call(request.model, request.id)  # or the handler's naming none (a copy: _own)
            raise

    def _call(self, request: InferenceRequest, timeout: float | None) -> InferenceResponse:
        deadline = call_deadline(request.deadline_ns, timeout)  # a bad timeout is refused before sending
        server = self._server()
        if not request.id:
            request.id = next(self._ids)
        request.inputs = {k: _readonly(v) for k, v in request.inputs.items()}
        by_request = deadline == request.deadline_ns  # (else the timeout's is the sooner)
        if not by_request:  # the handler honours the call's timeout too (as over shm), on a copy:
            # the caller's request keeps its own deadline (one sent again must not carry this one)
            request = attrs.evolve(request, deadline_ns=deadline)
        reply = _Reply()
        with server.lock:
            server.inflight += 1
        try:
            try:
                server.handler(request, reply)
            except InferenceError as exc:  # without the traceback, which holds this frame (and reply)
                reply(exc.with_traceback(None))
            except Exception as exc:  # a handler must respond, not raise; report it typed
                reply(InternalError(f"handler raised {exc!r}", model=request.model, request_id=request.id))
            # the handler may have run in this thread (answered already: nothing to wait for, and
            # no wait to work out); an answer after the deadline is late too
            answered = reply.answered or reply.wait(_seconds_until(deadline))
            if not answered or (deadline and time.monotonic_ns() > deadline):
                within = "before the request's deadline" if by_request else f"within {timeout}s"
                raise DeadlineExceeded(f"no response {within}", model=request.model, request_id=request.id)
        finally:
            with server.lock:
                server.inflight -= 1
                if not server.inflight:
                    server.cond.notify_all()
        answer = reply.take()
        del reply
        if isinstance(answer, InferenceError):
            if not (answer.model and answer.request_id):  # infer names the call on it
                answer = _own(answer)
            # raised from a local still holding it, its traceback would reach this frame and the
            # frame it: a reference cycle that kept the request's inputs (the caller's arrays)
            # alive until the garbage collector ran, so a loop of failing calls grew by its inputs
            # every call (measured: 1.7 GB for 40 MB inputs)
            try:
                raise answer
            finally:
                del answer
        assert answer is not None
        return answer

    def _server(self) -> _InprocServer:
        if self._closed:
            raise ServerUnavailable(f"the client of inproc server {self.address!r} is closed")
        server = _servers.get(self.address)
        if server is None or not server.accepting:
            raise ServerUnavailable(f"no inproc server under {self.address!r}")
        return server

    def metadata(self, model: str, *, timeout: float | None = None) -> dict[str, Any]:
        try:
            return self._server().handler.metadata(model)
        except InferenceError as exc:  # as infer's
            exc.with_call(model)
            raise

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._server().handler.stats()

    def close(self) -> None:
        self._closed = True  # a call from now on fails ServerUnavailable, as on every transport


def _own(error: InferenceError) -> InferenceError:
    """A copy of the error a handler answered, for this call to name: the handler may answer
    other calls with the same object. Made without calling the class's ``__init__`` (``copy``
    calls it with ``args``, which a subclass taking other arguments garbled or refused): the same
    attributes (its notes in a list of its own), ``args``, and what it was raised from
    (``__cause__``, ``__context__``) and where (``__traceback__``). The error itself where even
    that fails (a ``__new__`` of its own)."""
    cls = type(error)
    try:
        own = cls.__new__(cls)
    except Exception:
        return error
    own.__dict__.update(vars(error))
    if isinstance(own.__dict__.get("__notes__"), list):  # (a note the caller adds is its own)
        own.__notes__ = list(own.__notes__)
    own.args = error.args
    own.__cause__, own.__context__ = error.__cause__, error.__context__
    own.__suppress_context__ = error.__suppress_context__
    return own.with_traceback(error.__traceback__)


def _seconds_until(deadline: int) -> float | None:
    """The wait left until ``deadline`` (monotonic ns; 0: none, None), as a lock's wait takes it
    (a request's own deadline may lie past what a lock can wait)."""
    if not deadline:
        return None
    return min(max(0.0, (deadline - time.monotonic_ns()) / 1e9), threading.TIMEOUT_MAX)


def _readonly(array: np.ndarray) -> np.ndarray:
    if type(array) is not np.ndarray:
        if is_tensor(array):  # a torch tensor (a CUDA one: the runtime's device path) goes as it is
            return array
        array = np.asarray(array)
    view = array.view()
    view.flags.writeable = False
    return view


class InprocTransport(Transport):
    """Serves and calls within one process; ``address`` is any name."""

    name: ClassVar[str] = "inproc"
    cross_process: ClassVar[bool] = False  # a server is found in this process's table only

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        _no_options("serve", options)
        self.check_address(address)
        with _lock:
            if address in _servers:
                raise ValueError(f"an inproc server already serves {address!r}")
            server = _servers[address] = _InprocServer(address, handler)
        return server

    def connect(self, address: str, **options: Any) -> TransportClient:
        _no_options("connect", options)
        self.check_address(address)  # the rule serve applies (5 was served, '' not found)
        if address not in _servers:
            raise ServerUnavailable(f"no inproc server under {address!r}")
        return _InprocClient(address)


def _no_options(call: str, options: dict[str, Any]) -> None:
    """inproc takes no options: one given is a mistake (a misspelling, another transport's)."""
    if options:
        raise TypeError(f"inproc {call}() takes no options, got {', '.join(sorted(options))}")
