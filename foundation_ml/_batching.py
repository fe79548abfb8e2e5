"""Dynamic batching: one thread per model stacks compatible requests along dimension 0.

The batcher thread waits for a first request, then until that request has waited ``max_wait_us``,
for up to ``max_batch_size`` requests (requests, not rows: a request is never split, so a call may
take ``max_batch_size`` times the rows of the largest request); the request that fills a batch
runs it at once in its own thread (no hand-off). A polling transport (shm) calls ``flush()``
whenever it has handed over every pending request: the batch then runs in the transport's thread
as soon as it is due, and the batcher thread is only the safety net (a hand-off to another thread
costs a GIL switch per batch). Requests whose inputs agree on every dimension after the first
(dtypes are fixed by the signature) run as one backend call; the outputs are split back by row
counts and each request is answered on its own. If a batched call raises, or its outputs break the
output signature or do not have a row per input row, each request of it is re-run alone (and its
answer checked), so one bad request cannot fail its neighbours; a request whose inputs disagree on
their first dimension never joins a batch. One batched call of a model runs at a time.

torch tensors (CUDA IPC inputs) batch too, with requests whose same input lies on the same device
(the device is part of the grouping key): they are joined with ``torch.cat`` on that device and
the outputs split with ``torch.split`` (views on the batch's output, no copy). Host and device
requests never share a batch.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ._tensors import is_tensor
from ._transport import Respond
from ._types import InferenceRequest
from .errors import HandlerError, InferenceError, InternalError, ShuttingDown

if TYPE_CHECKING:
    from ._serving import ServedModel

__all__ = ["MAX_WAIT_US", "Batcher", "is_ctrl_c", "wait_unless_hurried"]

log = logging.getLogger("foundation_ml")
_now = time.monotonic_ns
MAX_WAIT_US = 10_000_000  # the longest max_wait_us MLRuntime and the CLI take (10 s): longer is a mistake
SWITCH_INTERVAL = 1e-4  # seconds; see Batcher.start
# With a transport that calls flush(), the batcher thread is only the safety net: it runs a batch
# that is this much past due (the transport stopped flushing), checking this often. (A model also
# served on a transport that does not flush then answers that transport's requests within about
# FLUSH_CHECK_S + max_wait_us + FLUSH_GRACE_NS, not max_wait_us.)
FLUSH_GRACE_NS = 5_000_000
FLUSH_CHECK_S = 0.05
Item = tuple[InferenceRequest, Respond, int]
# How often a drain told it may be hurried checks whether it is: a hurry comes from a signal
# handler (a second Ctrl-C), which runs in the thread that waits and may take no lock (that thread
# may hold it), so it can only set a flag, not wake the wait.
HURRY_CHECK_S = 0.05


def is_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a model, must propagate: a KeyboardInterrupt on the main thread
    may be the user's Ctrl-C. Anything else a model raises (KeyboardInterrupt on a worker thread,
    SystemExit, GeneratorExit, any BaseException) is that request's error: on a serving thread it
    would otherwise end the thread and leave a server that answers no one."""
    return isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread()


def wait_unless_hurried(
    wait: Callable[[float], bool], seconds: float, hurried: Callable[[], bool] | None
) -> bool:
    """``wait(timeout)`` (True once what it waits for is done) for up to ``seconds`` in all, ended
    early once ``hurried()`` (then done or not, at once). Returns whether it is done."""
    if hurried is None:
        return wait(seconds)
    deadline = time.monotonic() + seconds
    while True:
        left = 0.0 if hurried() else deadline - time.monotonic()
        if wait(max(0.0, min(left, HURRY_CHECK_S))):
            return True
        if left <= HURRY_CHECK_S:
            return False


class Batcher:
    """The batching thread of one served model."""

    def __init__(self, served: ServedModel, max_batch_size: int, max_wait_us: int) -> None:
        if max_batch_size < 2:
            raise ValueError(f"max_batch_size must be >= 2 to batch, got {max_batch_size}")
        if max_wait_us < 0:
            raise ValueError(f"max_wait_us must be >= 0, got {max_wait_us}")
        self.served = served
        self.max_batch_size = max_batch_size
        self.max_wait_us = max_wait_us
        self._queue: deque[Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        # a stop ran to its end: the thread told to stop and what was queued run or answered. Not
        # ``_stopping``: a Ctrl-C at stop's entry (or as it took its lock) came before that was set
        self.stopped = False
        self._why = "the server is shutting down"  # what put() answers once stopping
        self._draining = False  # shutting down: run what arrives at once, wait for nothing more
        self._flushed = False  # a transport calls flush(): the thread is only the safety net
        self._thread = threading.Thread(target=self._run, name=f"batcher-{served.name}", daemon=True)
        # set when the thread ends: what stop waits for. (Thread.join interrupted by a Ctrl-C marks
        # a thread still running as stopped, in Python 3.11: stop would then refuse nothing.)
        self._ended = threading.Event()
        # a batch can close in the batcher thread, in a transport thread (put, flush) or in two
        # transports' at once; a batched model need not be thread-safe (LoadedModel): one call at
        # a time, as one Triton model instance
        self._model_lock = threading.Lock()

    def start(self) -> None:
        # A transport thread that polls holds the interpreter lock between requests; at the
        # default 5 ms switch interval a batcher whose max_wait_us expired waits for it that long
        # (measured: p50 6.7 ms, 200 rps with 4 clients over shm). 100 µs hands it over promptly.
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            self._thread.start()
        except Exception:  # (RuntimeError: can't start new thread): it never ran, stop waits for nothing
            self._ended.set()
            raise

    def put(self, request: InferenceRequest, respond: Respond, t0: int, latest: bool = False) -> bool:
        """Queue one request; True. The request that fills a batch runs it at once, in the
        caller's (the transport's) thread: no hand-off to the batcher thread, whose only job is
        then the batches that ``max_wait_us`` closes. Once stopping, the request is answered
        ``ShuttingDown``, or (``latest``: see ``ServedModel.submit``) handed back unanswered: False."""
        with self._cond:
            if self._stopping:
                if latest:
                    return False
                err = ShuttingDown(self._why, model=self.served.name, request_id=request.id)
                self.served.finish(request, respond, t0, err)
                return True
            self._queue.append((request, respond, t0))
            depth = len(self._queue)
            if depth < self.max_batch_size:
                self.served.metrics.enqueued(depth)
                if depth == 1 and not self._flushed:  # the batcher sleeps until a first request
                    self._cond.notify()
                return True
            items = [self._queue.popleft() for _ in range(self.max_batch_size)]
            self.served.metrics.enqueued(len(self._queue))
            self.served.call_started()  # under the lock: see _run_items
        self._run_items(items)
        return True

    def flush(self) -> int:
        """The transport has handed over every request pending now (``RequestHandler.flush``):
        run the queued batch in the caller's thread if its oldest request has waited
        ``max_wait_us``; returns ns until it is due (0: nothing queued, 1: call again at once)."""
        if not self._flushed:  # the thread may sleep without a timeout: it re-waits with one
            with self._cond:
                self._flushed = True
                self._cond.notify()
        if not self._queue:
            return 0
        with self._cond:
            if not self._queue:
                return 0
            left = self._queue[0][2] + self.max_wait_us * 1000 - _now()
            if left > 0 and not (self._draining or self._stopping):
                return left
            items = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch_size))]
            self.served.metrics.enqueued(len(self._queue))
            more = 1 if self._queue else 0
            self.served.call_started()  # under the lock: see _run_items
        self._run_items(items)
        return more

    def drain(self) -> None:
        """From now on run each batch as soon as it has a request (a shutdown is draining)."""
        with self._cond:
            self._draining = True
            self._cond.notify()

    def stop(
        self, drain_timeout: float = 5.0, why: str = "", hurried: Callable[[], bool] | None = None
    ) -> None:
        """Stop taking requests (answering ``why``, by default that the server is shutting down);
        run the queued ones; join the thread, for at most ``drain_timeout``, or until ``hurried()``
        (a second Ctrl-C). If it is still busy then (a model that blocks, or a queue longer than
        the drain), what is still queued is answered ``ShuttingDown``: every request gets an
        answer, and stop returns in time. Interrupted (a Ctrl-C in the wait), it answers them so
        too, then raises the interrupt. ``stopped`` is set once it has run to its end: an interrupt
        that came before (at its entry, before it set its flag) leaves it to be stopped again."""
        with self._cond:
            self._why = why or self._why
            self._stopping = True
            self._cond.notify()
        cut = "the drain was cut short"
        try:
            if wait_unless_hurried(self._ended.wait, drain_timeout, hurried):
                if self._thread.ident is not None:  # (one that never started cannot be joined)
                    self._thread.join()  # it is ending: so that it is gone once stop returns
                return
            if not (hurried and hurried()):
                cut = f"the drain timed out after {drain_timeout:g} s"
        finally:  # (run when interrupted too: the queue would wait for a model that may never return)
            if not self._ended.is_set():
                with self._cond:
                    items = list(self._queue)
                    self._queue.clear()
                    self.served.metrics.enqueued(0)
                self._refuse(items, ShuttingDown, f"{self._why} ({cut} before this request ran)")
            self.stopped = True

    def _run(self) -> None:
        try:
            while True:
                taken: list[Item] = []  # taken from the queue and not yet handed to _run_items
                try:
                    if not self._run_once(taken):
                        return
                except Exception as exc:  # a bug here must not end the thread: the model would answer no one
                    self._fail_queued(taken, exc)
        finally:
            self._ended.set()

    def _fail_queued(self, taken: list[Item], exc: Exception) -> None:
        """Answer ``taken`` and every queued request with an InternalError naming ``exc`` (and
        log it)."""
        log.error("batcher of model %r: %s: %s", self.served.name, type(exc).__name__, exc, exc_info=exc)
        with self._cond:
            items = [*taken, *self._queue]
            self._queue.clear()
        self._refuse(items, InternalError, f"the batcher failed: {type(exc).__name__}: {exc}")

    def _refuse(self, items: list[Item], error: type[InferenceError], message: str) -> None:
        """Answer each of ``items`` with ``error(message)``, naming the model and its request."""
        for request, respond, t0 in items:
            err = error(message, model=self.served.name, request_id=request.id)
            self.served.finish(request, respond, t0, err)

    def _run_once(self, taken: list[Item]) -> bool:
        """Wait for a batch and run it (its requests are in ``taken`` until they run); False once
        stopping with nothing left to run."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait(FLUSH_CHECK_S if self._flushed else None)
            if not self._queue:
                return False
            # wait until the oldest request has waited max_wait_us (plus a grace when the
            # transport flushes: it runs the batch itself), unless the batch fills (then
            # put() runs it) or a shutdown drains
            wait_ns = self.max_wait_us * 1000 + (FLUSH_GRACE_NS if self._flushed else 0)
            while self._queue and not (self._stopping or self._draining):
                left = self._queue[0][2] + wait_ns - _now()
                if left <= 0:
                    break
                self._cond.wait(min(left / 1e9, threading.TIMEOUT_MAX))  # more: OverflowError
            n = min(len(self._queue), self.max_batch_size)
            if not n:  # a put() that filled the batch, or a flush(), took it meanwhile
                return True
            taken.extend(self._queue.popleft() for _ in range(n))
            self.served.metrics.enqueued(len(self._queue))
            self.served.call_started()  # under the lock: see _run_items
        items = taken[:]
        taken.clear()  # _run_items answers them, whatever goes wrong: never answered twice
        self._run_items(items)
        return True

    def _run_items(self, items: list[Item]) -> None:
        """Run a batch taken off the queue. Its caller counted it as a call of the model under
        way (``call_started``) before letting the lock go: a ``stop`` (which takes the lock to
        set ``_stopping``, then waits for the model's calls) then sees this batch and never
        closes the model under it. Counted here, after the lock, a batch that a transport thread
        had taken (``put``, ``flush``) ran on a model that an unload had closed meanwhile."""
        guarded = [(request, _Once(respond), t0) for request, respond, t0 in items]
        try:
            self._process(guarded)  # type: ignore[arg-type]  # _Once is a Respond
        except BaseException as exc:  # never leave a caller waiting, whatever went wrong
            if is_ctrl_c(exc):
                raise
            for request, respond, t0 in guarded:
                if not respond.called:  # answered already: not again, and not counted twice
                    self.served.finish(request, respond, t0, self.served.failed(request, exc))
        finally:
            self.served.call_done()

    def _process(self, items: list[Item]) -> None:
        served = self.served
        now = _now()
        groups: dict[tuple[object, ...], list[Item]] = {}
        for item in items:
            request = item[0]
            if request.deadline_ns and now > request.deadline_ns:
                served.finish(request, item[1], item[2], served.expired(request))
                continue
            inputs = request.inputs
            if not inputs or (len(inputs) > 1 and len({a.shape[0] for a in inputs.values()}) > 1):
                # inputs that disagree on their rows cannot be stacked and split back by rows (the
                # split would hand one caller another's rows), and no inputs have no rows (a model
                # said batchable without any): the request runs alone, as unbatched
                self._run_alone(item)
                continue
            key = tuple((n, tuple(a.shape[1:]), _where(a)) for n, a in sorted(request.inputs.items()))
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            self._run_group(group)

    def _run_group(self, group: list[Item]) -> None:
        served = self.served
        if len(group) == 1:
            self._run_alone(group[0])
            return
        names = [s.name for s in served.model.inputs]
        rows = [item[0].inputs[names[0]].shape[0] for item in group]
        stacked = {n: _concat([item[0].inputs[n] for item in group]) for n in names}
        try:
            with self._model_lock:
                outputs = served.model(stacked)
            total = sum(rows)
            problem = served.output_problem(outputs, None)
            if problem:
                raise HandlerError(problem)
            bad = [n for n, a in outputs.items() if a.ndim == 0 or a.shape[0] != total]
            if bad:
                raise HandlerError(f"batched output(s) {', '.join(bad)} do not have {total} rows")
        except BaseException as exc:  # a model's SystemExit too: see is_ctrl_c
            if is_ctrl_c(exc):
                raise
            served.metrics.record_batch(len(group), failed=True)  # a backend call all the same
            for item in group:  # isolate the request at fault: each runs (and is checked) alone
                self._run_alone(item)
            return
        served.metrics.record_batch(len(group))
        parts = {n: _split(a, rows) for n, a in outputs.items()}
        for i, (request, respond, t0) in enumerate(group):
            served.answer(request, respond, t0, {n: p[i] for n, p in parts.items()}, batch=0, checked=True)

    def _run_alone(self, item: Item) -> None:
        served = self.served
        request, respond, t0 = item
        try:
            with self._model_lock:
                outputs = served.model(request.inputs)
        except BaseException as exc:
            if is_ctrl_c(exc):
                raise
            served.finish(request, respond, t0, served.failed(request, exc), batch=1)
            return
        served.answer(request, respond, t0, outputs, batch=1)


class _Once:
    """A respond callback that remembers it was called (a batch that fails after answering some
    of its requests answers only the others)."""

    __slots__ = ("called", "respond")

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.called = False

    def __call__(self, answer: Any) -> None:
        self.called = True
        self.respond(answer)


def _where(a: object) -> object:
    """Where an input lies: None for numpy arrays, a torch tensor's device otherwise."""
    return None if type(a) is np.ndarray or not is_tensor(a) else a.device  # type: ignore[attr-defined]


def _concat(parts: list[Any]) -> Any:
    """Join along dimension 0: numpy arrays on the host, torch tensors on their device."""
    if type(parts[0]) is np.ndarray or not is_tensor(parts[0]):
        joined = np.concatenate(parts)
        first = getattr(parts[0], "dtype", joined.dtype)
        if first.metadata is not None and all(p.dtype.metadata == first.metadata for p in parts):
            joined = joined.view(first)  # the BF16 or BYTES mark, which concatenate drops
        return joined
    import torch  # loaded: the parts are its tensors

    return torch.cat(parts)


def _split(a: Any, rows: list[int]) -> list[Any]:
    """Split along dimension 0 into ``rows``-sized parts (views)."""
    if type(a) is np.ndarray or not is_tensor(a):
        parts, at = [], 0  # slices: np.split costs ~10 µs of Python for a handful of rows
        for n in rows:
            parts.append(a[at : at + n])
            at += n
        return parts
    return list(a.split(rows))
