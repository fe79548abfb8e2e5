"""The retry plugin's hooks: registers the ``retry`` pattern (lazily) and its config section."""

from __future__ import annotations

from foundation_core import Registrar, SectionAdder, hookimpl


@hookimpl
def foundation_register_patterns(register: Registrar) -> None:
    register("retry", "foundation_retry._retry:retry_factory")


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("retry", "foundation_retry._policy:RetryPolicy")
