"""The fallback plugin's hooks: registers the ``fallback`` pattern (lazily) and its config section."""

from __future__ import annotations

from foundation_core import Registrar, SectionAdder, hookimpl


@hookimpl
def foundation_register_patterns(register: Registrar) -> None:
    register("fallback", "foundation_fallback._fallback:fallback_factory")


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("fallback", "foundation_fallback._policy:FallbackPolicy")
