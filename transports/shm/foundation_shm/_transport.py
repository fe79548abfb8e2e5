"""``ShmTransport``: the ``shm`` entry of the transport registry (serve and connect by server name)."""

from __future__ import annotations

from typing import Any, ClassVar

from foundation_ml import RequestHandler, Transport

from . import _layout as L
from ._client import ShmClient
from ._layout import server_name
from ._liveness import lock_state
from ._region import read_region, region_dying
from ._server import ShmServer
from ._start_lock import name_taken

__all__ = ["ShmTransport"]


class ShmTransport(Transport):
    """Same-host transport over POSIX shared memory; ``address`` is a server name (``[A-Za-z0-9_]``,
    optionally ``shm://name``).

    ``serve`` options: ``channels`` (32), ``spin_us`` (200), ``heartbeat_ms`` (100), ``mode``
    (0o600; 0o660 lets a group in), ``max_request_bytes`` (4 GiB), ``max_tensors`` (64),
    ``default_capacity`` (1 MiB per area), ``data_crc`` (False), ``cuda_ipc`` (None: accept CUDA
    IPC when the handler declares ``device_tensors``; True; False: refuse; see docs/cuda_ipc.md).
    ``connect`` options: ``channels`` (4 concurrent calls per client), ``spin_us`` (250),
    ``capacity`` (server's default), ``copy_outputs`` (False: outputs are views valid until the
    calling thread's next call on this client), ``timeout`` (None), ``connect_timeout`` (2 s), ``data_crc``,
    ``cuda_ipc`` (None: torch CUDA tensors by handle when the server offers it; True: require CUDA;
    False: by host), ``cuda_fallback`` ("error", or "host": copy them through host memory),
    ``max_response_bytes`` (4 GiB: a larger response fails TOO_LARGE, its area not grown).
    Defaults and valid ranges: ``ServeOptions`` and ``ConnectOptions`` (``_options``); the ``shm``
    config section sets them from configuration.
    """

    name: ClassVar[str] = "shm"

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> ShmServer:
        return ShmServer(address, handler, **options)

    def connect(self, address: str, **options: Any) -> ShmClient:
        return ShmClient(address, **options)

    def check_address(self, address: str) -> None:
        server_name(address)

    def check_serve(self, address: str) -> None:
        """``check_address``, then ``ServerNameTaken`` (a ``FileExistsError``) if a live server
        holds the name's lock (a killed one whose threads still exit holding it is no refusal:
        ``serve`` waits for it)."""
        name = server_name(address)
        if lock_state(L.lock_file(name)) == "held":
            region = read_region(name)
            if region_dying(region) is not None:
                return
            raise name_taken(name, region, L.lock_file(name))
