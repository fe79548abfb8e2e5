"""Foundation's rare events (retries, circuit changes, plugin errors, servers) as log lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from ._render import safe_repr

__all__ = ["circuit_change", "plugin_error", "rate_limited", "retry", "server_start", "server_stop"]

_LOGGER_NAME = "foundation"


def _log(level: str, event: str, **fields: Any) -> None:
    # Before anything configured structlog (this plugin at configure time, or the application),
    # its default would print to stdout, into a command's --json output: write nothing then.
    # A plugin that fails before that is reported by the hub's warning on stderr.
    if not structlog.is_configured():
        return
    getattr(structlog.get_logger(_LOGGER_NAME), level)(event, **fields)


def _error_fields(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {}
    try:
        text = str(error)
    except Exception as exc:  # an exception whose __str__ raises still gets its line
        text = f"<str() raised {type(exc).__name__}>"
    return {"error_type": type(error).__name__, "error": text}


def plugin_error(plugin: str, hook: str | None, error: BaseException) -> None:
    _log("error", "plugin.error", plugin=plugin, hook=hook, **_error_fields(error))


def retry(name: str, attempt: int, delay: float, error: BaseException | None, result: Any) -> None:
    fields = _error_fields(error)
    if error is None:
        fields["result"] = safe_repr(result)
    _log("warning", "retry.scheduled", pattern=name, attempt=attempt, delay=delay, **fields)


def circuit_change(name: str, old_state: str, new_state: str, failure_rate: float, calls: int) -> None:
    level = "warning" if new_state == "open" else "info"
    _log(
        level,
        "circuit.changed",
        pattern=name,
        old_state=old_state,
        new_state=new_state,
        failure_rate=failure_rate,
        calls=calls,
    )


def rate_limited(name: str, retry_after: float) -> None:
    _log("warning", "rate_limit.refused", pattern=name, retry_after=retry_after)


def server_start(name: str, transport: str, models: Sequence[str]) -> None:
    _log("info", "server.started", server=name, transport=transport, models=list(models))


def server_stop(name: str, transport: str, reason: str) -> None:
    _log("info", "server.stopped", server=name, transport=transport, reason=reason)
