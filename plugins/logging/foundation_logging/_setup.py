"""Configure structlog and the standard library's logging once, from the ``logging`` section.

``configure_logging(settings)`` builds one processor chain, one sink and one stdlib handler and
returns a ``LoggingRuntime`` whose ``close()`` restores what was there before.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.stdlib import ExtraAdder, ProcessorFormatter, add_logger_name

from ._processors import Redactor, Stamp
from ._render import JsonBytes, JsonText
from ._settings import LoggingSettings
from ._sinks import FileSink, SinkFactory, StreamSink, open_sink

__all__ = ["LoggingRuntime", "configure_logging", "current_runtime"]

_current: LoggingRuntime | None = None


class _SinkHandler(logging.Handler):
    """A stdlib handler that renders through structlog's chain and writes to our sink."""

    def __init__(self, sink: FileSink | StreamSink, level: int) -> None:
        super().__init__(level)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.write_text(self.format(record))
        except Exception:
            self.handleError(record)


def _exc_info(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Render ``exc_info`` as a traceback string; a dict test when there is none (the usual case)."""
    if "exc_info" in event_dict:
        return structlog.processors.format_exc_info(logger, method_name, event_dict)  # type: ignore[return-value]
    return event_dict


def _writes_to_console(handler: logging.Handler) -> bool:
    """A handler ours replaces: one writing to stderr or stdout (what ``basicConfig`` installs).
    Others (files, test capture, queues) keep receiving records."""
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and handler.stream in {sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__}
    )


def _encode_line(logger: Any, method_name: str, line: str) -> bytes:
    return line.encode("utf-8", "backslashreplace") + b"\n"


class LoggingRuntime:
    """What ``configure_logging`` installed; ``close()`` flushes and restores the previous state."""

    def __init__(self, settings: LoggingSettings, sink: FileSink | StreamSink) -> None:
        self.settings = settings
        self.sink = sink
        self.handler: _SinkHandler | None = None
        self._saved_structlog = structlog.get_config()
        root = logging.getLogger()
        self._saved_root = (root.level, list(root.handlers))

    def close(self) -> None:
        global _current
        root = logging.getLogger()
        if self.handler is not None and self.handler in root.handlers:
            level, handlers = self._saved_root
            root.handlers[:] = handlers
            root.setLevel(level)
        structlog.configure(**self._saved_structlog)
        self.sink.close()
        if _current is self:
            _current = None


def current_runtime() -> LoggingRuntime | None:
    """The runtime installed last and not yet closed."""
    return _current


def _chains(settings: LoggingSettings, sink: FileSink | StreamSink) -> tuple[list[Any], Any, Any]:
    """(shared pre-processors, structlog final renderer(s), stdlib text renderer).

    The hot-path processors are passed as bound methods: calling an instance looks ``__call__``
    up on every line, a bound method does not.
    """
    shared: list[Any] = [Stamp().__call__]
    if settings.format == "json":
        shared.append(_exc_info)
        shared.append(Redactor(settings.redact).__call__)
        final: list[Any] = [JsonBytes().__call__] if isinstance(sink, FileSink) else [JsonText()]
        return shared, final, JsonText()
    shared.append(Redactor(settings.redact).__call__)
    colors = isinstance(sink, StreamSink) and _isatty(sink)
    console = structlog.dev.ConsoleRenderer(colors=colors)
    final = [console, _encode_line] if isinstance(sink, FileSink) else [console]
    return shared, final, structlog.dev.ConsoleRenderer(colors=colors)


def _isatty(sink: StreamSink) -> bool:
    try:
        return bool(sink.stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(settings: LoggingSettings | None = None) -> LoggingRuntime:
    """Install the pipeline for ``settings`` (defaults when None), replacing any earlier one."""
    global _current
    settings = settings or LoggingSettings()
    if _current is not None:
        _current.close()
    sink = open_sink(settings.output)
    runtime = LoggingRuntime(settings, sink)
    shared, final, stdlib_renderer = _chains(settings, sink)
    level = settings.level.lower()
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=SinkFactory(sink),
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    if settings.stdlib:
        formatter = ProcessorFormatter(
            foreign_pre_chain=[add_logger_name, ExtraAdder(), *shared],
            processors=[ProcessorFormatter.remove_processors_meta, stdlib_renderer],
        )
        handler = _SinkHandler(sink, logging.getLevelName(level.upper()))
        handler.setFormatter(formatter)
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not _writes_to_console(h)] + [handler]
        root.setLevel(level.upper())
        runtime.handler = handler
    _current = runtime
    return runtime
