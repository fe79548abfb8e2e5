"""The inference runtime: loads models through backends, serves them on any transport.

``MLRuntime`` is the request handler every transport calls: it finds the model version and hands
the request to it (``ServedModel``: the inputs checked against the signature, the model run
inline, unbatched, or by its batcher, the answer checked against the output signature), which
answers with a response or a typed error. It imports no framework and no transport:
both are looked up by name in the hub's registries. What it does besides answering requests has
a module each: registering and unloading models (``_runtime_models``), starting and closing
(``_runtime_lifecycle``), its reports (``_runtime_reports``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from foundation_core import Hub

from . import _runtime_lifecycle, _runtime_models, _runtime_reports
from ._batching import Batcher, is_ctrl_c
from ._claims import ModelClaims
from ._metrics import prometheus_text
from ._plugin import DEFAULT_NAME
from ._registry import ModelRegistry, metadata_of
from ._runtime_checks import check_batching, check_str
from ._runtime_drain import passed
from ._serve_until import serve_until_stopped
from ._serving import ServedModel
from ._signature import SignatureLike
from ._transport import Respond, TransportServer
from ._types import InferenceRequest, ModelMetadata
from .errors import InferenceError, InternalError, ModelNotFound, ShuttingDown

__all__ = ["MLRuntime"]

_now = time.monotonic_ns


class MLRuntime:
    """Models plus the servers that expose them. ``with MLRuntime() as rt: ...`` closes it.

    ``max_batch_size``/``max_wait_us`` are defaults for models that do not set their own;
    batching applies only to batchable models (every input and output has a variable dim 0).
    ``max_batch_size`` counts requests, not rows: a request is never split across calls.
    """

    def __init__(
        self,
        hub: Hub | None = None,
        *,
        device: str = "cpu",
        max_batch_size: int = 1,
        max_wait_us: int = 500,
        name: str = "",
    ) -> None:
        check_batching(max_batch_size, max_wait_us, "MLRuntime")
        if not isinstance(name, str):  # name=5 failed its first prometheus() (AttributeError)
            raise TypeError(f"MLRuntime: name must be a str ('' takes its first server's), not {name!r}")
        if hub is not None and not isinstance(hub, Hub):  # MLRuntime("cuda:0") failed at register_model
            raise TypeError(
                f"MLRuntime: hub must be a foundation_core Hub (foundation_core.start()) or None, not "
                f"{type(hub).__name__} {hub!r} (the device is device=)"
            )
        self._own_hub = hub is None
        if hub is None:
            import foundation_core

            hub = foundation_core.start()
        self.hub = hub
        self.device = device
        self.max_batch_size = max_batch_size
        self.max_wait_us = max_wait_us
        self.name = name
        self.registry = ModelRegistry()
        self.servers: list[tuple[str, TransportServer]] = []
        # the address each server was started under (by id(server)): TransportServer asks for
        # nothing but stop(), so a transport's server need not remember it
        self.addresses: dict[int, str] = {}
        self.started = time.time()
        self._accepting = True
        self._rejected: dict[str, int] = {}
        self._rejected_lock = threading.Lock()  # transports' threads count rejections at once
        self._models_lock = threading.Lock()  # a registry change and the batchers flush() sees
        self._closing = False  # close() began: register_model and start refuse (under _models_lock)
        self._closed = False  # a close() ran to its end: another does nothing
        self._closer: object | None = None  # the close() under way (its token; under _models_lock)
        # the models being registered or unloaded, outside the registry (under _models_lock too)
        self._claims = ModelClaims(weakref.ref(self))  # (its name names it to other runtimes)
        self._close_deadline: float | None = None  # close()'s: other threads' unloads end by it too
        self._batchers: tuple[Batcher, ...] = ()
        self._hurry = False  # hurry(): a drain under way ends now
        self._stopping: list[tuple[str, TransportServer]] = []  # those close() has yet to stop
        self.abandoned = 0  # requests the transports' drains gave up on, once closed
        self._pid = os.getpid()  # the process whose exit closes it
        _runtime_lifecycle.OPEN.add(self)  # closed at interpreter exit, if not before

    # --- models -------------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        model: Any,
        *,
        version: str | None = None,
        backend: str | None = None,
        device: str | None = None,
        inputs: SignatureLike | None = None,
        outputs: SignatureLike | None = None,
        max_batch_size: int | None = None,
        max_wait_us: int | None = None,
        warmup: bool = True,
        **options: Any,
    ) -> ModelMetadata:
        """Load ``model`` (an object, a factory ``"pkg.mod:build"``, a file, a model package) and
        serve it under ``name``. Nothing is served unless loading, the signature check and the
        warm-up all succeed. Returns the model's metadata."""
        return _runtime_models.register(
            self,
            name,
            model,
            version=version,
            backend=backend,
            device=device,
            inputs=inputs,
            outputs=outputs,
            max_batch_size=max_batch_size,
            max_wait_us=max_wait_us,
            warmup=warmup,
            options=options,
        )

    def unload_model(self, name: str, version: str | None = None, drain_timeout: float = 5.0) -> None:
        """Stop serving ``name`` (one version, or all); queued requests are answered first, for
        at most ``drain_timeout`` in all. A request that raced the unload is answered
        ``ShuttingDown`` (or, asking for no version, served by the latest version left;
        ``ModelNotFound`` if none is); a model whose call is still running at the timeout is
        closed when that call returns (registering it again is refused until then). ``hurry()``
        ends the wait at once, as the timeout would. Every version is stopped whatever one's stop
        (its model's ``close()``, a Ctrl-C) raises; then the first error is raised (an interrupt
        before any other), the others noted on it."""
        _runtime_models.unload(self, name, version, drain_timeout)

    def _hurried(self) -> bool:
        """Whether ``hurry()`` was called, or ``close()``'s drain is over (an unload in another
        thread ends with it): a model's drain polls it (a signal handler cannot wake it)."""
        end = self._close_deadline
        return self._hurry or (end is not None and passed(end))

    @property
    def _unloading(self) -> list[tuple[ServedModel, threading.Thread]]:
        """The versions ``unload_model`` is stopping, with the thread stopping each (``ModelClaims``)."""
        return self._claims.unloading

    def _update_batchers(self) -> None:
        """What ``flush()`` runs: the batchers of the registry as it is now (under _models_lock)."""
        self._batchers = tuple(s.batcher for s in self.registry.all() if s.batcher is not None)

    def models(self) -> list[ModelMetadata]:
        """Every served model's metadata (its latest version's signature, all its versions), as
        of one moment: a model loaded or unloaded meanwhile is listed whole or not at all."""
        state = self.registry.snapshot()
        return [metadata_of(state, n) for n in sorted(state[0])]

    def versions(self, name: str) -> list[str]:
        """The loaded versions of ``name``, oldest first (``ModelNotFound`` if none)."""
        check_str(name, "versions")
        return self.registry.versions(name)

    # --- the request handler (called by transports) -------------------------------------------

    @property
    def device_tensors(self) -> bool:
        """Whether this runtime takes torch CUDA tensors as inputs: True when a model it serves
        runs on a CUDA device (``device="cuda:N"``). A transport reads it when it starts serving
        (the shm transport then accepts CUDA IPC in its default mode), so register such models
        before ``start``. Requests with CUDA tensors for a host model are copied to host first."""
        return any(s.model.device_tensors for s in self.registry.all())

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        t0 = _now()
        handed: ServedModel | None = None  # the version that handed the request back, if one did
        while True:  # once more only if the version handed the request back (see the end)
            try:
                if not self._accepting:
                    raise ShuttingDown(
                        "the server is shutting down", model=request.model, request_id=request.id
                    )
                served = self.registry.get(request.model, request.version)
                if served.stopping and not request.version:  # unloaded since: the latest left, if any
                    served = self.registry.get(request.model)
                    if served is handed:  # stopping, yet still the latest: again would spin
                        raise ShuttingDown(
                            f"version {served.version!r} is being unloaded",
                            model=request.model,
                            request_id=request.id,
                        )
            except InferenceError as exc:
                exc.request_id = request.id
                with self._rejected_lock:
                    self._rejected[exc.code.name] = self._rejected.get(exc.code.name, 0) + 1
                # without its traceback: that holds this frame, which holds ``respond``; a respond
                # keeping its answer (inproc's reply, a list) made a cycle that kept the request's
                # inputs alive until the garbage collector ran
                respond(exc.with_traceback(None))
                return
            try:
                if served.submit(request, respond, t0, latest=not request.version):
                    return
            except BaseException as exc:  # a bug of ours: still answer, typed
                if is_ctrl_c(exc):
                    raise
                respond(InternalError(repr(exc), model=request.model, request_id=request.id))
                return
            # Handed back: it asked for no version, and an unload of this one began as it took
            # the request; the latest version left (if any) takes it. An unload takes a version
            # out of the registry before it stops it, so each turn finds another version (or
            # none: ModelNotFound), and this ends once the unloads do. A version found again
            # (stopping, yet still the latest) answers ShuttingDown above: it never spins.
            handed = served

    def rejected(self, model: str | None, version: str | None, error: InferenceError) -> None:
        """``RequestHandler.rejected``: the transport answered an inference request ``error``
        itself, without calling this handler (its deadline passed before it was dispatched, the
        server is stopping, it was malformed). Counted where this handler would have counted it:
        for the served model it names (its ``version``, or the latest) as a request and an error
        of that code, no latency; for no model in ``stats()["server"]["rejected"]`` when it names
        none served, none at all, or the error is ``ShuttingDown`` (as the runtime's own)."""
        code = error.code.name
        served = None
        if model and not isinstance(error, ShuttingDown):
            with contextlib.suppress(ModelNotFound):
                served = self.registry.get(model, version or "")
        if served is not None:
            served.metrics.refused(code)
            return
        with self._rejected_lock:
            self._rejected[code] = self._rejected.get(code, 0) + 1

    def flush(self) -> int:
        """``RequestHandler.flush``: the transport has handed over every pending request, so
        each batching model runs its gathered batch here if it is due. Returns ns until the
        soonest batch is due (0: none waits)."""
        soonest = 0
        for batcher in self._batchers:
            left = batcher.flush()
            if left and (not soonest or left < soonest):
                soonest = left
        return soonest

    def metadata(self, model: str) -> dict[str, Any]:
        """The model-metadata document of ``model``'s latest version, with ``batching`` and
        ``signatures`` (each loaded version's ``inputs`` and ``outputs``: versions may differ)."""
        return _runtime_reports.metadata(self, model)

    def stats(self) -> dict[str, Any]:
        """The metrics document: per model, the latest version's figures at the top and every
        loaded version's (the latest's too) under ``versions``; taken from one snapshot of the
        registry, so a model loaded or unloaded meanwhile cannot break it."""
        return _runtime_reports.stats(self)

    def prometheus(self) -> str:
        """The metrics in Prometheus text format."""
        stats = self.stats()
        server = stats["server"]
        return prometheus_text(stats["models"], self.name, server["rejected"], server["in_flight"])

    # --- serving ------------------------------------------------------------------------------

    def start(self, transport: str = "shm", name: str = DEFAULT_NAME, **options: Any) -> TransportServer:
        """Serve on ``transport`` under ``name``; returns once clients can connect. ``options`` go
        to the transport's ``serve``, over the defaults of its config section (``configured_options``).
        A closed runtime serves nothing: ``FoundationError`` (nothing would stop its server)."""
        return _runtime_lifecycle.start(self, transport, name, options)

    def serve(
        self,
        transport: str = "shm",
        name: str = DEFAULT_NAME,
        *,
        ready: Any = None,
        metrics_file: str | None = None,
        **options: Any,
    ) -> int:
        """Serve until SIGINT, SIGTERM or SIGHUP (a closed terminal, a dropped ssh session), then
        shut down gracefully; returns the exit status (0). A second signal during the drain ends
        it at once (``hurry``): what is still in flight is abandoned, but every transport object
        is still released and the models unloaded; only a third gets Python's default behaviour.
        SIGQUIT (Ctrl-\\) is that second signal at once: no drain, everything released (its
        default would dump core and leave the shared memory behind).

        ``ready()`` is called once clients can connect. ``metrics_file``: rewritten with the
        Prometheus text every second and at exit; one it could never write (a directory, a
        device, a place in a missing directory) is a ``ValueError`` before anything starts.

        A transport server whose serving loop died (its ``failed`` attribute set) ends the wait
        too: the runtime closes and ``serve`` raises ``InternalError`` naming the failure, so that
        ``foundation serve`` exits non-zero and a supervisor restarts it (rather than a process
        that holds the name and answers no one).
        """
        return serve_until_stopped(self, transport, name, ready, metrics_file, options)

    def hurry(self) -> None:
        """End the drain of a ``close`` under way now (a second Ctrl-C), in whichever phase it is:
        each transport server that can (an optional ``hurry()``) stops waiting for its in-flight
        requests, and the models are unloaded without waiting for their queues or their calls
        under way (a model still running is closed when its call returns). Only sets flags, so a
        signal handler may call it. It is not undone: called before ``close``, it makes that close
        (and any ``unload_model`` from then on) give up on what is in flight rather than drain."""
        self._hurry = True
        for _, server in [*self._stopping, *self.servers]:
            hurry = getattr(server, "hurry", None)
            if callable(hurry):
                hurry()

    def close(
        self, drain_timeout: float = 5.0, reason: str = "closed", drained: Callable[[], None] | None = None
    ) -> None:
        """Graceful shutdown: stop accepting, drain in-flight requests, stop batchers, release.
        ``drained()`` is called once every request is answered, before the models go.
        ``abandoned`` then counts the requests a transport gave up on (its drain timed out).
        ``drain_timeout`` bounds the whole drain, the transports' and the models' together (a
        model whose call is still running then is closed when that call returns). A model that
        ``unload_model`` in another thread is stopping meanwhile is waited for: that drain ends
        by this one's deadline too, so close returns once every model it served is closed (or
        closing when its running call returns), as its own.

        Every server is stopped, every model unloaded and the runtime's own hub shut down
        whatever one of them raises (a Ctrl-C meanwhile hurries the rest, and the one it
        interrupted runs once more, at once); then the first error is raised (an interrupt
        before any other), the others noted on it. A Ctrl-C that lands
        between those steps ends the close there, raised at once: the runtime then refuses
        requests (``ShuttingDown``), and a second ``close()``, or else the interpreter's exit,
        closes what is left. Once a close ran to its end, another does nothing."""
        _runtime_lifecycle.close(self, drain_timeout, reason, drained)

    def __enter__(self) -> MLRuntime:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
