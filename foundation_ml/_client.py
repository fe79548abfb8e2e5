"""The Python client: ``InferenceClient("demo").infer("mnist", {"x": array}) -> {"y": array}``."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from foundation_core import Hub

from ._client_args import _argument_error, _check_timeout, _good_versions, _output_names, check_version
from ._plugin import DEFAULT_NAME
from ._tensors import device_of, from_host, is_device_tensor, is_tensor, to_host
from ._transport import TransportClient, configured_options, make_transport, run_off_loop, time_left
from ._types import ClientCounters, InferenceRequest, InferenceResponse, deadline_after
from .errors import ServerUnavailable

__all__ = ["AINFER_THREADS", "InferenceClient", "registered_hub"]

#: Threads an ``InferenceClient`` runs ``ainfer`` calls in (asyncio's default pool has
#: ``cpu_count + 4``: too few for one event loop to fill a batch on a small machine).
AINFER_THREADS = 64
_pool_lock = threading.Lock()
_THREADED: weakref.WeakSet[InferenceClient] = weakref.WeakSet()  # clients with ainfer threads
T = TypeVar("T")


def _forget_threads_after_fork() -> None:
    """In a forked child: ``ainfer``'s threads are the parent's, and none of them runs here. A
    pool whose threads sat idle at the fork starts no new one (it counts them as idle), so every
    ``ainfer`` waited in its queue for ever, its timeout never checked. Each client forgets its
    pool and makes one of its own on its next ``ainfer``; the lock, which a parent thread may have
    held at the fork, is made anew."""
    global _pool_lock
    _pool_lock = threading.Lock()
    for client in list(_THREADED):
        client._pool = None


os.register_at_fork(after_in_child=_forget_threads_after_fork)


@functools.cache
def registered_hub() -> Hub:
    """A hub with every installed plugin registered (not started): enough to find transports."""
    hub = Hub()
    hub.load_entry_points()
    hub.run_registration()
    return hub


class _Default(float):
    """The timeout an ``InferenceClient`` uses when none is given (a float, so it reads as one)."""


DEFAULT_TIMEOUT = _Default(30.0)  # s; a configured client timeout ([shm] client_timeout) wins


class InferenceClient:
    """A connection to the server serving under ``name`` on ``transport``.

    Errors are raised typed (``ModelNotFound``, ``InvalidInput``, ``HandlerError``, ...).
    ``timeout`` (seconds) bounds every call unless a call passes its own; it also becomes the
    request's deadline, which the server honours. Not given, it is the transport's configured
    client timeout (``[shm] client_timeout``), else 30 s; ``None``: no deadline. Outputs are the
    caller's own arrays (``copy=True``: a transport client with ``infer_copy`` makes them, shm
    straight from shared memory); ``copy=False`` returns what the transport returns, which may be
    views that the calling thread's next call overwrites (shm: the thread keeps one of the
    server's channels for them until then).

    Inputs may be torch tensors. CPU tensors travel as numpy arrays (``.numpy()``, no copy when
    contiguous) and the outputs are numpy arrays. CUDA tensors go to the transport as they are
    (shm: by CUDA IPC handle, or through host memory with ``cuda_fallback="host"``; both are
    ``options`` of ``connect``) and the outputs are torch tensors on the device of the first CUDA
    input (with ``copy=True``: the caller's own, the copy complete when ``infer`` returns).

    Close it (or use ``with``; from a coroutine ``await client.aclose()`` or ``async with``,
    which keep the event loop free while the transport closes). One dropped unclosed holds
    nothing of its own to release: its transport client goes with it (the shm client then gives
    its channels back, with a ``ResourceWarning``), and so do ``ainfer``'s threads, which end
    when their pool is collected.

    One made before ``os.fork()`` works in the child (a preforking server's workers): ``ainfer``
    there runs in threads of the child's own, and the shm client claims channels of its own.
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        transport: str = "shm",
        timeout: float | None = DEFAULT_TIMEOUT,
        copy: bool = True,
        hub: Hub | None = None,
        **options: Any,
    ) -> None:
        hub = hub or registered_hub()
        options = {**configured_options(hub, transport, "connect"), **options}  # code wins over config
        if isinstance(timeout, _Default):  # not given: the configured client timeout, else 30 s
            configured = options.get("timeout")
            timeout = float(timeout) if configured is None else configured
        if timeout is not None:
            timeout = _check_timeout(timeout, "InferenceClient: ")
        if not isinstance(copy, bool):  # copy="no" copied (truthy), copy=0 handed out views
            raise TypeError(f"InferenceClient: copy must be True or False, not {copy!r}")
        self.copy = copy
        self.name = name
        self.transport = transport
        self.timeout = timeout
        self._pool: ThreadPoolExecutor | None = None  # ainfer's threads, made on first use
        self._closed = False
        self._client: TransportClient = make_transport(hub, transport).connect(name, **options)
        # a transport client that copies its outputs itself (shm: straight from shared memory,
        # giving its channel back at once; a thread keeps one after each call returning views)
        self._infer_copy = getattr(self._client, "infer_copy", None)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str = "",
        outputs: Sequence[str] = (),
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on named inputs; returns its named outputs."""
        copy = self.copy
        response, copied = self._send(model, inputs, version, outputs, timeout, copy)
        return _outputs(response, inputs, copy and not copied)

    def infer_response(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str = "",
        outputs: Sequence[str] = (),
        timeout: float | None = None,
    ) -> InferenceResponse:
        """As ``infer``, returning the whole response (id, served version, parameters); its
        outputs are what the transport returns (shm: views, whatever ``copy`` says)."""
        return self._send(model, inputs, version, outputs, timeout, False)[0]

    def _send(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: str,
        outputs: Sequence[str],
        timeout: float | None,
        copy: bool,
    ) -> tuple[InferenceResponse, bool]:
        """The call, and whether its outputs are copies already: ``copy`` asks for them of a
        transport client with ``infer_copy`` (then nothing is copied twice)."""
        if self._closed:  # whatever the transport's close() left usable (as ainfer after close)
            raise self._closed_error(model)
        timeout = self.timeout if timeout is None else _check_timeout(timeout)
        if type(model) is not str or type(version) is not str or type(outputs) is str:
            raise _argument_error(model, version, outputs)
        if version and version not in _good_versions:  # none given: the latest, nothing to check
            check_version(model, version)
        if type(outputs) is not tuple or outputs:  # () by default: nothing to check
            outputs = _output_names(outputs)
        if type(inputs) is not dict and not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a mapping of input names to arrays, not {type(inputs).__name__}")
        prepared = {}
        for k, v in inputs.items():
            if type(k) is not str:
                raise TypeError(f"input names must be str, not {type(k).__name__} ({k!r})")
            try:
                prepared[k] = _prepare(v)
            except ValueError as exc:  # a ragged nested list
                raise ValueError(f"input {k}: {exc}") from None
        request = InferenceRequest(
            model,
            prepared,
            version=version,
            deadline_ns=deadline_after(timeout),
            outputs=tuple(outputs),
        )
        if copy and self._infer_copy is not None:
            return self._infer_copy(request, timeout=timeout), True
        return self._client.infer(request, timeout=timeout), False

    async def ainfer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str = "",
        outputs: Sequence[str] = (),
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """The async form of ``infer``: the same call, run off the event loop in the client's own
        threads (up to ``AINFER_THREADS`` at once, so one event loop can fill a batch).

        The timeout runs from this call, not from when a thread is free: a call that waited for
        a thread past its deadline raises ``DeadlineExceeded`` without being sent. Cancelling the
        awaiting task abandons the answer: a request not sent yet (shm: waiting for a free
        channel) is not sent, one already sent still runs on the server, bounded by its
        deadline (shm: the thread stops waiting for its answer). The call sees the caller's
        context variables, as with ``asyncio.to_thread``. Once the client is closed, a call
        (one still waiting for a thread included) raises ``ServerUnavailable``. Outputs are
        always copies, also with ``copy=False``: views would be overwritten by the next call in
        the same thread, which may be another coroutine's (as ``ShmClient.ainfer`` copies
        too)."""
        timeout = self.timeout if timeout is None else _check_timeout(timeout)
        start = time.monotonic()

        def call() -> dict[str, np.ndarray]:
            if self._closed:  # closed while this call waited for a thread
                raise self._closed_error(model)
            left = time_left(timeout, start, model)
            response, copied = self._send(model, inputs, version, outputs, left, True)
            return _outputs(response, inputs, not copied)

        return await run_off_loop(functools.partial(self._start, model), call)

    def _start(self, model: Any, call: Callable[[], T]) -> asyncio.Future[T]:
        """``call`` handed to one of ``ainfer``'s threads."""
        pool = self._threads(model)
        try:
            return asyncio.get_running_loop().run_in_executor(pool, call)
        except RuntimeError:  # 'cannot schedule new futures after shutdown': closed meanwhile
            if self._closed:  # (by another thread, between _threads and here)
                raise self._closed_error(model) from None
            raise

    def _threads(self, model: Any) -> ThreadPoolExecutor:
        with _pool_lock:
            if self._closed:  # no new pool: its threads would outlive the client
                raise self._closed_error(model)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    AINFER_THREADS, thread_name_prefix=f"foundation-ainfer-{self.name}"
                )
                _THREADED.add(self)
            return self._pool

    def metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata document: versions, platform, input and output signature."""
        return self._client.metadata(model, timeout=self.timeout)

    def stats(self) -> dict[str, Any]:
        """The server's metrics document (per model: counts, latency percentiles, batches)."""
        return self._client.stats(timeout=self.timeout)

    def counters(self) -> ClientCounters:
        """What the transport client did on its own to keep calls going since this client was
        made: ``reconnects`` (its server died or stopped, and a restarted one took the next call)
        and ``resends`` (calls sent once more to it, no handler having seen them): a snapshot,
        read without waiting for a call, a closed client's included. Calls that a restart would
        have failed are answered, so these are how an application sees it happen (shm: spec 10.5;
        ``inproc`` counts nothing)."""
        return self._client.counters()

    def _closed_error(self, model: Any) -> ServerUnavailable:
        """What a call of this client gets once it is closed: names the client (two clients'
        errors read the same without it) and the call's model."""
        return ServerUnavailable(
            f"the InferenceClient of {self.name!r} ({self.transport}) is closed",
            model=model if type(model) is str else "",
        )

    def close(self) -> None:
        """Close the client: every call from now on, and every ``ainfer`` still waiting for a
        thread, raises ``ServerUnavailable``; so does a call in flight where the transport fails
        those (shm). Returns without waiting for ``ainfer``'s threads to end (``aclose`` waits)."""
        self._finish_close(self._start_close(), join=False)

    async def aclose(self) -> None:
        """``close()`` for a coroutine, without blocking its event loop: the client is closed at
        once (as ``close()`` closes it), then the transport's close (shm: it may wait up to its
        ``connect_timeout`` for the server's region mutex) and the wait for ``ainfer``'s threads
        to end run in a thread. Returns once they have: over shm at once (calls in flight fail
        ``ServerUnavailable``), over inproc once each call already with the model is answered or
        passes its deadline. Cancelled while it waits, the close still completes."""
        threads = self._start_close()
        await asyncio.to_thread(self._finish_close, threads, join=True)

    def _start_close(self) -> ThreadPoolExecutor | None:
        """Mark the client closed and stop ``ainfer``'s thread pool (never blocks); returns it.
        The pool stays the client's (``_threads`` hands it out no more), so that an ``aclose``
        after a ``close`` waits for its threads too."""
        with _pool_lock:
            self._closed = True
            pool = self._pool
        if pool is not None:
            # not cancel_futures: a cancelled future would raise CancelledError in a task nobody
            # cancelled; the calls still queued run at once and raise ServerUnavailable instead
            pool.shutdown(wait=False)
        return pool

    def _finish_close(self, threads: ThreadPoolExecutor | None, *, join: bool) -> None:
        """Close the transport client (failing its calls in flight first), then, if ``join``,
        wait for ``threads`` to end."""
        self._client.close()
        if threads is not None and join:
            threads.shutdown(wait=True)

    def __enter__(self) -> InferenceClient:
        if self._closed:  # as a closed file: entering is refused, not the first call inside
            raise self._closed_error("")
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> InferenceClient:
        if self._closed:
            raise self._closed_error("")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _prepare(value: Any) -> Any:
    """An input as the transport takes it: a C-contiguous numpy array (CPU torch tensors by
    ``.numpy()``), or a CUDA tensor as it is. A 0-d array stays 0-d (``np.ascontiguousarray``
    makes it shape ``[1]``, which a model taking ``FP32[]`` refuses)."""
    if type(value) is not np.ndarray:
        if is_tensor(value):
            return value if is_device_tensor(value) else to_host(value)
        value = np.asarray(value)
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


def _outputs(response: InferenceResponse, inputs: Mapping[str, Any], copy: bool) -> dict[str, Any]:
    """``infer``'s result: the response's outputs, copies if ``copy`` (torch tensors for a CUDA
    request, on the device of its first CUDA input)."""
    device = device_of(inputs)
    if device is not None:
        return _on_device(response.outputs, device, copy)
    if copy:
        return {k: np.array(v) for k, v in response.outputs.items()}
    return dict(response.outputs)


def _on_device(outputs: Mapping[str, Any], device: Any, copy: bool) -> dict[str, Any]:
    """A CUDA request's outputs as torch tensors on ``device``; copies (synchronised) if ``copy``."""
    import torch  # loaded: the request held a CUDA tensor

    out: dict[str, Any] = {}
    for k, v in outputs.items():
        if not isinstance(v, torch.Tensor):  # a transport that returned host arrays
            out[k] = from_host(np.array(v)).to(device)  # BF16 bit patterns as bfloat16
        elif v.device != device:
            out[k] = v.to(device)
        else:
            out[k] = v.clone() if copy else v
    if copy and device.type == "cuda":  # the copies are done before the server may reuse its memory
        torch.cuda.current_stream(device).synchronize()
    return out
