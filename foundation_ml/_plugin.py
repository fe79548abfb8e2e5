"""foundation_ml's own plugin: registers the ``inproc`` transport (lazily, no numpy at discovery)."""

from __future__ import annotations

from foundation_core import Registrar, hookimpl


@hookimpl
def foundation_register_transports(register: Registrar) -> None:
    register("inproc", "foundation_ml._inproc:InprocTransport")
