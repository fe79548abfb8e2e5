"""One served model version: validate a request, run it inline or hand it to its batcher, answer it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._backend import LoadedModel
from ._batching import Batcher, is_ctrl_c, wait_unless_hurried
from ._datatypes import DataType
from ._metrics import ModelMetrics
from ._signature import compile_validator, describe, mismatch
from ._tensors import has_tensor, to_host
from ._transport import Respond
from ._types import InferenceRequest, InferenceResponse, ModelMetadata
from .errors import DeadlineExceeded, HandlerError, InferenceError, InvalidInput, ModelLoadError, ShuttingDown

__all__ = ["ServedModel"]

log = logging.getLogger("foundation_ml")
_now = time.monotonic_ns
_LOGGED_PLACES = 20  # the distinct failures a version logs (a model raising from many lines)
_logged_lock = threading.Lock()  # a failure is logged once, whichever threads raise it at once


class ServedModel:
    """A loaded model under a name and version, with its metrics and (when batching) its batcher.

    It counts the calls of its model under way (inline ones and batches, in whatever thread), so
    that ``stop`` never closes the model under a running call: a request that finds it stopping is
    answered ``ShuttingDown``, and a call still running when the drain times out closes the model
    itself when it returns.
    """

    __slots__ = (
        "__weakref__",
        "_close_pending",
        "_gate",
        "_idle",
        "_logged",
        "_marked_out",
        "_output_names",
        "_row_outputs",
        "_running",
        "_valid",
        "_valid_out",
        "_why",
        "batcher",
        "metrics",
        "model",
        "name",
        "others",
        "released",
        "spec",
        "stopped",
        "stopping",
        "version",
    )

    def __init__(self, name: str, version: str, model: LoadedModel, spec: str = "") -> None:
        self.name = name
        self.version = version
        self.model = model
        self.spec = spec
        self.metrics = ModelMetrics()
        self.batcher: Batcher | None = None
        # The model calls under way, one entry each: list.append and list.pop are atomic under
        # the GIL, so a call costs no lock unless stopping (about 1 µs a call with the lock).
        # A call appends, then reads ``stopping``; stop sets ``stopping``, then reads the list:
        # either the call sees ``stopping`` and backs out, or stop sees the call and waits.
        self._running: list[None] = []
        self._gate = threading.Lock()  # guards stopping, _close_pending; notifying _idle
        self._idle = threading.Condition(self._gate)  # notified when the last call under way returns
        self.stopping = False  # stop() has begun: no new inline call starts
        # a stop ran to its end: the model released, or its close handed to the call still running.
        # Not ``stopping``: a Ctrl-C as stop let go of its gate (Python checks for signals there)
        # left it set with the batcher running and the model neither closed nor released
        self.stopped = False
        # another version of this name is served (the registry keeps it): a request's error then
        # names this version, since a caller who asked for the latest cannot tell which it met
        self.others = False
        self._why = ""  # what a request arriving once stopping is told
        # where the model raised, (type, file, line): each logged once with its traceback
        self._logged: set[tuple[str, str, int]] = set()
        self._close_pending = False  # the drain timed out: the last call to return closes the model
        # set once stop is done with the model: closed (by stop, or by the last call when the drain
        # timed out), or left to its owner; until then the runtime holds it (ModelClaims)
        self.released = threading.Event()
        self._output_names = frozenset(s.name for s in model.outputs)
        self._valid = compile_validator(model.inputs)
        self._valid_out = compile_validator(model.outputs)  # a model's answer is checked too
        # batched, dimension 0 is the batch: these outputs have one row per input row (set by
        # enable_batching; it outlives the batcher, which stop lets go)
        self._row_outputs: tuple[str, ...] = ()
        # BF16 and BYTES outputs are numpy uint16 and uint8 with a mark in the dtype, which a numpy
        # model may not have put there (plain bits pass the check): they go out as declared
        marked = (DataType.BF16, DataType.BYTES)
        self._marked_out = tuple((s.name, s.datatype.numpy) for s in model.outputs if s.datatype in marked)

    def metadata(self, versions: Sequence[str]) -> ModelMetadata:
        m = self.model
        return ModelMetadata(self.name, m.inputs, m.outputs, tuple(versions), m.platform)

    def enable_batching(self, max_batch_size: int, max_wait_us: int) -> None:
        self._row_outputs = tuple(s.name for s in self.model.outputs if s.shape and s.shape[0] == -1)
        self.batcher = Batcher(self, max_batch_size, max_wait_us)
        try:
            self.batcher.start()
        except Exception as exc:  # (no thread left): not an error of ours; stop waits for no thread
            raise ModelLoadError(
                f"its batcher thread did not start: {type(exc).__name__}: {exc}", model=self.name
            ) from exc

    def submit(self, request: InferenceRequest, respond: Respond, t0: int, latest: bool = False) -> bool:
        """Answer ``request`` (now, or from the batcher thread); True. Never raises. ``latest``:
        it was given to this version as the latest of its name (it asked for no version); if this
        version is being unloaded, it is then not answered ``ShuttingDown`` but handed back
        unanswered (False), for the caller to give it to the latest version left."""
        try:
            if not self._valid(request.inputs):
                raise InvalidInput(
                    self.which() + mismatch(self.model.inputs, request.inputs),
                    model=self.name,
                    request_id=request.id,
                )
            if request.outputs and not self._output_names.issuperset(request.outputs):
                unknown = sorted(set(request.outputs) - self._output_names)
                raise InvalidInput(
                    f"{self.which()}unknown output(s) {', '.join(unknown)} "
                    f"(outputs: {describe(self.model.outputs)})",
                    model=self.name,
                    request_id=request.id,
                )
            if not self.model.takes_tensors and has_tensor(request.inputs):
                request.inputs = {n: to_host(a) for n, a in request.inputs.items()}  # numpy models
        except InferenceError as exc:  # answered without its traceback: see MLRuntime.__call__
            self.finish(request, respond, t0, exc.with_traceback(None))
            return True
        batcher = self.batcher  # read once: stop() lets it go
        if batcher is not None:
            return batcher.put(request, respond, t0, latest)
        if request.deadline_ns and _now() > request.deadline_ns:
            self.finish(request, respond, t0, self.expired(request), batch=0)
            return True
        self._running.append(None)
        if self.stopping:  # an unload raced the lookup: never run a model being closed
            self.call_done()
            if latest:
                return False
            self.finish(request, respond, t0, ShuttingDown(self._why, model=self.name, request_id=request.id))
            return True
        try:
            outputs = self.model(request.inputs)
        except BaseException as exc:  # SystemExit, GeneratorExit...: this request's error (is_ctrl_c)
            self.call_done()
            if is_ctrl_c(exc):
                raise
            self.finish(request, respond, t0, self.failed(request, exc), batch=1)
            return True
        self.call_done()
        self.answer(request, respond, t0, outputs, batch=1)
        return True

    def which(self) -> str:
        """``version '2': `` when another version of this name is served, else nothing: the start
        of an error about this version's signature (built on the error path only)."""
        return f"version {self.version!r}: " if self.others else ""

    def call_started(self) -> None:
        """A call of the model begins (a batch: it runs even while stopping, to drain the queue)."""
        self._running.append(None)

    def call_done(self) -> None:
        """A call of the model returned; the last one of a stop whose drain timed out closes it."""
        self._running.pop()
        if not self.stopping:
            return
        with self._gate:
            if self._running:
                return
            self._idle.notify_all()
            close, self._close_pending = self._close_pending, False
        if close:
            _close(self)

    def answer(
        self,
        request: InferenceRequest,
        respond: Respond,
        t0: int,
        outputs: Mapping[str, np.ndarray],
        batch: int,
        checked: bool = False,
    ) -> None:
        """Answer ``outputs``, unless they break the model's output signature (then the caller
        gets a HandlerError saying how; a client never receives a wrong-shaped answer).
        ``checked``: a batch's outputs, checked before they were split."""
        if not checked:
            problem = self.output_problem(outputs, request)
            if problem:
                self.finish(
                    request, respond, t0, HandlerError(problem, model=self.name, request_id=request.id), batch
                )
                return
        if request.outputs:
            outputs = {n: outputs[n] for n in request.outputs}
        if self._marked_out:
            outputs = _as_declared(outputs, self._marked_out)
        response = InferenceResponse(request.id, self.name, outputs, self.version)
        self.metrics.record(_now() - t0, None, batch)
        respond(response)

    def output_problem(self, outputs: Mapping[str, Any], request: InferenceRequest | None) -> str | None:
        """What is wrong with a model's ``outputs`` (for ``request``; None: a batch), or None;
        naming the version (``which``) while another is served."""
        # a dict (what backends return) skips the ABC check, a Python-level __instancecheck__
        if type(outputs) is not dict and not isinstance(outputs, Mapping):
            return (
                f"{self.which()}the model returned {type(outputs).__name__}, not a mapping of "
                "output names to arrays"
            )
        if not self._valid_out(outputs):  # (not arrays at all too)
            return (
                self.which()
                + "the model's answer breaks its signature: "
                + mismatch(self.model.outputs, outputs, side="output")
            )
        if request is not None and self._row_outputs:
            counts = {a.shape[0] for a in request.inputs.values() if a.ndim}
            rows = counts.pop() if len(counts) == 1 else None  # inputs disagreeing: no batch rows
            bad = [n for n in self._row_outputs if rows is not None and outputs[n].shape[0] != rows]
            if bad:
                return (
                    f"{self.which()}the model returned output(s) {', '.join(bad)} without one row "
                    f"per input row ({rows}); a batched model's dimension 0 is the batch"
                )
        return None

    def finish(
        self, request: InferenceRequest, respond: Respond, t0: int, error: InferenceError, batch: int = 0
    ) -> None:
        self.metrics.record(_now() - t0, error.code.name, batch)
        respond(error)

    def expired(self, request: InferenceRequest) -> DeadlineExceeded:
        late = (_now() - request.deadline_ns) / 1e3
        return DeadlineExceeded(
            f"deadline passed {late:.0f} µs before the model ran", model=self.name, request_id=request.id
        )

    def failed(self, request: InferenceRequest, exc: BaseException) -> HandlerError:
        """The HandlerError answering a call of the model that raised ``exc``; its traceback, which
        the client never sees, is logged the first time the model raises it there."""
        self.log_failure(exc)
        return HandlerError(
            f"{self.which()}{type(exc).__name__}: {exc}", model=self.name, request_id=request.id
        )

    def log_failure(self, exc: BaseException) -> None:
        """Log ``exc`` with its traceback at error level, once per exception type and the line
        that raised it (a model failing every request writes one line, not one a request; its
        every failure counts in the metrics' ``errors_by_code``), at most ``_LOGGED_PLACES``
        places a version."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ("", 0)
        key = (type(exc).__qualname__, *where)
        with _logged_lock:
            if key in self._logged or len(self._logged) >= _LOGGED_PLACES:
                return
            self._logged.add(key)
            last = len(self._logged) == _LOGGED_PLACES
        log.error(
            "model %r version %r raised %s: %s (answered HANDLER_ERROR; logged once per exception "
            "type and line%s)",
            self.name,
            self.version,
            type(exc).__name__,
            exc,
            f": the last of {_LOGGED_PLACES} logged for this version" if last else "",
            exc_info=exc,
        )

    def stop(
        self,
        drain_timeout: float = 5.0,
        close_model: bool = True,
        why: str = "",
        hurried: Callable[[], bool] | None = None,
    ) -> bool:
        """Answer what is queued, stop the batcher, release the model (``why``: what a request
        arriving meanwhile is told; by default that the server is shutting down). Returns within
        ``drain_timeout``, or at once when ``hurried()`` (a second Ctrl-C): True once every call
        has returned; False if one still runs (a model that blocks), whose return then closes the
        model (it is never closed under a call), while the requests still queued are answered
        ``ShuttingDown``. Interrupted in its wait (a Ctrl-C), it stops so all the same, then
        raises the interrupt."""
        deadline = time.monotonic() + drain_timeout
        with self._gate:
            self._why = why or "the server is shutting down"
            self.stopping = True
        batcher = self.batcher  # (a request racing the stop finds it stopping: ShuttingDown)
        interrupted: BaseException | None = None
        try:
            if batcher is not None:
                batcher.stop(drain_timeout, why, hurried)
            with self._idle:
                wait_unless_hurried(self._idle_within, max(0.0, deadline - time.monotonic()), hurried)
        except BaseException as exc:  # a Ctrl-C in the wait: never leave the model unreleased
            interrupted = exc
        if batcher is not None:
            self._stop_batcher(batcher, why, interrupted)
        with self._gate:
            idle = not self._running
            pending = self._close_pending = close_model and not idle
            if pending:  # the close is that call's now: begun again, a stop would close it twice
                self.stopped = True
        try:
            if close_model and idle:
                self.model.close()
        except BaseException as exc:
            if interrupted is None:
                raise
            interrupted.add_note(f"closing the model also raised: {exc!r}")
        finally:
            self.stopped = True  # (first: no call before it, where a Ctrl-C could land)
            if not pending:  # (else the call still running releases it: call_done)
                self.released.set()
        if interrupted is not None:  # the interrupt first: stopping is what the user asked
            raise interrupted
        return idle

    def _stop_batcher(self, batcher: Batcher, why: str, interrupted: BaseException | None) -> None:
        """Once ``batcher.stop`` has run, stop it again at once if a Ctrl-C came before it ran to
        its end (at its entry, before it set its flag: taken for stopped, the model was closed
        with the batcher thread running on, its queue waiting for it), then let go of it: the
        batcher refers back to this model, and the cycle kept an unloaded model (its weights)
        alive until the garbage collector happened to run. Interrupted again, the model is not
        closed under its batcher: ``interrupted`` is raised with ``stopped`` unset, for the
        runtime to stop it again."""
        if not batcher.stopped:
            try:
                batcher.stop(0.0, why)
            except BaseException as exc:
                if not batcher.stopped:
                    if interrupted is not None and exc is not interrupted:
                        interrupted.add_note(f"stopping the batcher again also raised: {exc!r}")
                        raise interrupted from None
                    raise
        self.batcher = None

    def _idle_within(self, timeout: float) -> bool:
        """Wait (holding ``_idle``) up to ``timeout`` for every call under way to return."""
        return self._idle.wait_for(lambda: not self._running, timeout)


def _close(served: ServedModel) -> None:
    """Close the model of a stop whose drain timed out, in the thread of its last call: a failure
    is logged (the stop that asked for it returned long ago), and the thread serves on. Only then
    is the model ``released``: registering it again meanwhile would have it closed under that."""
    try:
        served.model.close()
    except Exception as exc:
        log.error("model %r version %r: close() raised: %r", served.name, served.version, exc, exc_info=exc)
    finally:
        served.released.set()


def _as_declared(outputs: Mapping[str, Any], declared: tuple[tuple[str, np.dtype], ...]) -> Mapping[str, Any]:
    """``outputs`` with each BF16 or BYTES output given as plain uint16 or uint8 (checked: the
    signature took it) viewed as ``DataType.BF16.numpy`` or ``DataType.BYTES.numpy``, so the
    answer travels as declared."""
    relabel = {
        name: a.view(dtype)
        for name, dtype in declared
        if type(a := outputs.get(name)) is np.ndarray
        and a.dtype == dtype
        and a.dtype.metadata != dtype.metadata
    }
    return {**outputs, **relabel} if relabel else outputs
