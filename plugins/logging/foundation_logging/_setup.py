"""Configure structlog and the standard library's logging once, from the ``logging`` section.

``configure_logging(settings)`` builds one processor chain, one sink and one stdlib handler and
returns a ``LoggingRuntime`` whose ``close()`` restores what was there before. Calling it again
replaces the pipeline in place, safely while other threads log.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog
from structlog.stdlib import ExtraAdder, ProcessorFormatter, add_logger_name

from ._bound import FoundationBoundLogger, error_text
from ._live import PROCESSORS, ROUTE, install
from ._processors import Redactor, Stamp
from ._render import JsonBytes, JsonText, SafeConsole, plain_traceback, safe_repr
from ._settings import LoggingSettings
from ._sinks import FileSink, SinkFactory, StreamSink, open_sink

__all__ = ["LoggingRuntime", "configure_logging", "current_runtime"]

_current: LoggingRuntime | None = None
_lock = threading.RLock()  # one configure_logging or close at a time


class _SinkHandler(logging.Handler):
    """A stdlib handler that renders through structlog's chain and writes to our sink."""

    def __init__(self, sink: FileSink | StreamSink, level: int) -> None:
        super().__init__(level)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            try:
                line = self.format(record)
            except Exception:
                line = self.format(_unformatted(record))
            self._sink.write_text(line)
        except Exception:
            self.handleError(record)


def _unformatted(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` whose message cannot be made (``"%s %s"`` with one argument, ``"%d"``
    with text, a ``msg`` whose ``str`` raises): the line is still written, with its ``msg``
    unformatted and ``format_error`` / ``format_args`` saying what went wrong. Re-raises when the
    message was not the trouble."""
    try:
        record.getMessage()
    except Exception as exc:
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg = record.msg if isinstance(record.msg, str) else safe_repr(record.msg)
        copy.args = None
        copy.format_error = error_text(exc)
        copy.format_args = safe_repr(record.args)
        return copy
    raise


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
    """What ``configure_logging`` installed; ``close()`` flushes and restores the state from before
    the first ``configure_logging`` (a runtime replaced by a later call is closed already)."""

    def __init__(
        self,
        settings: LoggingSettings,
        sink: FileSink | StreamSink,
        saved_structlog: dict[str, Any] | None,
        saved_root: tuple[int, list[logging.Handler]],
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.handler: _SinkHandler | None = None
        self._saved_structlog = saved_structlog
        self._saved_root = saved_root
        self._closed = False

    def close(self) -> None:
        global _current
        with _lock:
            if self._closed:
                return
            self._closed = True
            root = logging.getLogger()
            if self.handler is not None and self.handler in root.handlers:
                level, handlers = self._saved_root
                root.handlers[:] = handlers
                root.setLevel(level)
            if self._saved_structlog is None:  # not configured before: so again (see configure_logging)
                structlog.reset_defaults()
            else:
                structlog.configure(**self._saved_structlog)
            self.sink.close()
            if ROUTE.sink is self.sink:  # cached loggers: late lines to stderr, as the sink's are
                ROUTE.point(self.sink)
            if _current is self:
                _current = None

    def _replaced_by(self, successor: LoggingRuntime) -> None:
        """A later ``configure_logging`` took over: late lines go to its sink, nothing is restored."""
        self._closed = True
        self.sink.close(successor.sink)


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
    console = SafeConsole(structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=plain_traceback))
    final = [console, _encode_line] if isinstance(sink, FileSink) else [console]
    stdlib = SafeConsole(structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=plain_traceback))
    return shared, final, stdlib


def _isatty(sink: StreamSink) -> bool:
    try:
        return bool(sink.stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(settings: LoggingSettings | None = None) -> LoggingRuntime:
    """Install the pipeline for ``settings`` (defaults when None), replacing any earlier one.

    Safe while other threads log: the new pipeline is built first, then put in place, and only
    then is the old one's sink closed; a line that reaches the old sink afterwards is written to
    the new one. No line is ever written by structlog's defaults in between. If the output cannot
    be opened (``OSError``), nothing changes. Loggers cached under an earlier configuration, also
    one closed since, follow this one (see ``_live``).
    """
    global _current
    settings = settings or LoggingSettings()
    with _lock:
        previous = _current
        sink = open_sink(settings.output, reopen=settings.reopen)
        if previous is not None:  # close() restores what was there before the first one
            saved_structlog, saved_root = previous._saved_structlog, previous._saved_root
        else:
            root = logging.getLogger()
            # None: structlog was not configured. Restoring its defaults with configure() would
            # leave it "configured", and Foundation's events would then be printed by structlog's
            # defaults (on stdout, into a command's --json output) until logging is configured again
            saved_structlog = structlog.get_config() if structlog.is_configured() else None
            saved_root = (root.level, list(root.handlers))
        runtime = LoggingRuntime(settings, sink, saved_structlog, saved_root)
        shared, final, stdlib_renderer = _chains(settings, sink)
        level = settings.level.lower()
        stale = ROUTE.sink  # the sink of a runtime closed since (None: the first configuration)
        install([*shared, *final], sink, level)  # loggers cached under an earlier one follow too
        structlog.configure(
            processors=PROCESSORS,
            wrapper_class=FoundationBoundLogger,
            logger_factory=SinkFactory(ROUTE),
            context_class=dict,
            cache_logger_on_first_use=True,
        )
        root = logging.getLogger()
        old = previous.handler if previous is not None else None
        if settings.stdlib:
            formatter = ProcessorFormatter(
                foreign_pre_chain=[add_logger_name, ExtraAdder(), *shared],
                processors=[ProcessorFormatter.remove_processors_meta, stdlib_renderer],
            )
            handler = _SinkHandler(sink, logging.getLevelName(level.upper()))
            handler.setFormatter(formatter)
            kept = [h for h in root.handlers if h is not old and not _writes_to_console(h)]
            root.handlers[:] = [*kept, handler]  # one slice assignment: loggers see old or new
            root.setLevel(level.upper())
            runtime.handler = handler
        elif old is not None and old in root.handlers:  # stdlib no longer routed: as before ours
            root.handlers[:] = saved_root[1]
            root.setLevel(saved_root[0])
        _current = runtime
        if previous is not None:
            previous._replaced_by(runtime)
        elif stale is not None:  # a line that picked up the closed sink's method: to the new one
            stale.close(sink)
    return runtime
