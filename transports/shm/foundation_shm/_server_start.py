"""The shm server's start: its open files claimed, a live server refused, its objects and region made."""

from __future__ import annotations

import logging
import os
import random
import time

from . import _layout as L
from ._answers import Answers
from ._codec import Limits
from ._cuda_ipc import ServerCuda
from ._fd_limit import OpenFiles, claim_open_files
from ._liveness import ServerLock, start_time
from ._log_throttle import LogThrottle
from ._objects import remove_objects
from ._options import ServeOptions
from ._region import read_region, region_alive
from ._segments import Segment, create_semaphore
from ._server_channel import _Channel
from ._start_lock import name_taken

__all__ = ["_Start"]

log = logging.getLogger("foundation_shm")
_R = L.RegionField


class _Start:
    """``ShmServer``'s start, a mixin: the steps its ``__init__`` takes before its threads run."""

    # ShmServer's, set in its __init__
    name: str
    limits: Limits
    data_crc: bool
    _cuda: ServerCuda
    _lock: ServerLock
    _raised_log: LogThrottle

    def _check_open_files(self, channels: int) -> OpenFiles:
        """Each client's data segment the server maps holds a descriptor: claim them for
        ``channels`` clients (the soft open-file limit raised to what every live server needs; the
        claim released at stop), and warn when the hard limit keeps it lower (a client past it
        would find its requests unanswered until its deadline)."""
        claim = claim_open_files(channels)
        limit, needed = claim.limit, claim.needed
        if limit < needed:
            others = f" (with the {claim.others} of this process's other shm servers)" if claim.others else ""
            log.warning(
                "shm %s: %d channels%s need up to %d open files, and this process may open %d "
                "(ulimit -n, its hard limit): clients connected past that cannot be served; raise "
                "the hard limit or serve fewer channels",
                self.name,
                channels,
                others,
                needed,
                limit,
            )
        return claim

    def _refuse_a_live_server(self) -> None:
        """We hold the lock, yet the region may name a live server all the same (its lock file
        went missing): refuse the name rather than take it from under that server."""
        live = read_region(self.name)
        if region_alive(live) and live["pid"] != os.getpid():
            self._lock.release()
            lock_file = L.lock_file(self.name)
            raise name_taken(self.name, live, lock_file, f"although its lock file {lock_file} was missing")

    def _create(self, opts: ServeOptions) -> None:
        """Remove the name's stale objects, create the server's own and write the region header;
        if any of it fails, remove what was made and let the lock go."""
        mode = opts.mode
        try:
            failed: list[tuple[str, str]] = []  # we hold the lock: leftovers are stale
            stale = read_region(self.name)
            removed = remove_objects(self.name, keep_lock_file=True, failed=failed)
            if L.control_name(self.name).lstrip("/") in removed:  # its region outlived it: not stopped
                log.warning(
                    "shm %s: removed %d stale object(s) of an earlier server of this name%s, gone "
                    "without stopping (killed or crashed): %s",
                    self.name,
                    len(removed),
                    f" (pid {stale['pid']}, {stale['state']})" if stale else "",
                    ", ".join(sorted(removed)),
                )
            if failed:
                raise PermissionError(
                    f"stale objects of {self.name!r} cannot be removed: "
                    + "; ".join(f"/dev/shm/{e}: {why}" for e, why in failed)
                    + " (another user's? `foundation shm clean` as their owner removes them)"
                )
            self._mutex = create_semaphore(L.mutex_name(self.name), mode, 1)
            self._bell = create_semaphore(L.doorbell_name(self.name), mode, 0)
            self._channels = [
                _Channel(i, create_semaphore(L.channel_sem_name(self.name, i), mode, 0))
                for i in range(opts.channels)
            ]
            self._ctl = Segment.create(
                L.control_name(self.name),
                L.CHANNELS_OFFSET + opts.channels * L.CHANNEL_SIZE,
                mode,
                guard=True,
            )
            self._u32, self._u64 = self._ctl.u32, self._ctl.u64
            self._answers = Answers(self.name, self._ctl, self._cuda, self.limits, self._raised_log)
            self._answer = self._answers.answer  # what _Responder calls: one bound method, no extra call
            self._write_header(opts)
        except BaseException:
            try:
                remove_objects(self.name, keep_lock_file=True, failed=[])
            finally:
                self._lock.release()  # whatever is left, the name is not held by a failed start
            raise

    # --- region --------------------------------------------------------------------------------

    def _write_header(self, opts: ServeOptions) -> None:
        pid = os.getpid()
        features = (L.Feature.DATA_CRC if self.data_crc else 0) | self._cuda.feature
        L.REGION.pack_into(
            self._ctl.buf,
            0,
            0,  # magic last
            L.PROTOCOL_VERSION,
            L.PROTOCOL_MINOR,
            L.REGION_HEADER_SIZE,
            int(features),
            L.RegionState.STARTING,
            pid,
            start_time(pid),
            0,
            time.monotonic_ns(),
            opts.heartbeat_ms,
            0,
            opts.channels,
            L.CHANNEL_SIZE,
            L.CHANNELS_OFFSET,
            opts.max_request_bytes,
            opts.max_tensors,
            L.MAX_NDIM,
            0,
            0,
            opts.spin_us,
            random.getrandbits(64),
            opts.default_capacity,
            0,
            self.name.encode(),
        )
        self._ctl.u32[_R.MAGIC // 4] = L.REGION_MAGIC
        self._ctl.u32[_R.STATE // 4] = L.RegionState.READY
