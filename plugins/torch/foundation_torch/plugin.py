"""The hookimpls of foundation-torch: registers the ``torch`` model backend (lazily: no torch import)."""

from __future__ import annotations

from foundation_core import Registrar, hookimpl


@hookimpl
def foundation_register_model_backends(register: Registrar) -> None:
    register("torch", "foundation_torch._backend:TorchBackend")
