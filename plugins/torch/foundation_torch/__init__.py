"""foundation-torch: the PyTorch model backend. Importing this package does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._backend import TorchBackend, save_export, save_torchscript
    from ._model import TorchModel
    from .demo import build_demo

__version__ = "0.1.0"

__all__ = [
    "TorchBackend",
    "TorchModel",
    "build_demo",
    "save_export",
    "save_torchscript",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TorchBackend": "._backend",
        "save_torchscript": "._backend",
        "save_export": "._backend",
        "TorchModel": "._model",
        "build_demo": ".demo",
    },
)
