"""The circuit breaker plugin's hooks: the pattern (lazy), its config section, ``foundation breakers``."""

from __future__ import annotations

from foundation_core import CommandRegistrar, Registrar, SectionAdder, hookimpl


@hookimpl
def foundation_register_patterns(register: Registrar) -> None:
    register("circuit_breaker", "foundation_circuit_breaker._wrap:circuit_breaker_factory")


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("circuit_breaker", "foundation_circuit_breaker._policy:CircuitBreakerPolicy")


@hookimpl
def foundation_register_commands(cli: CommandRegistrar) -> None:
    parser = cli.add_command(
        "breakers",
        "foundation_circuit_breaker._cli:breakers_main",
        help="list circuit breakers with state and counts",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
