"""The inference runtime: loads models through backends, serves them on any transport.

``MLRuntime`` is the request handler every transport calls: it finds the model version and hands
the request to it (``ServedModel``: the inputs checked against the signature, the model run
inline, unbatched, or by its batcher, the answer checked against the output signature), which
answers with a response or a typed error. It imports no framework and no transport:
both are looked up by name in the hub's registries.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from foundation_core import Hub, emit
from foundation_core.errors import FoundationError

from ._backend import LoadedModel
from ._batching import Batcher, is_ctrl_c
from ._claims import ModelClaims, check_not_loaded
from ._loading import check_as_given, check_outputs, load_model
from ._metrics import prometheus_text
from ._names import MAX_VERSION_BYTES, check_name
from ._plugin import DEFAULT_NAME
from ._registry import ModelRegistry, metadata_of
from ._runtime_checks import check_batching, check_drain
from ._serve_until import serve_until_stopped
from ._server_info import server_address, server_stats
from ._serving import ServedModel
from ._signature import SignatureLike
from ._transport import Respond, TransportServer, configured_options
from ._types import InferenceRequest, ModelMetadata
from .errors import InferenceError, InternalError, ModelLoadError, ModelNotFound, ShuttingDown

__all__ = ["MLRuntime"]

log = logging.getLogger("foundation_ml")

#: Runtimes not closed yet: those still open when the interpreter exits are closed then.
_OPEN: weakref.WeakSet[MLRuntime] = weakref.WeakSet()


@atexit.register
def _close_open_runtimes() -> None:
    """A script that started a server and ended (or failed) without ``close()`` left the shm
    transport's objects in /dev/shm and never drained its requests: each runtime still open is
    closed as ``close()`` would close it. Only this process's: a forked child (a worker forked
    after the parent started serving) must not stop and unlink the parent's servers."""
    mine = [runtime for runtime in list(_OPEN) if runtime._pid == os.getpid()]
    if not mine:
        return
    with _ctrl_c_hurries(mine):
        for runtime in mine:
            try:
                runtime.close(reason="exit")
            except KeyboardInterrupt:  # a third Ctrl-C: Python's default, as documented
                raise
            except BaseException as exc:  # (a model's close() calling sys.exit): the others too
                log.warning("closing a runtime at interpreter exit failed: %r", exc)


@contextlib.contextmanager
def _ctrl_c_hurries(runtimes: list[MLRuntime]) -> Iterator[None]:
    """While ``runtimes`` close at exit, a Ctrl-C ends their drains at once (``hurry()``), as a
    second signal does for ``serve()``: what is in flight is abandoned, every object still
    released. As Python's default it raised KeyboardInterrupt inside a close, which ended the
    closing there (the runtimes after it left in /dev/shm). Another Ctrl-C acts as Python's
    default; a SIGINT handler of the script's own is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def hurry(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a third: Python's default
        for runtime in runtimes:
            runtime.hurry()

    signal.signal(signal.SIGINT, hurry)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_now = time.monotonic_ns
_clock = time.monotonic  # the clock of drain deadlines (replaceable: a virtual one in tests)


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
        self._closed = False
        # the models being registered or unloaded, outside the registry (under _models_lock too)
        self._claims = ModelClaims(weakref.ref(self))  # (its name names it to other runtimes)
        self._close_deadline: float | None = None  # close()'s: other threads' unloads end by it too
        self._batchers: tuple[Batcher, ...] = ()
        self._hurry = False  # hurry(): a drain under way ends now
        self._stopping: list[tuple[str, TransportServer]] = []  # the servers close() is stopping
        self.abandoned = 0  # requests the transports' drains gave up on, once closed
        self._pid = os.getpid()  # the process whose exit closes it
        _OPEN.add(self)  # closed at interpreter exit, if not before

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
        check_name(name, "register_model: the model name")
        if self._closed:
            raise ModelLoadError("the runtime is closed", model=name)
        if version is not None:
            check_name(version, f"register_model({name!r}): the version", MAX_VERSION_BYTES)
        check_batching(max_batch_size, max_wait_us, f"register_model({name!r})")
        if isinstance(model, LoadedModel):
            check_as_given(name, model, backend, device, inputs, outputs, options)
        if version is not None or isinstance(model, LoadedModel):  # known before loading it
            check_not_loaded(self.registry, name, version or str(getattr(model, "version", "") or "1"))
        loaded, spec = load_model(
            self.hub, name, model, backend, device or self.device, inputs, outputs, options
        )
        try:
            version = version or check_name(
                str(getattr(loaded, "version", "") or "1"), f"model {name!r}: its version", MAX_VERSION_BYTES
            )
        except ValueError as exc:  # a package's manifest names a version no transport can carry
            if not isinstance(model, LoadedModel):
                loaded.close()
            raise ModelLoadError(str(exc), model=name) from None
        served = ServedModel(name, version, loaded, spec)
        claimed = False
        try:
            with self._models_lock:
                self._claims.claim(served, self.registry)
            claimed = True
            if warmup:
                check_outputs(name, loaded, spec)
            batch = self.max_batch_size if max_batch_size is None else max_batch_size
            if batch > 1:
                if not loaded.batchable:
                    if max_batch_size is not None:
                        why = (
                            "dimension 0 of every input and output must be -1"
                            if loaded.inputs
                            else "a model without inputs has no rows to stack"
                        )
                        raise ModelLoadError(
                            f"cannot batch: {why} (signature: {served.metadata([version]).signature()})",
                            model=name,
                        )
                else:
                    wait = self.max_wait_us if max_wait_us is None else max_wait_us
                    served.enable_batching(batch, wait)
            with self._models_lock:
                if self._closed:
                    raise ModelLoadError("the runtime is closed", model=name)
                self.registry.add(served)
                self._claims.release(served)  # served from now on: the registry's check holds it
                self._update_batchers()
                # as of this registration: read after the lock, an unload landing meanwhile made
                # it return another version's signature, or raise ModelNotFound
                registered = metadata_of(self.registry.snapshot(), name)
        except BaseException as exc:
            # out of the registry if it got in (a Ctrl-C just after registry.add: listed though
            # stopped, the latest, and every request for no version spun in __call__); stop its
            # batcher thread, if started; release the model only if we loaded it and it is not
            # another registration's (a backend that handed back an object it had loaded before).
            # Not if another thread's unload_model took it out of the registry first: that stops
            # it, and a stop of ours too closed its model twice (or released it under that one's
            # drain). What these raise too is noted on the reason, not raised instead of it
            errors = [exc]
            unloaded = False
            try:
                with self._models_lock:
                    if self.registry.discard(served):
                        self._update_batchers()
                    else:
                        unloaded = self._claims.unloaded(served)
            except BaseException as also:
                errors.append(also)
            try:
                mine = claimed or self._claims.holds(served)
                if not unloaded:
                    served.stop(close_model=mine and not isinstance(model, LoadedModel))
            except BaseException as also:
                errors.append(also)
            first = next((e for e in errors if not isinstance(e, Exception)), exc)
            if first is not exc:  # an interrupt while releasing goes first: the reason noted as such
                first.add_note(f"registering model {name!r} had failed: {exc!r}")
                errors.remove(exc)  # (not noted again as something releasing it raised)
            _raise_first(errors, f"releasing model {name!r} also raised")
            raise
        finally:  # (released already, unless it failed or an interrupt landed before)
            with self._models_lock:
                self._claims.release(served)
        return registered

    def unload_model(self, name: str, version: str | None = None, drain_timeout: float = 5.0) -> None:
        """Stop serving ``name`` (one version, or all); queued requests are answered first, for
        at most ``drain_timeout`` in all. A request that raced the unload is answered
        ``ShuttingDown`` (or, asking for no version, served by the latest version left;
        ``ModelNotFound`` if none is); a model whose call is still running at the timeout is
        closed when that call returns (registering it again is refused until then). ``hurry()``
        ends the wait at once, as the timeout would. Every version is stopped whatever one's stop
        (its model's ``close()``, a Ctrl-C) raises; then the first error is raised (an interrupt
        before any other), the others noted on it."""
        check_name(name, "unload_model: the model name")  # None or 1 read 'no such model'
        drain_timeout = check_drain(drain_timeout, f"unload_model({name!r})")
        if version is not None:  # "" would read "no such model"; 1 "no version 1 (versions: 1)"
            check_name(version, f"unload_model({name!r}): the version", MAX_VERSION_BYTES)
        deadline = _clock() + drain_timeout
        gone: list[ServedModel] = []
        errors: list[BaseException] = []  # each version is stopped whatever another's stop raised:
        try:  # out of the registry, none would ever be stopped after (a Ctrl-C meanwhile too)
            with self._models_lock:
                gone = self.registry.remove(name, version)
                self._claims.begin_unloads(gone)
                self._update_batchers()
            for served in gone:
                hurry = any(not isinstance(e, Exception) for e in errors)  # a Ctrl-C: no more waiting
                left = 0.0 if hurry else max(0.0, deadline - _clock())
                try:
                    why = f"version {served.version!r} is being unloaded"  # (told to a request meanwhile)
                    served.stop(left, why=why, hurried=self._hurried)
                except BaseException as exc:
                    errors.append(exc)
        except BaseException as exc:
            errors.append(exc)
        finally:
            self._stopped(gone, errors)
        _raise_first(errors, f"unloading model {name!r} also raised")

    def _stopped(self, gone: list[ServedModel], errors: list[BaseException]) -> None:
        """``unload_model`` is done with ``gone``: a version whose stop never ran to its end (a
        Ctrl-C came first, or landed in it before it released the model) is stopped at once, the
        batchers listed again and the versions let go (``errors``)."""
        for served in gone:
            try:
                if not served.stopped:
                    served.stop(0.0, why=f"version {served.version!r} is being unloaded")
            except BaseException as exc:
                errors.append(exc)
        try:
            with self._models_lock:
                self._update_batchers()
                for served in gone:
                    self._claims.end_unload(served)
        except BaseException as exc:  # (left in unloading: released, so over for claim)
            errors.append(exc)
        self._claims.notify_unloaded()

    def _hurried(self) -> bool:
        """Whether ``hurry()`` was called, or ``close()``'s drain is over (an unload in another
        thread ends with it): a model's drain polls it (a signal handler cannot wake it)."""
        end = self._close_deadline
        return self._hurry or (end is not None and _clock() >= end)

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
        _check_str(name, "versions")
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
        _check_str(model, "metadata")
        state = self.registry.snapshot()  # one moment: a version unloaded meanwhile is in it or not
        doc = metadata_of(state, model).as_dict()
        doc["batching"] = self._batching(state[1][model])
        doc["signatures"] = {v: _signature_doc(served) for v, served in state[0][model].items()}
        return doc

    def stats(self) -> dict[str, Any]:
        """The metrics document: per model, the latest version's figures at the top and every
        loaded version's (the latest's too) under ``versions``; taken from one snapshot of the
        registry, so a model loaded or unloaded meanwhile cannot break it."""
        all_versions, latest = self.registry.snapshot()
        models: dict[str, Any] = {}
        for name in sorted(all_versions):
            docs = {
                v: {"version": v, **served.metrics.snapshot(), "batching": self._batching(served)}
                for v, served in all_versions[name].items()
            }
            models[name] = {**docs[latest[name].version], "versions": docs}
        return {
            "server": {
                "name": self.name,
                "transports": {t: server_stats(s) for t, s in self.servers},
                "uptime_s": round(time.time() - self.started, 3),
                "accepting": self._accepting,
                "rejected": self._rejections(),
            },
            "models": models,
        }

    def _rejections(self) -> dict[str, int]:
        with self._rejected_lock:
            return dict(self._rejected)

    def prometheus(self) -> str:
        """The metrics in Prometheus text format."""
        stats = self.stats()
        return prometheus_text(stats["models"], self.name, stats["server"]["rejected"])

    @staticmethod
    def _batching(served: ServedModel) -> dict[str, Any]:
        b = served.batcher
        if b is None:
            return {"enabled": False, "batchable": served.model.batchable}
        return {"enabled": True, "max_batch_size": b.max_batch_size, "max_wait_us": b.max_wait_us}

    # --- serving ------------------------------------------------------------------------------

    def start(self, transport: str = "shm", name: str = DEFAULT_NAME, **options: Any) -> TransportServer:
        """Serve on ``transport`` under ``name``; returns once clients can connect. ``options`` go
        to the transport's ``serve``, over the defaults of its config section (``configured_options``).
        A closed runtime serves nothing: ``FoundationError`` (nothing would stop its server)."""
        with self._models_lock:
            if self._closed:
                raise self._closed_error(transport, name)
        impl = self.hub.transports.get(transport)()
        self.name = self.name or name
        self._accepting = True
        options = {**configured_options(self.hub, transport, "serve"), **options}  # code wins over config
        try:
            server: TransportServer = impl.serve(name, self, **options)
        except BaseException:
            with self._models_lock:
                if self._closed:  # closed meanwhile (see below), and no server of this start serves
                    self._accepting = False
            raise
        with self._models_lock:  # close() lists the servers to stop once it has set _closed
            closed = self._closed
            if not closed:
                self.addresses[id(server)] = name
                self.servers.append((transport, server))
        if closed:  # closed by another thread meanwhile, which did not see this server
            self._accepting = False  # (set again above, perhaps after that close had cleared it)
            server.stop(0.0)
            raise self._closed_error(transport, name)
        emit("server_start", name=name, transport=transport, models=self.registry.names())
        return server

    @staticmethod
    def _closed_error(transport: str, name: str) -> FoundationError:
        return FoundationError(
            f"the runtime is closed: start({transport!r}, {name!r}) would serve no model, and "
            "nothing would stop the server; make a new MLRuntime"
        )

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
        Prometheus text every second and at exit.

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
        whatever one of them raises (a Ctrl-C meanwhile hurries the rest); then the first error
        is raised (an interrupt before any other), the others noted on it."""
        drain_timeout = check_drain(drain_timeout, "close")
        with self._models_lock:
            if self._closed:
                return
            self._closed = True  # register_model refuses from now on
        _OPEN.discard(self)
        deadline = _clock() + drain_timeout
        self._close_deadline = deadline
        servers, self.servers = self.servers, []
        self._stopping = servers
        for served in self.registry.all():  # queued requests run now, not after max_wait_us
            batcher = served.batcher  # read once: an unload_model in another thread lets it go
            if batcher is not None:
                batcher.drain()
        errors: list[BaseException] = []  # each step runs whatever an earlier one raised

        def failed(exc: BaseException) -> None:
            errors.append(exc)
            if not isinstance(exc, Exception):  # Ctrl-C: the rest stops at once, still released
                self._hurry = True

        for transport, server in servers:  # the transport stops accepting and waits for in-flight
            if self._hurry:
                self.hurry()
            try:
                server.stop(max(0.0, deadline - _clock()))
            except BaseException as exc:
                failed(exc)
            self.abandoned += int(getattr(server, "abandoned", 0) or 0)
            address = server_address(server, self.addresses)
            self.addresses.pop(id(server), None)
            emit("server_stop", name=address, transport=transport, reason=reason)
        self._accepting = False
        if self.abandoned:
            log.warning(
                "stopped without answering %d in-flight request(s): %s",
                self.abandoned,
                "told to stop at once (hurry(): a second signal, or SIGQUIT)"
                if self._hurry
                else f"the {drain_timeout:g} s drain timed out",
            )
        if drained is not None:
            try:
                drained()
            except BaseException as exc:
                failed(exc)
        for name in self.registry.names():
            left = 0 if self._hurry else max(0.0, deadline - _clock())
            try:
                self.unload_model(name, drain_timeout=left)
            except ModelNotFound:  # unloaded meanwhile by another thread (waited for below)
                pass
            except BaseException as exc:
                failed(exc)
        try:
            self._claims.wait_for_unloads()
        except BaseException as exc:
            failed(exc)
        # the servers stopped refer back to this runtime (their handler): holding them made a
        # cycle that kept a closed runtime, and its hub, alive until the garbage collector ran
        self._stopping = []
        if self._own_hub:
            try:
                self.hub.shutdown()
            except BaseException as exc:
                failed(exc)
        _raise_first(errors, "closing the runtime also raised")

    def __enter__(self) -> MLRuntime:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_str(name: object, where: str) -> None:
    """A name to look up must be a str (``TypeError`` naming ``where``); any str is looked up, and
    one not served is ``ModelNotFound`` (a transport passes what a client asked for)."""
    if not isinstance(name, str):
        check_name(name, f"{where}: the model name")


def _raise_first(errors: list[BaseException], also: str) -> None:
    """Raise the first of ``errors``, if any: an interrupt before any other (stopping is what the
    user asked), the others noted on it (``also``: what the note says they come from)."""
    if errors:
        first = next((e for e in errors if not isinstance(e, Exception)), errors[0])
        for other in errors:
            if other is not first:
                first.add_note(f"{also}: {other!r}")
        raise first


def _signature_doc(served: ServedModel) -> dict[str, Any]:
    m = served.model
    return {"inputs": [s.as_dict() for s in m.inputs], "outputs": [s.as_dict() for s in m.outputs]}
