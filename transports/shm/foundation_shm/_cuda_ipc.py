"""CUDA IPC for the shm transport (spec 15): the server's and the client's policy.

``ServerCuda`` decides whether a server accepts device tensors, opens each client's handles once
(cached per client) and drops them when the client goes, and returns device outputs by handle.
``ClientCuda`` sends device tensors by handle, opens the server's output handles, or falls back to
host shared memory. The driver calls are in ``_cuda_driver``, the memory and tensors in
``_cuda_memory``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType, InferenceRequest, InferenceResponse
from foundation_ml.errors import CudaUnavailable, InferenceError, InternalError, InvalidInput, TooLarge

from . import _layout as L
from ._codec import (
    MAX_REQUEST_ID,
    layout,
    request_id,
    request_payload_size,
    response_payload_size,
    sendable_params,
    text_and_params,
)
from ._cuda_desc import (
    FLAG_CUDA_IPC,
    CudaIpcRef,
    decoded,
    has_cuda_refs,
    write_mixed_request,
    write_mixed_response,
)
from ._cuda_driver import CudaError
from ._cuda_memory import (
    _Cache,
    _host_array,
    _OwnBuffer,
    _synchronize,
    _to_device,
    cuda_available,
    datatype_of,
    export_tensor,
    inside_mapping,
    is_device_tensor,
    tensor_on,
)
from ._options import FALLBACKS  # the cuda_fallback values, defined with the options

if TYPE_CHECKING:
    from ._answers import Answers
    from ._client import ShmClient

__all__ = [
    "NO_CUDA",
    "ClientCuda",
    "CudaError",
    "ServerCuda",
    "cuda_available",
    "datatype_of",
    "export_tensor",
    "is_device_tensor",
]

log = logging.getLogger("foundation_shm")
NO_CUDA = "CUDA IPC requested but no CUDA device"
_SERVER_CACHE = 256  # mappings per client (spec 15.4)
_CLIENT_CACHE = 64
_ALIGN = 256  # bytes: where each output starts in a channel's output buffer
_MIN_BUFFER = 2 << 20  # bytes: a channel's first output buffer on a device, at least


# --- the server side ----------------------------------------------------------------------------


class ServerCuda:
    """A server's CUDA IPC state: whether it accepts it, the per-client mappings, held outputs.

    ``mode``: None (default) accepts CUDA IPC when the handler declares ``device_tensors = True``
    (it takes torch CUDA tensors as inputs), torch is already imported and sees a device; True
    accepts it whenever there is a device (imports torch to find out); False refuses.
    """

    def __init__(self, mode: bool | None = None, handler: Any = None) -> None:
        self.mode = mode
        self.enabled = False
        self.reason = "this server refuses CUDA IPC (serve with cuda_ipc=True)"
        takes = bool(getattr(handler, "device_tensors", False))
        if mode is True or (mode is None and takes and "torch" in sys.modules):
            if cuda_available():
                import torch

                torch.cuda.init()  # type: ignore[no-untyped-call]  # before the loop thread wraps device memory
                self.enabled = True
            else:
                self.reason = NO_CUDA
        elif mode is None:
            self.reason = (
                "this server does not accept CUDA IPC (its handler does not declare device_tensors, "
                "or torch is not loaded; serve with cuda_ipc=True)"
            )
        # Channels that ever carried CUDA refs or the flag, until freed: every request on them comes
        # here (a repeated payload is decoded from the reader's cache, without the counter moving).
        self.channels: set[int] = set()
        self.decoded = 0  # _cuda_desc.decoded[0] when last called
        self._lock = threading.Lock()
        self._caches: dict[tuple[int, int], _Cache] = {}
        self._client_of: dict[int, tuple[int, int]] = {}
        self._buffers: dict[tuple[int, int], _OwnBuffer] = {}  # (channel, device): its outputs
        self._outgrown: dict[int, list[_OwnBuffer]] = {}  # a channel's smaller ones, kept till it goes
        self._devices: dict[int, set[int]] = {}
        self._opened: dict[int, list[tuple[Any, int]]] = {}  # this request's inputs, their versions
        self._wants: set[int] = set()
        self._warned: set[str] = set()  # models that changed a CUDA input in place

    @property
    def feature(self) -> int:
        return int(L.Feature.CUDA_IPC) if self.enabled else 0

    def on_request(self, channel: int, client: tuple[int, int], dec: Any) -> Any:
        """Called with each decoded request on a channel that has CUDA state or CUDA refs: opens
        the inputs' handles (cached per client). The channel's output buffers stay as they are
        (15.4 rule 3) unless another client now owns the channel."""
        with self._lock:
            self.decoded = decoded[0]
            self._devices.pop(channel, None)
            self._opened.pop(channel, None)
            self._wants.discard(channel)
            refs = has_cuda_refs(dec.inputs)
            if not refs and not dec.flags & FLAG_CUDA_IPC:
                return dec
            self.channels.add(channel)
            if not self.enabled:
                if not refs:
                    return dec  # the flag alone: outputs simply come back HOST
                raise CudaUnavailable(self.reason, model=dec.model, request_id=dec.request_id)
            owner = self._client_of.get(channel)
            if owner is not None and owner != client:
                # the channel changed hands between two looks of the loop (freed, then claimed):
                # the one before must neither keep its mappings nor read this one's outputs
                self._drop_locked(channel)
            self._client_of[channel] = client
            if dec.flags & FLAG_CUDA_IPC:
                self._wants.add(channel)
            if not refs:
                return dec
            cache = self._caches.get(client)
            if cache is None:
                cache = self._caches[client] = _Cache(_SERVER_CACHE)
            devices = self._devices[channel] = set()
            opened = self._opened[channel] = []
            inputs = dict(dec.inputs)
            for name, ref in dec.inputs.items():
                if type(ref) is CudaIpcRef:
                    t = inputs[name] = self._open(cache, ref, dec)
                    devices.add(ref.device)  # once opened: the error's reply synchronises these
                    opened.append((t, getattr(t, "_version", 0)))
        return dec._replace(inputs=inputs)

    def _open(self, cache: _Cache, ref: CudaIpcRef, dec: Any) -> Any:
        import torch

        if ref.device >= torch.cuda.device_count():
            raise InvalidInput(
                f"tensor {ref.name!r}: CUDA device {ref.device}, this server sees "
                f"{torch.cuda.device_count()}",
                model=dec.model,
                request_id=dec.request_id,
            )
        try:
            mapping = cache.get(ref.device, ref.handle)
        except CudaError as exc:
            raise InvalidInput(
                f"tensor {ref.name!r}: cannot open its CUDA IPC handle on device {ref.device}: {exc.name}",
                model=dec.model,
                request_id=dec.request_id,
            ) from None
        try:
            return tensor_on(mapping, ref)
        except InvalidInput as exc:
            exc.model, exc.request_id = dec.model, dec.request_id
            raise

    def handles(self, channel: int) -> bool:
        """Whether the response on ``channel`` goes through ``write`` (a CUDA request)."""
        return channel in self._devices or channel in self._wants

    def write(self, answers: Answers, ch: Any, r: Any, value: InferenceResponse | InferenceError) -> None:
        """Write the response to a CUDA request: outputs on a device by handle (copied into the
        channel's own buffer) when the client takes them, the others through the response area;
        every device the request touched is synchronised first (15.4 rule 2), errors too."""
        ch.wkey = None  # the response's payload is not the host fast path's
        devices = set(self._devices.get(ch.index, ()))
        if isinstance(value, InferenceError):
            _synchronize(devices)
            answers.write_error(ch, r, value)
            return
        self._check_inputs_unchanged(ch.index, value.model or r.model)
        wants = ch.index in self._wants
        tensors: list[Any] = []
        host: list[tuple[str, DataType, tuple[int, ...]]] = []
        arrays: list[np.ndarray] = []
        try:
            by_device: dict[int, list[tuple[str, Any]]] = {}
            out: Any
            for name, out in value.outputs.items():
                if is_device_tensor(out):
                    devices.add(out.device.index or 0)
                    if wants and out.numel():
                        by_device.setdefault(out.device.index or 0, []).append((name, out))
                        tensors.append(name)  # placed below
                        continue
                    out = _host_array(out)
                elif type(out) is not np.ndarray:
                    out = _host_array(out) if type(out).__module__.startswith("torch") else np.asarray(out)
                a = out if out.flags.c_contiguous else np.ascontiguousarray(out)
                spec = (name, DataType.from_numpy(a.dtype), a.shape)
                host.append(spec)
                arrays.append(a)
                tensors.append(spec)
            refs = {}
            for device, outs in by_device.items():
                refs.update(self._export(ch.index, device, outs))
            tensors = [refs[t] if type(t) is str else t for t in tensors]
        finally:  # an output that cannot be sent fails the answer, never before the devices are done
            _synchronize(devices)
        if len(tensors) > answers.limits.max_tensors:
            raise TooLarge(
                f"{len(tensors)} outputs (at most {answers.limits.max_tensors})", request_id=r.request_id
            )
        text, raw_params = text_and_params(value.parameters, r.request_id)
        places, end = layout(host, response_payload_size(len(tensors), len(text), len(raw_params)))
        if not answers.fits(ch, r, end):
            return
        it = iter(places)
        placed: list[Any] = []
        for t in tensors:
            placed.append(t if type(t) is CudaIpcRef else next(it))
        for place, arr in zip(places, arrays, strict=True):
            ch.resp[place.offset : place.offset + place.size] = arr.reshape(-1).view(np.uint8).data
        write_mixed_response(
            ch.resp,
            tensors=placed,
            request_id=r.request_id,
            model=value.model or r.model,
            version=value.version,
            text=text,
            params=raw_params,
        )

    def _export(self, channel: int, device: int, outs: list[tuple[str, Any]]) -> dict[str, CudaIpcRef]:
        """Copy ``outs`` (tensors on ``device``) into the channel's buffer there, each at an
        aligned offset, and describe them by the buffer's handle. The buffer grows (a new one)
        when they do not fit; the client finished with the old one's outputs before this request."""
        sizes = [t.numel() * t.element_size() for _, t in outs]
        total = sum(-(-n // _ALIGN) * _ALIGN for n in sizes)
        with self._lock:
            buf = self._buffers.get((channel, device))
            if buf is None or buf.size < total:
                size = max(total, _MIN_BUFFER, 2 * buf.size if buf is not None else 0)
                if buf is not None:  # its client may still have it open: not freed before it goes
                    self._outgrown.setdefault(channel, []).append(buf)
                buf = self._buffers[channel, device] = _OwnBuffer(
                    device, -(-size // _MIN_BUFFER) * _MIN_BUFFER
                )
        refs: dict[str, CudaIpcRef] = {}
        offset = 0
        for (name, t), n in zip(outs, sizes, strict=True):
            ref = CudaIpcRef(name, datatype_of(t), tuple(t.shape), device, buf.handle, offset, n)
            tensor_on(buf, ref).copy_(t)  # on the current stream; synchronised before the answer
            refs[name] = ref
            offset += -(-n // _ALIGN) * _ALIGN
        return refs

    def _check_inputs_unchanged(self, channel: int, model: str) -> None:
        """A handler that changed a CUDA input in place changed the client's own tensor (the input
        is the client's memory): said once per model, as a warning."""
        for t, version in self._opened.get(channel, ()):
            if getattr(t, "_version", 0) != version and model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "shm: model %r changed a CUDA IPC input in place, which changes the client's own "
                    "tensor; copy an input before changing it",
                    model,
                )

    def forget(self, channel: int) -> None:
        """The channel was freed or reclaimed: free its output buffers; when its client has no
        channel left, drop every mapping of that client (each closes once no tensor uses it)."""
        if channel not in self.channels:
            return
        with self._lock:
            self.channels.discard(channel)
            self._devices.pop(channel, None)
            self._opened.pop(channel, None)
            self._wants.discard(channel)
            self._drop_locked(channel)

    def _drop_locked(self, channel: int) -> None:
        for key in [k for k in self._buffers if k[0] == channel]:
            del self._buffers[key]
        self._outgrown.pop(channel, None)
        client = self._client_of.pop(channel, None)
        if client is not None and client not in self._client_of.values():
            cache = self._caches.pop(client, None)
            if cache is not None:
                log.info(
                    "shm: dropping %d CUDA IPC mapping(s) of client pid %d", len(cache.entries), client[0]
                )
                cache.clear()

    def clients(self) -> dict[tuple[int, int], int]:
        """Open mappings per client (pid, start time), for tests and stats."""
        with self._lock:
            return {k: len(c.entries) for k, c in self._caches.items()}

    def close(self) -> None:
        with self._lock:
            for cache in self._caches.values():
                cache.clear()
            self._caches.clear()
            self._client_of.clear()
            self._buffers.clear()
            self._outgrown.clear()
            self._devices.clear()
            self._opened.clear()
            self._wants.clear()
            self.channels.clear()


# --- the client side ----------------------------------------------------------------------------


class ClientCuda:
    """A client's CUDA IPC policy and its mappings of server outputs.

    ``mode``: None (default) uses CUDA IPC for CUDA tensors when the server advertises it, True
    requires CUDA here (``CudaUnavailable`` at connect otherwise), False always goes by host.
    ``fallback``: "error" raises ``CudaUnavailable`` where IPC cannot be used, "host" copies the
    device tensors through host shared memory and returns outputs on the inputs' device.
    """

    def __init__(self, mode: bool | None = None, fallback: str = "error") -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"cuda_fallback must be one of {FALLBACKS}, not {fallback!r}")
        self.mode = mode
        self.fallback = fallback
        self.refused: object = None  # the connection that answered CUDA_UNAVAILABLE
        if mode is True and not cuda_available():
            if fallback != "host":
                raise CudaUnavailable(NO_CUDA)
            log.warning("shm: %s; device tensors go through host shared memory", NO_CUDA)
            self.mode = False
        self._lock = threading.Lock()
        self._cache = _Cache(_CLIENT_CACHE)
        self._conn: object = None

    @staticmethod
    def claims(inputs: Mapping[str, Any]) -> bool:
        """True when ``inputs`` hold a device tensor (then ``infer`` here answers the request)."""
        for a in inputs.values():  # noqa: SIM110  (a loop: no generator on the host hot path)
            if type(a) is not np.ndarray and is_device_tensor(a):
                return True
        return False

    def infer(
        self, client: ShmClient, request: InferenceRequest, timeout: float | None, copy: bool
    ) -> InferenceResponse:
        """``client.infer`` of a request holding device tensors; ``copy``: outputs the caller owns
        (clones, complete on return), and the channel goes back to the pool at once."""
        device = next(a.device for a in request.inputs.values() if is_device_tensor(a))
        if self.mode is False:
            return self.by_host(client, request, timeout, device, copy)
        with client._cond:
            conn = client._connection()
        if not conn.ctl.u32[L.RegionField.FEATURES // 4] & L.Feature.CUDA_IPC or self.refused is conn:
            if self.fallback == "host":
                return self.by_host(client, request, timeout, device, copy)
            why = "refused it" if self.refused is conn else "does not advertise FDN_FEATURE_CUDA_IPC"
            raise CudaUnavailable(
                f"CUDA IPC requested but shm server {client.name!r} {why}; "
                "connect with cuda_fallback='host' to copy through host shared memory",
                model=request.model,
            )
        try:
            return self.by_handle(client, request, timeout, device, copy)
        except CudaUnavailable:
            if self.fallback != "host":
                raise
            self.refused = conn
            return self.by_host(client, request, timeout, device, copy)
        except CudaError as exc:  # no IPC handle for this memory (15.1)
            if self.fallback != "host":
                raise CudaUnavailable(f"CUDA IPC requested but {exc}", model=request.model) from None
            return self.by_host(client, request, timeout, device, copy)

    def by_host(
        self, client: ShmClient, request: InferenceRequest, timeout: float | None, device: Any, copy: bool
    ) -> InferenceResponse:
        """The fallback: device tensors to host, the host shm path, outputs back to ``device``."""
        inputs = {n: _host_array(a) if is_device_tensor(a) else a for n, a in request.inputs.items()}
        host = InferenceRequest(
            request.model,
            inputs,
            id=request.id,
            version=request.version,
            deadline_ns=request.deadline_ns,
            parameters=request.parameters,
            outputs=request.outputs,
        )
        resp = client.infer(host, timeout=timeout, copy_outputs=copy)
        resp.outputs = {n: _to_device(np.asarray(a), device) for n, a in resp.outputs.items()}
        return resp

    def by_handle(
        self, client: ShmClient, request: InferenceRequest, timeout: float | None, device: Any, copy: bool
    ) -> InferenceResponse:
        """The IPC path: device inputs by handle, device outputs opened from the server's handles."""
        deadline = client._deadline(request.deadline_ns, timeout)
        rid = request.id or next(client._ids)
        if type(rid) is not int or not 0 < rid <= MAX_REQUEST_ID:  # as the host path checks it
            rid = request_id(rid, request.model)
        keep: list[Any] = []  # contiguous copies, alive until the response (15.4 rule 1)
        tensors: list[Any] = []
        host: list[tuple[str, DataType, tuple[int, ...]]] = []
        arrays: list[np.ndarray] = []
        devices: set[int] = set()
        a: Any
        for name, a in request.inputs.items():
            if is_device_tensor(a) and a.numel():
                t = a.detach().contiguous()
                if inside_mapping(t):  # a server output taken as a view: no handle of ours
                    t = t.clone()
                keep.append(t)
                ref = export_tensor(name, t)
                devices.add(ref.device)
                tensors.append(ref)
                continue
            if is_device_tensor(a) or (type(a) is not np.ndarray and type(a).__module__.startswith("torch")):
                a = _host_array(a)
            a = np.asarray(a)
            a = a if a.flags.c_contiguous else np.ascontiguousarray(a)
            try:
                spec = (name, DataType.from_numpy(a.dtype), a.shape)
            except ValueError as exc:
                raise InvalidInput(str(exc), model=request.model, request_id=rid) from None
            host.append(spec)
            arrays.append(a)
            tensors.append(spec)
        params = sendable_params(request.parameters, rid) if request.parameters else b""
        refs, end = layout(host, request_payload_size(len(tensors), len(request.outputs), len(params)))
        it = iter(refs)
        placed = [t if type(t) is CudaIpcRef else next(it) for t in tensors]
        ch = client._take(deadline)
        devices |= ch.cuda_devices  # the last answer's views: done with before the server rewrites them
        answered = False
        try:
            client._ensure(ch, end)
            for place, arr in zip(refs, arrays, strict=True):
                ch.req[place.offset : place.offset + place.size] = arr.reshape(-1).view(np.uint8).data
            ch.wkey = None  # not the host fast path's payload
            write_mixed_request(
                ch.req,
                tensors=placed,
                request_id=rid,
                model=request.model,
                version=request.version,
                deadline_ns=deadline,
                outputs=request.outputs,
                params=params,
                flags=int(client.flags) | FLAG_CUDA_IPC,
            )
            ch.used = end
            _synchronize(devices)  # 15.4 rule 1: the inputs are complete before the request
            ch.cuda_ok = True
            try:
                resp = client._exchange(ch, rid, request.model, deadline, retry=True)
            finally:
                ch.cuda_ok = False
            ch.cuda_keep = None  # answered: the server is done with the inputs
            ch.cuda_devices = set()
            resp.outputs = self._outputs(ch.conn, resp.outputs, device, copy)
            if not copy:
                ch.cuda_devices = {t.device.index or 0 for t in resp.outputs.values() if is_device_tensor(t)}
            answered = True
            return resp
        finally:
            if not answered:  # a timeout or an interrupt: the server may still read the inputs (15.4
                ch.cuda_keep = keep  # rule 1), so their copies live on until the channel's next call
            client._give(ch, hold=answered and not copy)  # views: valid until the thread's next call
            del keep

    def _outputs(self, conn: object, outputs: Mapping[str, Any], device: Any, copy: bool) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        with self._lock:
            if conn is not self._conn:  # a new server instance: its handles are new
                self._cache.clear()
                self._conn = conn
            for name, a in outputs.items():
                if type(a) is CudaIpcRef:
                    try:
                        t = tensor_on(self._cache.get(a.device, a.handle), a)
                    except CudaError as exc:
                        raise InternalError(
                            f"output {name!r}: cannot open the server's CUDA IPC handle: {exc}"
                        ) from None
                    if copy:  # complete before the next request lets the server reuse the memory
                        t = t.clone()
                        if t.is_cuda:  # (the tests' fake devices are host memory)
                            torch.cuda.current_stream(t.device).synchronize()
                    out[name] = t
                else:
                    out[name] = _to_device(np.asarray(a), device)
        return out

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._conn = None
