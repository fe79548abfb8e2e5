"""Configure structlog and the standard library's logging once, from the ``logging`` section.

``configure_logging(settings)`` builds one processor chain, one sink and one stdlib handler and
returns a ``LoggingRuntime`` whose ``close()`` puts back what was there before. Calling it again
replaces the pipeline in place, safely while other threads log.

Several hubs may run at once (a library starting its own hub inside an application's, a test
inside a test). structlog and the root logger are the process's, so one configuration is in
force: that of the newest running hub that configured logging (the order of
``foundation_core.running_hubs()``, the hubs started and not yet shut down; a hub's runtime is
put in force when it is configured, and again when it starts). Each hub's runtime
stays open while another is in force; a hub shutting down closes only its own, and when its
was the one in force, the next hub's comes back (its sink, level and format). A runtime that
``configure_logging`` made outside any hub comes back after the hubs' (it is the oldest).
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import structlog
from structlog.stdlib import ProcessorFormatter, add_logger_name

from foundation_core import running_hubs

from ._bound import FoundationBoundLogger, error_text
from ._live import PROCESSORS, ROUTE, install
from ._processors import Redactor, Stamp
from ._render import JsonBytes, JsonText, SafeConsole, plain_traceback, safe_repr
from ._settings import LoggingSettings
from ._sinks import FileSink, SinkFactory, StreamSink, open_sink

if TYPE_CHECKING:
    from foundation_core import Hub

__all__ = [
    "LoggingRuntime",
    "configure_hub_logging",
    "configure_logging",
    "current_runtime",
    "hub_runtime",
    "hub_started",
]

_current: LoggingRuntime | None = None  # the runtime in force
_by_hub: weakref.WeakKeyDictionary[Hub, LoggingRuntime] = weakref.WeakKeyDictionary()  # open ones
_outside: LoggingRuntime | None = None  # configure_logging's own, outside any hub (open)
# what was there before a runtime was put in force: structlog's configuration (None: it was not
# configured) and the root logger's level and handlers; put back when none is in force again
_saved: tuple[dict[str, Any] | None, tuple[int, list[logging.Handler]]] | None = None
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


# a record's own attributes, not its ``extra``: those of a new record, and the two that
# ``logging.Formatter.format`` sets on it (another handler of the root logger, a file handler or
# pytest's capture, formats a record before ours sees it); ``extra`` may name none of them
EventDict = MutableMapping[str, Any]
_RECORD_KEYS = frozenset(logging.LogRecord("name", 0, "pathname", 0, "msg", (), None).__dict__) | {
    "message",
    "asctime",
}


def _record_extra(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog's ``ExtraAdder``: a stdlib record's ``extra`` keys become keys of its line. Not
    ``message`` (the event again) nor ``asctime``, which a handler before ours left on it."""
    record = event_dict.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS:
                event_dict[key] = value
    return event_dict


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
    """What ``configure_logging`` built: its sink, processor chain and stdlib handler.

    ``close()`` flushes and closes its sink; if it was in force, the runtime of the newest
    running hub that configured logging comes back (else ``configure_logging``'s own, else the
    state from before the first runtime was put in force). A runtime replaced by a later
    configuration of its hub (or a later ``configure_logging``) is closed already."""

    def __init__(self, settings: LoggingSettings, sink: FileSink | StreamSink) -> None:
        self.settings = settings
        self.sink = sink
        self.level = settings.level.lower()
        shared, final, stdlib_renderer = _chains(settings, sink)
        self.chain: tuple[Any, ...] = (*shared, *final)
        self.handler: _SinkHandler | None = None
        if settings.stdlib:
            formatter = ProcessorFormatter(
                foreign_pre_chain=[add_logger_name, _record_extra, *shared],
                processors=[ProcessorFormatter.remove_processors_meta, stdlib_renderer],
            )
            self.handler = _SinkHandler(sink, logging.getLevelName(self.level.upper()))
            self.handler.setFormatter(formatter)
        self._closed = False

    def close(self) -> None:
        with _lock:
            if self._closed:
                return
            self._closed = True
            _forget(self)
            if _current is self:
                heir = _heir()
                if heir is not None:
                    _put_in_force(heir)
                else:
                    _put_back(self)
            self.sink.close(_current.sink if _current is not None else None)  # late lines: there
            if ROUTE.sink is self.sink:  # none in force: cached loggers' late lines to stderr
                ROUTE.point(self.sink)

    def _replaced_by(self, successor: LoggingRuntime) -> None:
        """A later configuration of its owner took over: late lines go to its sink."""
        self._closed = True
        self.sink.close(successor.sink)


def current_runtime() -> LoggingRuntime | None:
    """The runtime in force (None while none is)."""
    return _current


def hub_runtime(hub: Hub) -> LoggingRuntime | None:
    """The open runtime that ``hub`` configured, in force or not."""
    return _by_hub.get(hub)


def hub_started(hub: Hub) -> None:
    """``hub`` started: it is the newest running hub now, so its runtime, if it has one, is put
    in force, unless a newer running hub's is (hubs started in two threads at once). A hub
    configured before another hub started, and started after it, had its runtime put aside by
    the other's (or, the other shut down meanwhile, no runtime in force at all)."""
    with _lock:
        runtime = _by_hub.get(hub)
        if runtime is not None and runtime is not _current and _takes_force(hub, None):
            _put_in_force(runtime)


def _forget(runtime: LoggingRuntime) -> None:
    global _outside
    if _outside is runtime:
        _outside = None
    for hub, held in list(_by_hub.items()):
        if held is runtime:
            del _by_hub[hub]


def _heir() -> LoggingRuntime | None:
    """The runtime that is in force when the one in force closes: the newest running hub's
    (a hub shutting down is still running: its runtime is forgotten first), else the one
    ``configure_logging`` made outside any hub."""
    for hub in running_hubs():
        held = _by_hub.get(hub)
        if held is not None:
            return held
    return _outside


def _takes_force(owner: Hub | None, previous: LoggingRuntime | None) -> bool:
    """Whether a new runtime of ``owner`` is put in force now: unless ``owner`` is a running hub
    that a newer running hub with logging configured follows (it waits for its turn)."""
    if owner is None or (previous is not None and previous is _current):
        return True
    hubs = running_hubs()  # newest first
    if not any(hub is owner for hub in hubs):
        return True  # not started yet: it is about to be the newest
    for hub in hubs:
        if hub is owner:
            return True
        if hub in _by_hub:
            return False
    return True


def _put_in_force(runtime: LoggingRuntime) -> None:
    """Make every logger, cached or not, and the root logger use ``runtime``."""
    global _current, _saved
    old = _current
    stale = None
    root = logging.getLogger()
    if old is None:
        # None: structlog was not configured. Restoring its defaults with configure() would
        # leave it "configured", and Foundation's events would then be printed by structlog's
        # defaults (on stdout, into a command's --json output) until logging is configured again
        config = structlog.get_config() if structlog.is_configured() else None
        _saved = (config, (root.level, list(root.handlers)))
        stale = ROUTE.sink  # the sink of a runtime closed since (None: the first configuration)
    install(list(runtime.chain), runtime.sink, runtime.level)  # cached loggers follow too
    structlog.configure(
        processors=PROCESSORS,
        wrapper_class=FoundationBoundLogger,
        logger_factory=SinkFactory(ROUTE),
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    old_handler = old.handler if old is not None else None
    if runtime.handler is not None:
        kept = [h for h in root.handlers if h is not old_handler and not _writes_to_console(h)]
        root.handlers[:] = [*kept, runtime.handler]  # one slice assignment: loggers see old or new
        root.setLevel(runtime.level.upper())
    elif old_handler is not None and old_handler in root.handlers and _saved is not None:
        root.handlers[:] = _saved[1][1]  # stdlib no longer routed: as before ours
        root.setLevel(_saved[1][0])
    _current = runtime
    if stale is not None and stale is not runtime.sink:  # a line that picked its method: here
        stale.close(runtime.sink)
    if old is not None and not old._closed and old is not _outside and old not in _by_hub.values():
        old._replaced_by(runtime)  # its hub is gone, never shut down: nothing will close it


def _put_back(runtime: LoggingRuntime) -> None:
    """``runtime``, the last in force, closes: what was there before the first comes back."""
    global _current, _saved
    saved, _saved, _current = _saved, None, None
    if saved is None:
        return
    config, (level, handlers) = saved
    root = logging.getLogger()
    if runtime.handler is not None and runtime.handler in root.handlers:
        root.handlers[:] = handlers
        root.setLevel(level)
    if config is None:  # not configured before: so again (see _put_in_force)
        structlog.reset_defaults()
    else:
        structlog.configure(**config)


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
    """Install the pipeline for ``settings`` (defaults when None), replacing the one an earlier
    call installed (a hub's configuration stays open, and comes back when this one closes).

    Safe while other threads log: the new pipeline is built first, then put in place, and only
    then is the old one's sink closed; a line that reaches the old sink afterwards is written to
    the new one. No line is ever written by structlog's defaults in between. If the output cannot
    be opened (``OSError``), nothing changes. Loggers cached under an earlier configuration, also
    one closed since, follow this one (see ``_live``).
    """
    return configure_hub_logging(None, settings)


def configure_hub_logging(owner: Hub | None, settings: LoggingSettings | None = None) -> LoggingRuntime:
    """``configure_logging`` for ``owner`` (what the plugin's ``foundation_configure`` calls):
    it replaces ``owner``'s earlier runtime, and is in force unless ``owner`` is running and a
    newer running hub configured logging (then it comes in force when that one shuts down)."""
    global _outside
    settings = settings or LoggingSettings()
    with _lock:
        sink = open_sink(settings.output, reopen=settings.reopen)
        try:
            runtime = LoggingRuntime(settings, sink)
        except BaseException:
            sink.close()
            raise
        previous = _outside if owner is None else _by_hub.get(owner)
        in_force = _takes_force(owner, previous)
        if owner is None:
            _outside = runtime
        else:
            _by_hub[owner] = runtime
        if in_force:
            _put_in_force(runtime)
        if previous is not None:
            previous._replaced_by(runtime)
    return runtime
