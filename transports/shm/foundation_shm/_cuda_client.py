"""CUDA IPC for the shm transport (spec 15): the client's policy.

``ClientCuda`` sends device tensors by handle, opens the server's output handles (one per channel
and device, kept), or falls back to host shared memory. The server's side is ``_cuda_server``; the
driver calls are in ``_cuda_driver``, the memory and tensors in ``_cuda_memory``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType, InferenceRequest, InferenceResponse
from foundation_ml._tensors import to_host
from foundation_ml.errors import CudaUnavailable, InternalError, InvalidInput

from . import _layout as L
from ._client_write import ensure
from ._codec import layout, request_payload_size, sendable_params
from ._cuda_desc import FLAG_CUDA_IPC, CudaIpcRef, write_mixed_request
from ._cuda_driver import CudaError
from ._cuda_memory import (
    _Mapping,
    _synchronize,
    _to_device,
    cuda_available,
    export_tensor,
    inside_mapping,
    is_device_tensor,
    open_mapping,
    tensor_on,
)
from ._gone import Lender, _GoneBeforeSending, again
from ._options import FALLBACKS  # the cuda_fallback values, defined with the options

if TYPE_CHECKING:
    from ._client import ShmClient

__all__ = ["NO_CUDA", "ClientCuda"]

log = logging.getLogger("foundation_shm")
NO_CUDA = "CUDA IPC requested but no CUDA device"  # the server's reason too


class ClientCuda:
    """A client's CUDA IPC policy and its mappings of server outputs.

    The server returns a channel's device outputs in one allocation per device, its own for that
    channel, reused until outputs outgrow it (spec 15.4 rule 3). So the client keeps open one
    mapping per channel and device, the buffer the channel's last answer named there: at most
    channels x devices, whatever the models, outputs and sizes, and only memory the server holds
    for those channels anyway; a buffer replaced by a larger one is let go at the answer that
    names the new one (closed once no view of it is left). No LRU: the buffers a client uses are
    the ones it keeps open, so none is opened twice (``cuIpcOpenMemHandle`` costs ~0.1 s).

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
        self._buffers: dict[tuple[int, int], _Mapping] = {}  # (channel, device): its output buffer
        self._conn: object = None

    @staticmethod
    def claims(inputs: Mapping[str, Any]) -> bool:
        """True when ``inputs`` hold a device tensor (then ``infer`` here answers the request)."""
        for a in inputs.values():  # noqa: SIM110  (a loop: no generator on the host hot path)
            if type(a) is not np.ndarray and is_device_tensor(a):
                return True
        return False

    def infer_once_more(
        self, client: ShmClient, request: InferenceRequest, rid: int, timeout: float | None, copy: bool
    ) -> InferenceResponse:
        """``infer``, sent once more (``_gone.again``) as ``client.infer`` sends host inputs, within
        the same deadline, if its server was gone before a handler saw it."""
        deadline = client._deadline(request.deadline_ns, timeout)
        try:
            return self.infer(client, request, rid, timeout, copy, client._pool)
        except _GoneBeforeSending as gone:
            r = request
            same = InferenceRequest(r.model, r.inputs, r.id, r.version, deadline, r.parameters, r.outputs)
            return again(
                client, lambda lender: self.infer(client, same, rid, timeout, copy, lender), gone, deadline
            )

    def infer(
        self,
        client: ShmClient,
        request: InferenceRequest,
        rid: int,
        timeout: float | None,
        copy: bool,
        lender: Lender,
    ) -> InferenceResponse:
        """``client.infer`` of a request holding device tensors, sent as request ``rid``;
        ``copy``: outputs the caller owns (clones, complete on return), and the channel goes back
        to the pool at once. By handle, its channel is ``lender``'s (see ``ShmClient._send``)."""
        device = next(a.device for a in request.inputs.values() if is_device_tensor(a))
        if self.mode is False:
            return self.by_host(client, request, rid, timeout, device, copy, lender)
        with client._cond:
            conn = client._connection()
        if not conn.ctl.u32[L.RegionField.FEATURES // 4] & L.Feature.CUDA_IPC or self.refused is conn:
            if self.fallback == "host":
                return self.by_host(client, request, rid, timeout, device, copy, lender)
            why = "refused it" if self.refused is conn else "does not advertise FDN_FEATURE_CUDA_IPC"
            raise CudaUnavailable(
                f"CUDA IPC requested but shm server {client.name!r} {why}; "
                "connect with cuda_fallback='host' to copy through host shared memory",
                model=request.model,
            )
        try:
            return self.by_handle(client, request, rid, timeout, device, copy, lender)
        except CudaUnavailable:
            if self.fallback != "host":
                raise
            self.refused = conn
            return self.by_host(client, request, rid, timeout, device, copy, lender)
        except CudaError as exc:  # no IPC handle for this memory (15.1)
            if self.fallback != "host":
                raise CudaUnavailable(f"CUDA IPC requested but {exc}", model=request.model) from None
            return self.by_host(client, request, rid, timeout, device, copy, lender)

    def by_host(
        self,
        client: ShmClient,
        request: InferenceRequest,
        rid: int,
        timeout: float | None,
        device: Any,
        copy: bool,
        lender: Lender,
    ) -> InferenceResponse:
        """The fallback: device tensors to host, the host shm path on a channel of ``lender``
        (``client._send``: one attempt, as by handle), outputs back to ``device``. Not through
        ``client.infer``: a call of its own, it sent a moved call once more again, a third time,
        and counted none of it (spec 10.3, 10.5)."""
        inputs = {n: to_host(a) if is_device_tensor(a) else a for n, a in request.inputs.items()}
        host = InferenceRequest(
            request.model,
            inputs,
            id=rid,
            version=request.version,
            deadline_ns=request.deadline_ns,
            parameters=request.parameters,
            outputs=request.outputs,
        )
        resp = client._send(host, rid, client._deadline(request.deadline_ns, timeout), copy, lender)
        resp.outputs = {n: _to_device(np.asarray(a), device) for n, a in resp.outputs.items()}
        return resp

    def by_handle(
        self,
        client: ShmClient,
        request: InferenceRequest,
        rid: int,
        timeout: float | None,
        device: Any,
        copy: bool,
        lender: Lender,
    ) -> InferenceResponse:
        """The IPC path: device inputs by handle, device outputs opened from the server's handles;
        the channel ``lender``'s."""
        deadline = client._deadline(request.deadline_ns, timeout)
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
                a = to_host(a)
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
        ch = lender.take(deadline)
        devices |= ch.cuda_devices  # the last answer's views: done with before the server rewrites them
        answered = False
        try:
            ensure(client, ch, end)
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
            resp.outputs = self._outputs(ch, resp.outputs, device, copy)
            if not copy:
                ch.cuda_devices = {t.device.index or 0 for t in resp.outputs.values() if is_device_tensor(t)}
            answered = True
            return resp
        finally:
            if not answered:  # no answer (a timeout, an interrupt): the server may still read the
                # inputs (15.4 rule 1), so their copies live on until the channel's next call; an
                # error it answered (or nothing sent) leaves nothing of the server's to wait for
                ch.cuda_keep = None if ch.idle() else keep
            lender.give(ch, hold=answered and not copy)  # views: valid until the thread's next call
            del keep

    def _outputs(self, ch: Any, outputs: Mapping[str, Any], device: Any, copy: bool) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        with self._lock:
            if ch.conn is not self._conn:  # a new server instance: its handles are new
                self._buffers.clear()
                self._conn = ch.conn
            for name, a in outputs.items():
                if type(a) is CudaIpcRef:
                    key = (ch.index, a.device)
                    try:
                        mapping = self._buffers.get(key)
                        if mapping is None or mapping.handle != a.handle:  # new, or grown
                            mapping = self._buffers[key] = open_mapping(a.device, a.handle)
                        t = tensor_on(mapping, a)
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

    def mappings(self) -> dict[tuple[int, int], tuple[bytes, int]]:
        """The server output buffers this client keeps open: (channel, device) -> (handle, size)."""
        with self._lock:
            return {key: (m.handle, m.size) for key, m in self._buffers.items()}

    def close(self) -> None:
        with self._lock:
            self._buffers.clear()
            self._conn = None
