"""The objects every configuration hands structlog, changed in place so that every logger follows.

structlog's ``cache_logger_on_first_use`` fixes, at a logger's first line, what it was built
from: the bound-logger class (the level), the processor list and the wrapped logger (the sink).
Were they new objects on each configuration, a module's ``log = structlog.get_logger()`` first
used under one hub would keep that hub's level, format and output for good: once the hub shut
down, its lines went to stderr, also while a later hub logged to a file. So each configuration
installs into the same three objects:

- ``FoundationBoundLogger`` (``_bound``): the class, whose level methods ``set_level`` replaces;
- ``PROCESSORS``: a list of one processor, ``run_chain``, which runs the current chain, a tuple
  replaced whole and read once per line, so a line goes through one pipeline or the other,
  never half of each (the list itself stays as structlog's ``testing.capture_logs`` expects:
  it may change it in place, and cached loggers see that too);
- ``ROUTE`` (``_sinks.Route``): the wrapped logger, whose methods are the current sink's.
"""

from __future__ import annotations

from typing import Any

from ._bound import set_level
from ._sinks import FileSink, Route, StreamSink

__all__ = ["PROCESSORS", "ROUTE", "install", "run_chain"]

_chain: tuple[Any, ...] = ()


def run_chain(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog's processor loop over the chain installed now (read once, for the whole line)."""
    for proc in _chain:
        event_dict = proc(logger, method_name, event_dict)
    return event_dict


PROCESSORS: list[Any] = [run_chain]
ROUTE = Route()


def install(chain: list[Any], sink: FileSink | StreamSink, level: str) -> None:
    """Make every logger, cached or not, run ``chain``, write to ``sink`` and filter at ``level``."""
    global _chain
    _chain = tuple(chain)
    ROUTE.point(sink)
    set_level(level)
