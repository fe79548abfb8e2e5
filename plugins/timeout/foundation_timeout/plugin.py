"""The timeout plugin's hooks: registers the ``timeout`` pattern (lazily) and its config section."""

from __future__ import annotations

from foundation_core import Registrar, SectionAdder, hookimpl

from ._policy import TimeoutPolicy


@hookimpl
def foundation_register_patterns(register: Registrar) -> None:
    register("timeout", "foundation_timeout._wrap:timeout_factory")


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("timeout", TimeoutPolicy)
