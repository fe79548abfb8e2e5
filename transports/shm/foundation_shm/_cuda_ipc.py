"""CUDA IPC for the shm transport (spec 15): the names the rest of the package imports.

The server's policy (``ServerCuda``) is in ``_cuda_server``, the client's (``ClientCuda``) in
``_cuda_client``; the driver calls are in ``_cuda_driver``, the memory and tensors in
``_cuda_memory``. Tests that replace a function patch the module that calls it, not this one.
"""

from __future__ import annotations

from ._cuda_client import NO_CUDA, ClientCuda
from ._cuda_driver import CudaError
from ._cuda_memory import cuda_available, datatype_of, export_tensor, is_device_tensor
from ._cuda_server import ServerCuda

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
