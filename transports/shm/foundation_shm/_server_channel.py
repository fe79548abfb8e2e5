"""The server's side of one channel (its words, mapped data segment and caches) and ``respond``."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import posix_ipc

from foundation_ml import InferenceResponse
from foundation_ml.errors import InferenceError

from . import _layout as L
from ._codec import TensorRef
from ._readers import RequestReader
from ._segments import Segment

if TYPE_CHECKING:
    from ._server_dispatch import _Dispatch

__all__ = ["_Channel", "_Responder"]

log = logging.getLogger("foundation_shm")
_C = L.ChannelField


class _Channel:
    """The server's view of one channel: word indices, the mapped data segment, its lease."""

    __slots__ = (
        "base",
        "busy",
        "busy_word",
        "cseq",
        "data",
        "gen",
        "gen_word",
        "index",
        "lease",
        "lock",
        "owner",
        "owner_word",
        "reader",
        "req",
        "req_cap",
        "resp",
        "resp_cap",
        "sem",
        "served_word",
        "sleeping_word",
        "sseq",
        "start_word",
        "wkey",
        "wval",
    )

    def __init__(self, index: int, sem: posix_ipc.Semaphore) -> None:
        self.index = index
        self.base = L.CHANNELS_OFFSET + index * L.CHANNEL_SIZE
        self.cseq = (self.base + _C.CLIENT_SEQ) // 8
        self.sseq = (self.base + _C.SERVER_SEQ) // 8
        self.gen_word = (self.base + _C.DATA_GEN) // 8
        self.owner_word = (self.base + _C.OWNER_PID) // 4
        self.start_word = (self.base + _C.OWNER_START) // 8
        self.sleeping_word = (self.base + _C.CLIENT_SLEEPING) // 4
        self.busy_word = (self.base + _C.SERVER_BUSY) // 4
        self.served_word = (self.base + _C.SERVED) // 8
        self.sem = sem
        self.busy = False
        self.lease = 0
        self.lock = threading.Lock()
        self.data: Segment | None = None
        self.gen = 0
        self.owner = (0, 0)  # (owner_pid, owner_start_time) read just before the segment was mapped
        self.req: memoryview | None = None
        self.resp: memoryview | None = None
        self.req_cap = self.resp_cap = 0
        self.reader: RequestReader | None = None
        self.wkey: tuple[Any, ...] | None = None  # the last response's shape, whose payload is in place
        self.wval: tuple[list[TensorRef], int, list[np.ndarray]] = ([], 0, [])

    def shrunk(self, server: str, owner: int) -> bool:
        """Whether the client shrank its data segment under the server (a SIGBUS caught on it:
        the mapping holds zero pages now); logged once per mapping."""
        data = self.data
        if data is None or not data.faulted():
            return False
        if not data.warned:
            data.warned = True
            log.warning(
                "shm %s channel %d: client pid %d shrank its data segment %s under the server "
                "(a SIGBUS, caught); the channel is parked until the client goes",
                server,
                self.index,
                owner,
                data.name,
            )
        return True

    def owned_by(self, pid: int, start: int) -> bool:
        """Whether the client whose data segment is mapped still owns the channel: the same pid,
        and the same start time, or 0 (it gave the channel back: spec 10.1). A previous owner may
        leave ``data_gen`` at any value, so that the next owner's generation equals the one
        mapped: the generation alone cannot tell that the channel changed hands."""
        mapped_pid, mapped_start = self.owner
        return pid == mapped_pid and start in (mapped_start, 0)

    def forget_segment(self) -> None:
        """The channel changed hands: its next request maps the new owner's segment. Unmapped now
        unless a request is with the handler (whose answer ``Answers.answer`` drops: the owner
        differs); then only its reader goes, which sends that next request down the general path
        (_map)."""
        if self.busy:
            self.reader = None
        else:
            self.unmap()

    def unmap(self) -> None:
        if self.data is not None:
            self.req = self.resp = None
            self.reader = None
            self.wkey, self.wval = None, ([], 0, [])  # drop the views before unmapping
            self.data.close()
            self.data = None
            self.gen = 0


class _Responder:
    """The ``respond`` callable handed to the handler with one request: answers it exactly once."""

    __slots__ = ("channel", "done", "lease", "model", "request_id", "seq", "server")

    def __init__(
        self,
        server: _Dispatch,
        channel: _Channel,
        seq: int,
        request_id: int,
        model: str,
        lease: int | None = None,
    ) -> None:
        self.server = server
        self.channel = channel
        self.seq = seq
        self.request_id = request_id
        self.model = model
        # the channel's lease when the request was taken (its answer is dropped once it ended)
        self.lease = channel.lease if lease is None else lease
        self.done = False

    def __call__(self, value: InferenceResponse | InferenceError) -> None:
        if self.done:
            log.warning("request %d (%s): respond called twice; ignored", self.request_id, self.model)
            return
        self.done = True
        self.server._answer(self, value)
