"""The hook contract between Foundation's core and its plugins.

Registration hooks receive a ``register`` callback (the style of llm) so one plugin can provide
several things while the core keeps ownership of the registries. Lifecycle hooks run once per
hub. Event hooks fire on rare events only (a retry, a circuit changing state, a plugin failing),
never per request, so implementing them costs nothing on the hot path.

A hookimpl may accept any subset of a spec's arguments (pluggy matches them by name), so new
arguments can be added to an event without breaking existing plugins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._markers import hookspec

if TYPE_CHECKING:
    from ._cli import CommandRegistrar
    from ._config import Config, SectionAdder
    from ._hub import Hub
    from ._registry import Registrar

# --- registration -----------------------------------------------------------------------------


@hookspec
def foundation_register_patterns(register: Registrar) -> None:
    """Register resilience patterns: ``register("retry", factory)``.

    ``factory(policy) -> wrapper``, where ``wrapper(fn) -> protected_fn`` works on sync and
    ``async def`` callables. The factory may also be a lazy ``"module:attr"`` string.
    """


@hookspec
def foundation_register_transports(register: Registrar) -> None:
    """Register transports: ``register("shm", "foundation_shm:ShmTransport")``."""


@hookspec
def foundation_register_model_backends(register: Registrar) -> None:
    """Register model backends: ``register("torch", "foundation_torch:TorchBackend")``."""


@hookspec
def foundation_register_commands(cli: CommandRegistrar) -> None:
    """Add subcommands to the ``foundation`` CLI: ``cli.add_command(name, handler, help=...)``."""


# --- configuration and lifecycle --------------------------------------------------------------


@hookspec
def foundation_config_sections(add: SectionAdder) -> None:
    """Declare config sections: ``add("retry", RetrySettings)`` with a frozen attrs class."""


@hookspec(firstresult=True)
def foundation_load_config(
    sections: Mapping[str, type[Any]],
    files: Sequence[str],
    overrides: Sequence[str],
    strict: bool,
) -> Config | None:
    """Build the whole configuration from layered sources; the first non-None result wins.

    ``files`` are explicit config files, ``overrides`` command-line ``key.path=value`` pairs.
    The config plugin implements this; without one the core uses each section's defaults.
    """


@hookspec
def foundation_configure(config: Config, hub: Hub) -> None:
    """Receive the frozen configuration of ``hub``, before start-up; raise ``ConfigError`` to
    refuse it.

    Set the plugin's state from ``config``, so that a second delivery is harmless: when a plugin
    refuses a new configuration, those that took it are given the previous one again. State
    that is the process's (logging, signal handlers) belongs to ``hub``: several hubs may run at
    once, and the newest one's is in force (see ``running_hubs``)."""


@hookspec
def foundation_startup(hub: Hub) -> None:
    """Start: open resources. Runs in plugin order; a failure halfway shuts down the started."""


@hookspec
def foundation_shutdown(hub: Hub) -> None:
    """Stop: release resources. Runs in reverse start-up order, for every started plugin."""


# --- rare events (observability) --------------------------------------------------------------


@hookspec
def foundation_on_plugin_error(plugin: str, hook: str | None, error: BaseException) -> None:
    """A plugin failed to load or raised in a hook and was isolated."""


@hookspec
def foundation_on_retry(
    name: str, attempt: int, delay: float, error: BaseException | None, result: Any
) -> None:
    """A retry policy is about to sleep ``delay`` seconds before attempt ``attempt + 1``."""


@hookspec
def foundation_on_circuit_change(
    name: str, old_state: str, new_state: str, failure_rate: float, calls: int
) -> None:
    """A circuit breaker changed state (closed, open, half_open)."""


@hookspec
def foundation_on_rate_limited(name: str, retry_after: float) -> None:
    """A rate limiter refused a call."""


@hookspec
def foundation_on_server_start(name: str, transport: str, models: Sequence[str]) -> None:
    """An inference server started serving ``models`` on ``transport`` under ``name``."""


@hookspec
def foundation_on_server_stop(name: str, transport: str, reason: str) -> None:
    """An inference server stopped."""
