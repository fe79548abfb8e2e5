"""CUDA IPC for the shm transport (spec 15): the server's policy.

``ServerCuda`` decides whether a server accepts device tensors, opens each client's handles once
(cached per client, within ``cuda_cache_bytes`` in all) and drops them when the client goes, and
returns device outputs by handle,
copied into a buffer of the channel's own; what it lets go as a channel or the server ends is
``_cuda_ends``. The client's side is ``_cuda_client``; the driver calls
are in ``_cuda_driver``, the memory and tensors in ``_cuda_memory``, the mapping cache in
``_cuda_cache``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType, InferenceResponse
from foundation_ml._tensors import to_host
from foundation_ml.errors import CudaUnavailable, InferenceError, InvalidInput, TooLarge

from . import _layout as L
from ._codec import layout, response_payload_size, text_and_params
from ._cuda_cache import _ClientMappings
from ._cuda_client import NO_CUDA
from ._cuda_desc import FLAG_CUDA_IPC, CudaIpcRef, decoded, has_cuda_refs, write_mixed_response
from ._cuda_driver import CudaError
from ._cuda_ends import _CudaEnds
from ._cuda_memory import (
    _OwnBuffer,
    _synchronize,
    cuda_available,
    datatype_of,
    is_device_tensor,
    tensor_on,
)
from ._options import CUDA_CACHE_BYTES

if TYPE_CHECKING:
    from ._answers import Answers

__all__ = ["ServerCuda"]

log = logging.getLogger("foundation_shm")
_SERVER_CACHE = 256  # mappings per client (spec 15.4)
_ALIGN = 256  # bytes: where each output starts in a channel's output buffer
_MIN_BUFFER = 2 << 20  # bytes: a channel's first output buffer on a device, at least
SAME_PROCESS = (
    "CUDA IPC handles do not open in the process that exported them, and this client is the "
    "shm server's own process (pid {pid}): send device tensors through host memory (connect with "
    "cuda_fallback='host')"
)


def _exported_here(client: tuple[int, int]) -> bool:
    """Whether ``client`` (pid, start time) is this process: the driver refuses to open a handle
    in the process that exported it (CUDA_ERROR_INVALID_CONTEXT), the client's inputs' handles and
    the server's outputs' alike. (The tests' fake device memory opens anywhere: it says no.)"""
    return client[0] == os.getpid()


class ServerCuda(_CudaEnds):
    """A server's CUDA IPC state: whether it accepts it, the per-client mappings, held outputs.

    ``mode``: None (default) accepts CUDA IPC when the handler declares ``device_tensors = True``
    (it takes torch CUDA tensors as inputs), torch is already imported and sees a device; True
    accepts it whenever there is a device (imports torch to find out); False refuses.
    ``cache_bytes``: at most this many bytes of clients' allocations kept open between requests,
    all clients together (the ``cuda_cache_bytes`` option; ``_ClientMappings`` has the rules).
    """

    def __init__(
        self, mode: bool | None = None, handler: Any = None, cache_bytes: int = CUDA_CACHE_BYTES
    ) -> None:
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
        self._mappings = _ClientMappings(_SERVER_CACHE, cache_bytes)
        self._too_big = False  # a mapping larger than cache_bytes was said (once)
        self._client_of: dict[int, tuple[int, int]] = {}
        self._buffers: dict[tuple[int, int], _OwnBuffer] = {}  # (channel, device): its outputs
        self._outgrown: dict[int, list[_OwnBuffer]] = {}  # a channel's smaller ones, kept till it goes
        self._devices: dict[int, set[int]] = {}
        # the inputs of each channel's request in flight (till answered), their versions
        self._opened: dict[int, list[tuple[Any, int]]] = {}
        self._wants: set[int] = set()
        self._warned: set[str] = set()  # models that changed a CUDA input in place
        # requests still running when their channel's lease ended (a reclaim of a dead client's
        # channel, or the server's stop), by (channel, lease): the devices and the mappings their
        # inputs use, kept (whatever the cache drops) until their answer, dropped, synchronises.
        # By lease too: a reclaimed channel may be claimed, used and reclaimed again meanwhile
        self._kept: dict[tuple[int, int], tuple[set[int], list[tuple[Any, int]]]] = {}

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
            self._mappings.release(channel)  # normally at its answer; a stale one was never written
            self._wants.discard(channel)
            refs = has_cuda_refs(dec.inputs)
            if not refs and not dec.flags & FLAG_CUDA_IPC:
                return dec
            self.channels.add(channel)
            if not self.enabled:
                if not refs:
                    return dec  # the flag alone: outputs simply come back HOST
                raise CudaUnavailable(self.reason, model=dec.model, request_id=dec.request_id)
            here = _exported_here(client)  # then its handles, and ours, do not open: by host
            if refs and here:
                raise CudaUnavailable(
                    SAME_PROCESS.format(pid=client[0]), model=dec.model, request_id=dec.request_id
                )
            owner = self._client_of.get(channel)
            if owner is not None and owner != client:
                # the channel changed hands between two looks of the loop (freed, then claimed):
                # the one before must neither keep its mappings nor read this one's outputs
                self._drop_locked(channel)
            self._client_of[channel] = client
            if dec.flags & FLAG_CUDA_IPC and not here:
                self._wants.add(channel)
            if not refs:
                return dec
            devices = self._devices[channel] = set()
            opened = self._opened[channel] = []
            inputs = dict(dec.inputs)
            try:
                for name, ref in dec.inputs.items():
                    if type(ref) is CudaIpcRef:
                        t = inputs[name] = self._open(channel, client, ref, dec)
                        devices.add(ref.device)  # once opened: the error's reply synchronises these
                        opened.append((t, getattr(t, "_version", 0)))
            except BaseException:
                # no handler gets these inputs, so the mappings opened so far are no request's: a
                # lease that ends before the error's answer (a parked channel never gets one)
                # keeps nothing for it (the answer still synchronises the devices)
                self._opened.pop(channel, None)
                self._mappings.release(channel)
                raise
        return dec._replace(inputs=inputs)

    def _open(self, channel: int, client: tuple[int, int], ref: CudaIpcRef, dec: Any) -> Any:
        import torch

        if ref.device >= torch.cuda.device_count():
            raise InvalidInput(
                f"tensor {ref.name!r}: CUDA device {ref.device}, this server sees "
                f"{torch.cuda.device_count()}",
                model=dec.model,
                request_id=dec.request_id,
            )
        try:
            mapping = self._mappings.open(channel, client, ref.device, ref.handle, ref.offset + ref.size)
        except CudaError as exc:
            raise InvalidInput(
                f"tensor {ref.name!r}: cannot open its CUDA IPC handle on device {ref.device}: {exc.name}",
                model=dec.model,
                request_id=dec.request_id,
            ) from None
        if not self._too_big and self._mappings.max_bytes and mapping.size > self._mappings.max_bytes:
            self._too_big = True
            log.warning(
                "shm: a CUDA IPC allocation of %d bytes (tensor %r of model %r) is larger than "
                "cuda_cache_bytes (%d): it is opened again for each request that sends it; serve "
                "with a larger cuda_cache_bytes to keep it open",
                mapping.size,
                ref.name,
                dec.model,
                self._mappings.max_bytes,
            )
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
        every device the request touched is synchronised first (15.4 rule 2), errors too. Then
        the request's inputs are let go: its mappings may be dropped from the cache (and those
        over its bounds are), as the server reads them no more."""
        try:
            self._write(answers, ch, r, value)
        finally:
            with self._lock:
                self._opened.pop(ch.index, None)
                self._mappings.release(ch.index)

    def _write(self, answers: Answers, ch: Any, r: Any, value: InferenceResponse | InferenceError) -> None:
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
                    out = to_host(out)
                elif type(out) is not np.ndarray:
                    out = to_host(out) if type(out).__module__.startswith("torch") else np.asarray(out)
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

    def clients(self) -> dict[tuple[int, int], int]:
        """Cached mappings per client (pid, start time), for tests and stats."""
        with self._lock:
            return self._mappings.counts()

    def stats(self) -> dict[str, int]:
        """The mapping cache: how many mappings of clients' allocations it holds, their bytes, and
        its bound (``cuda_cache_bytes``); and the requests still running whose lease ended (a
        reclaim, a stop) that keep their inputs' mappings till their answer (``kept``), with the
        bytes of those the cache no longer holds (``kept_bytes``: open outside its bound).
        ``ShmServer.stats`` shows it under ``cuda_ipc``."""
        with self._lock:
            m = self._mappings
            cached, seen, kept_bytes = m.cached(), set(), 0
            for _, held in self._kept.values():
                for mapping, size in held:
                    if id(mapping) not in cached and id(mapping) not in seen:
                        seen.add(id(mapping))
                        kept_bytes += size
            return {
                "mappings": len(m),
                "mapped_bytes": m.bytes,
                "cache_bytes": m.max_bytes,
                "kept": len(self._kept),
                "kept_bytes": kept_bytes,
            }

    def dropped(self, channel: int, lease: int) -> None:
        """An answer to a request of ``lease`` on ``channel`` came after that lease ended (the
        channel reclaimed, or the server stopped) and was dropped: its request's devices are
        synchronised (rule 2: its reads of the client's memory are done), then the mappings it
        used are let go (each closes once no tensor uses it). A later lease's request on the
        channel, a new client's, keeps its own. Never raises: the handler's ``respond`` is no
        place for an error of a request nobody waits for. (Called once ``Answers.answer`` saw
        the lease ended, under the channel's lock, and let go of that lock: ``forget`` and
        ``stopping`` keep under it as they end the lease, so the look without ``self._lock`` sees
        what they kept; the synchronise holds no lock, so neither the channel's new client nor the
        heartbeat waits for a dead client's model's kernels.)"""
        if (channel, lease) not in self._kept:
            return
        with self._lock:
            kept = self._kept.pop((channel, lease), None)
        if kept is None:
            return
        devices, held = kept
        try:
            _synchronize(devices)
        except Exception as exc:  # a failed synchronise (a CUDA error): the mappings go all the same
            log.warning(
                "shm: cannot synchronise CUDA device(s) %s after a dropped answer: %r", sorted(devices), exc
            )
        del held  # (the last references, once the handler's tensors are gone: closed)
