"""The hookimpls of foundation-logging: the ``logging`` section, set-up, tear-down and events.

Cheap to import: structlog and orjson are imported inside the hooks that need them.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from foundation_core import hookimpl

if TYPE_CHECKING:
    from foundation_core import Config, Hub, SectionAdder


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("logging", "foundation_logging._settings:LoggingSettings")


@hookimpl(wrapper=True, tryfirst=True)
def foundation_configure(config: Config, hub: Hub) -> Generator[None, None, None]:
    """Configure logging as ``hub``'s: in force while ``hub`` is the newest running hub that
    configured logging (see ``_setup``). A wrapper, so that logging is configured before the
    other plugins take the configuration (what they log doing so goes there), and so that a
    first configuration another plugin refuses leaves nothing of it in force: the hub then has
    no configuration, so its logging is closed and what was in force before comes back (a
    refused later one is undone by the hub, which gives every plugin the previous one again).
    The first wrapper (``tryfirst``): a wrapper of another plugin, registered after this one,
    would otherwise run around it, and its refusal come after this one had returned."""
    from ._setup import hub_runtime

    had = hub_runtime(hub)
    _configure(config, hub)
    try:
        yield
    except BaseException as refusal:
        runtime = hub_runtime(hub)
        if had is None and runtime is not None:
            try:
                runtime.close()
            except Exception as exc:  # (a flush to a full disk): the refusal stays the error
                refusal.add_note(f"closing the refused configuration's logging failed too: {exc!r}")
        raise


def _configure(config: Config, hub: Hub) -> None:
    from ._settings import LoggingSettings
    from ._setup import configure_hub_logging

    settings = config.sections.get("logging")
    settings = settings if isinstance(settings, LoggingSettings) else LoggingSettings()
    try:
        configure_hub_logging(hub, settings)
    except OSError as exc:  # the output file cannot be opened: name the key and where it was set
        from foundation_core.errors import ConfigError, ConfigProblem

        source = config.sources.get("logging.output", "default")
        message = f"cannot open {settings.output!r} for appending: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem("logging.output", message, source)]) from exc


@hookimpl(tryfirst=True)
def foundation_startup(hub: Hub) -> None:
    """Put ``hub``'s logging in force: it is the newest running hub now (it may have been
    configured before another hub started). First, so that the other plugins' start-up is
    logged there (and it shuts down after them)."""
    from ._setup import hub_started

    hub_started(hub)


@hookimpl
def foundation_shutdown(hub: Hub) -> None:
    """Close ``hub``'s logging only; if it was in force, the next running hub's comes back."""
    from ._setup import hub_runtime

    runtime = hub_runtime(hub)
    if runtime is not None:
        runtime.close()


@hookimpl
def foundation_on_plugin_error(plugin: str, hook: str | None, error: BaseException) -> None:
    from . import _events

    _events.plugin_error(plugin, hook, error)


@hookimpl
def foundation_on_retry(
    name: str, attempt: int, delay: float, error: BaseException | None, result: Any
) -> None:
    from . import _events

    _events.retry(name, attempt, delay, error, result)


@hookimpl
def foundation_on_circuit_change(
    name: str, old_state: str, new_state: str, failure_rate: float, calls: int
) -> None:
    from . import _events

    _events.circuit_change(name, old_state, new_state, failure_rate, calls)


@hookimpl
def foundation_on_rate_limited(name: str, retry_after: float) -> None:
    from . import _events

    _events.rate_limited(name, retry_after)


@hookimpl
def foundation_on_server_start(name: str, transport: str, models: Sequence[str]) -> None:
    from . import _events

    _events.server_start(name, transport, models)


@hookimpl
def foundation_on_server_stop(name: str, transport: str, reason: str) -> None:
    from . import _events

    _events.server_stop(name, transport, reason)
