"""The rate limit plugin's hooks: registers the ``rate_limit`` pattern (lazily) and its section."""

from __future__ import annotations

from foundation_core import Registrar, SectionAdder, hookimpl


@hookimpl
def foundation_register_patterns(register: Registrar) -> None:
    register("rate_limit", "foundation_rate_limit._wrap:rate_limit_factory")


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("rate_limit", "foundation_rate_limit._policy:RateLimitPolicy")
