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
from ._codec import encode_params, layout, request_payload_size, response_payload_size, text_and_params
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
    _Mapping,
    _synchronize,
    _to_device,
    cuda_available,
    datatype_of,
    export_tensor,
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
        self._held: dict[int, list[Any]] = {}
        self._devices: dict[int, set[int]] = {}
        self._opened: dict[int, list[_Mapping]] = {}  # the current request's input mappings
        self._wants: set[int] = set()

    @property
    def feature(self) -> int:
        return int(L.Feature.CUDA_IPC) if self.enabled else 0

    def on_request(self, channel: int, client: tuple[int, int], dec: Any) -> Any:
        """Called with each decoded request on a channel that has CUDA state or CUDA refs:
        drops the previous response's outputs, opens the inputs' handles (cached per client)."""
        with self._lock:
            self.decoded = decoded[0]
            self._held.pop(channel, None)
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
            if dec.flags & FLAG_CUDA_IPC:
                self._wants.add(channel)
            if not refs:
                return dec
            self._client_of[channel] = client
            cache = self._caches.get(client)
            if cache is None:
                cache = self._caches[client] = _Cache(_SERVER_CACHE)
            devices = self._devices[channel] = set()
            opened = self._opened[channel] = []
            inputs = dict(dec.inputs)
            for name, ref in dec.inputs.items():
                if type(ref) is CudaIpcRef:
                    inputs[name] = self._open(cache, ref, dec)
                    devices.add(ref.device)  # once opened: the error's reply synchronises these
                    opened.append(cache.entries[ref.device, ref.handle])
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
        """Write the response to a CUDA request: synchronise (15.4 rule 2), then outputs on a device
        by handle when the client takes them, the others through the response area."""
        ch.wkey = None  # the response's payload is not the host fast path's
        devices = set(self._devices.get(ch.index, ()))
        if isinstance(value, InferenceError):
            _synchronize(devices)
            answers.write_error(ch, r, value)
            return
        wants = ch.index in self._wants
        tensors: list[Any] = []
        host: list[tuple[str, DataType, tuple[int, ...]]] = []
        arrays: list[np.ndarray] = []
        held: list[Any] = []
        out: Any
        for name, out in value.outputs.items():
            if is_device_tensor(out):
                devices.add(out.device.index or 0)
                if wants and out.numel():
                    t = out.contiguous()
                    if self._imported(ch.index, t.data_ptr()):  # the client's own memory
                        t = t.clone()
                    try:
                        ref = export_tensor(name, t)
                    except CudaError:  # VMM memory (no IPC handle): export a copy
                        t = t.clone()
                        ref = export_tensor(name, t)
                    held.append(t)
                    tensors.append(ref)
                    continue
                out = _host_array(out)
            elif type(out) is not np.ndarray:
                out = _host_array(out) if type(out).__module__.startswith("torch") else np.asarray(out)
            a = out if out.flags.c_contiguous else np.ascontiguousarray(out)
            spec = (name, DataType.from_numpy(a.dtype), a.shape)
            host.append(spec)
            arrays.append(a)
            tensors.append(spec)
        _synchronize(devices)
        if len(tensors) > answers.limits.max_tensors:
            raise TooLarge(
                f"{len(tensors)} outputs (at most {answers.limits.max_tensors})", request_id=r.request_id
            )
        text, raw_params = text_and_params(value.parameters, r.request_id)
        refs, end = layout(host, response_payload_size(len(tensors), len(text), len(raw_params)))
        if not answers.fits(ch, r, end):
            return
        it = iter(refs)
        placed: list[Any] = []
        for t in tensors:
            placed.append(t if type(t) is CudaIpcRef else next(it))
        for place, arr in zip(refs, arrays, strict=True):
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
        with self._lock:
            if held:
                self._held[ch.index] = held

    def _imported(self, channel: int, ptr: int) -> bool:
        return any(m.ptr <= ptr < m.ptr + max(m.size, 1) for m in self._opened.get(channel, ()))

    def forget(self, channel: int) -> None:
        """The channel was freed or reclaimed: drop its outputs; when its client has no channel
        left, drop every mapping of that client (each closes once no tensor uses it)."""
        if channel not in self.channels:
            return
        with self._lock:
            self.channels.discard(channel)
            self._held.pop(channel, None)
            self._devices.pop(channel, None)
            self._opened.pop(channel, None)
            self._wants.discard(channel)
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
            self._held.clear()
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

    def infer(self, client: ShmClient, request: InferenceRequest, timeout: float | None) -> InferenceResponse:
        device = next(a.device for a in request.inputs.values() if is_device_tensor(a))
        if self.mode is False:
            return self.by_host(client, request, timeout, device)
        with client._cond:
            conn = client._connection()
        if not conn.ctl.u32[L.RegionField.FEATURES // 4] & L.Feature.CUDA_IPC or self.refused is conn:
            if self.fallback == "host":
                return self.by_host(client, request, timeout, device)
            why = "refused it" if self.refused is conn else "does not advertise FDN_FEATURE_CUDA_IPC"
            raise CudaUnavailable(
                f"CUDA IPC requested but shm server {client.name!r} {why}; "
                "connect with cuda_fallback='host' to copy through host shared memory",
                model=request.model,
            )
        try:
            return self.by_handle(client, request, timeout, device)
        except CudaUnavailable:
            if self.fallback != "host":
                raise
            self.refused = conn
            return self.by_host(client, request, timeout, device)
        except CudaError as exc:  # no IPC handle for this memory (15.1)
            if self.fallback != "host":
                raise CudaUnavailable(f"CUDA IPC requested but {exc}", model=request.model) from None
            return self.by_host(client, request, timeout, device)

    def by_host(
        self, client: ShmClient, request: InferenceRequest, timeout: float | None, device: Any
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
        resp = client.infer(host, timeout=timeout)
        resp.outputs = {n: _to_device(np.asarray(a), device) for n, a in resp.outputs.items()}
        return resp

    def by_handle(
        self, client: ShmClient, request: InferenceRequest, timeout: float | None, device: Any
    ) -> InferenceResponse:
        """The IPC path: device inputs by handle, device outputs opened from the server's handles."""
        deadline = client._deadline(request.deadline_ns, timeout)
        rid = request.id or next(client._ids)
        keep: list[Any] = []  # contiguous copies, alive until the response (15.4 rule 1)
        tensors: list[Any] = []
        host: list[tuple[str, DataType, tuple[int, ...]]] = []
        arrays: list[np.ndarray] = []
        devices: set[int] = set()
        a: Any
        for name, a in request.inputs.items():
            if is_device_tensor(a) and a.numel():
                t = a.detach().contiguous()
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
        params = encode_params(request.parameters) if request.parameters else b""
        refs, end = layout(host, request_payload_size(len(tensors), len(request.outputs), len(params)))
        it = iter(refs)
        placed = [t if type(t) is CudaIpcRef else next(it) for t in tensors]
        ch = client._take(deadline)
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
            resp = client._exchange(ch, rid, request.model, deadline, retry=True)
            resp.outputs = self._outputs(ch.conn, resp.outputs, device, client.copy_outputs)
            answered = True
            return resp
        finally:
            client._give(ch, hold=answered and not client.copy_outputs)  # outputs valid until next call
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
                        torch.cuda.current_stream(t.device).synchronize()
                    out[name] = t
                else:
                    out[name] = _to_device(np.asarray(a), device)
        return out

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._conn = None
