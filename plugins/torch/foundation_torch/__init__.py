"""foundation-torch: the PyTorch model backend. Importing this package does not import torch."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["TorchBackend", "TorchModel", "__version__", "build_demo", "save_export", "save_torchscript"]

_LAZY = {
    "TorchBackend": "foundation_torch._backend",
    "save_torchscript": "foundation_torch._backend",
    "save_export": "foundation_torch._backend",
    "TorchModel": "foundation_torch._model",
    "build_demo": "foundation_torch.demo",
}


def __getattr__(name: str) -> Any:  # torch is imported on first use, never at discovery
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'foundation_torch' has no attribute {name!r}")
