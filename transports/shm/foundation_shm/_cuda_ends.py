"""What a server's CUDA IPC state lets go as a channel, its client or the server ends, and keeps."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ._cuda_cache import _ClientMappings
from ._cuda_memory import _OwnBuffer

__all__ = ["_CudaEnds"]

log = logging.getLogger("foundation_shm")


class _CudaEnds:
    """``ServerCuda``'s ends, a mixin: a channel freed or reclaimed (``forget``), the server
    stopping (``stopping``) or stopped (``close``); ``dropped``, which synchronises, is
    ``ServerCuda``'s."""

    # ServerCuda's, set in its __init__
    channels: set[int]
    _lock: threading.Lock
    _mappings: _ClientMappings
    _client_of: dict[int, tuple[int, int]]
    _buffers: dict[tuple[int, int], _OwnBuffer]
    _outgrown: dict[int, list[_OwnBuffer]]
    _devices: dict[int, set[int]]
    _opened: dict[int, list[tuple[Any, int]]]
    _wants: set[int]
    _kept: dict[tuple[int, int], tuple[set[int], list[tuple[Any, int]]]]

    def forget(self, channel: int, lease: int | None = None) -> None:
        """The channel was freed or reclaimed: free its output buffers; when its client has no
        channel left, drop every mapping of that client (each closes once no tensor uses it).

        ``lease``: the lease that just ended, on a reclaim (``_Liveness._reclaim``, under the
        channel's lock): a request of it still running (its dead client's, with the handler) keeps
        the mappings its inputs use, and its devices, until its answer comes (``dropped``): on a
        GPU its model's kernels may still read them after it let go of its tensors."""
        if channel not in self.channels:
            return
        with self._lock:
            if lease is not None:
                self._keep_locked(channel, lease)
            self.channels.discard(channel)
            self._devices.pop(channel, None)
            self._opened.pop(channel, None)
            self._mappings.release(channel)
            self._wants.discard(channel)
            self._drop_locked(channel)

    def _drop_locked(self, channel: int) -> None:
        for key in [k for k in self._buffers if k[0] == channel]:
            del self._buffers[key]
        self._outgrown.pop(channel, None)
        client = self._client_of.pop(channel, None)
        if client is not None and client not in self._client_of.values():
            dropped = self._mappings.drop_client(client)
            if dropped:
                log.info("shm: dropping %d CUDA IPC mapping(s) of client pid %d", dropped, client[0])

    def stopping(self, channel: int, lease: int) -> None:
        """The server stops (``ShmServer`` ends the channel's ``lease``, under the channel's lock):
        a request of that lease still running (its handler, or a batch, outlived stop's wait for
        the serving loop) keeps the mappings its inputs use, and its devices, until its answer
        comes (``dropped``): on a GPU its model's kernels may still read them after it let go of
        its tensors. A request that never answers keeps them until the process exits."""
        if channel not in self.channels:
            return
        with self._lock:
            self._keep_locked(channel, lease)

    def _keep_locked(self, channel: int, lease: int) -> None:
        held = self._mappings.held(channel)  # before release: the request's, not yet let go
        if held:
            self._kept[channel, lease] = (set(self._devices.get(channel, ())), held)

    def close(self) -> None:
        """The server stopped: every mapping and output buffer is let go, but those kept for a
        request still running (``stopping``, ``forget`` on a reclaim)."""
        with self._lock:
            self._mappings.clear()
            self._client_of.clear()
            self._buffers.clear()
            self._outgrown.clear()
            self._devices.clear()
            self._opened.clear()
            self._wants.clear()
            self.channels.clear()
