"""The timeout plugin's hooks: registers the ``timeout`` pattern (lazily) and its config section."""

from __future__ import annotations

from foundation_core import Registrar, SectionAdder, hookimpl


@hookimpl
def foundation_register_patterns(register: Registrar) -> None:
    register("timeout", "foundation_timeout._wrap:timeout_factory")


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("timeout", "foundation_timeout._policy:TimeoutPolicy")
