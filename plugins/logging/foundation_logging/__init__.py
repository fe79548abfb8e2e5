"""foundation-logging: structured logging for Foundation (structlog, orjson JSON lines).

``get_logger`` and ``configure_logging`` import structlog on first use, so importing this package
(which plugin discovery does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._context import bind_context, bound_context, clear_context, get_context, unbind_context
    from ._processors import REDACTED, is_sensitive
    from ._settings import DEFAULT_REDACT, LoggingSettings
    from ._setup import LoggingRuntime, configure_logging

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REDACT",
    "REDACTED",
    "LoggingRuntime",
    "LoggingSettings",
    "bind_context",
    "bound_context",
    "clear_context",
    "configure_logging",
    "get_context",
    "get_logger",
    "is_sensitive",
    "unbind_context",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "bind_context": "._context",
        "bound_context": "._context",
        "clear_context": "._context",
        "get_context": "._context",
        "unbind_context": "._context",
        "REDACTED": "._processors",
        "is_sensitive": "._processors",
        "DEFAULT_REDACT": "._settings",
        "LoggingSettings": "._settings",
        "LoggingRuntime": "._setup",
        "configure_logging": "._setup",
    },
)


def get_logger(*args: Any, **initial_values: Any) -> Any:
    """structlog's logger, going through Foundation's pipeline once it is configured."""
    import structlog

    return structlog.get_logger(*args, **initial_values)
