"""The bound logger: structlog's filtering logger, with ``%``-interpolation that never raises.

There is one bound-logger class, ``FoundationBoundLogger``, for every configuration:
``set_level`` puts the methods of a level in place on it. A logger that structlog cached on first
use (``cache_logger_on_first_use``) is an instance of it, so it follows the level configured
now, not the one of its first line.

structlog interpolates ``log.info("took %s s to %s", 3)`` in the log method itself, before any
processor runs, so a format that does not match its arguments raised into the caller. Here such
a line is still written: its event unformatted, with ``format_error`` and ``format_args`` saying
what went wrong (as the standard library's handlers print ``--- Logging error ---`` and go on).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import structlog
from structlog import DropEvent

from ._render import safe_repr

__all__ = ["FoundationBoundLogger", "interpolated", "set_level"]

_LEVELS = ("debug", "info", "warning", "error", "critical")
_ALIASES = {"warn": "warning", "fatal": "critical", "msg": "info"}


def interpolated(event: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """``event % args`` as structlog does it; when that raises, ``event`` as it is and the error
    in ``kw`` (``format_error``, ``format_args``)."""
    try:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            return event % args[0]
        return event % args
    except Exception as exc:
        kw["format_error"] = error_text(exc)
        kw["format_args"] = safe_repr(args)
        return event


def error_text(exc: BaseException) -> str:
    """``"TypeError: not enough arguments..."``, even for an exception whose ``str`` raises."""
    try:
        text = str(exc)
    except Exception as inner:
        text = f"<str() raised {type(inner).__name__}>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@functools.cache  # one function per name, whatever the level: a new level changes fewer attributes
def _method(name: str) -> Any:
    def meth(self: Any, event: Any, *args: Any, **kw: Any) -> Any:
        if args:
            event = interpolated(event, args, kw)
        # structlog's _proxy_to_logger, inlined: one call and one copy of ``kw`` less per line
        try:
            out_args, out_kw = self._process_event(name, event, kw)
            return getattr(self._logger, name)(*out_args, **out_kw)
        except DropEvent:
            return None

    meth.__name__ = name
    return meth


def _async_method(name: str, base: Any) -> Any:
    async def ameth(self: Any, event: Any, *args: Any, **kw: Any) -> Any:
        if args:
            event = interpolated(event, args, kw)
        return await base(self, event, **kw)

    ameth.__name__ = f"a{name}"
    return ameth


class FoundationBoundLogger(structlog.BoundLoggerBase):
    """structlog's filtering bound logger at the level ``set_level`` installed last (until then,
    at ``info``); its enabled methods (and ``log``, ``alog``) never raise for ``%``-arguments
    that do not fit the event."""


def set_level(level: str) -> None:
    """Give ``FoundationBoundLogger`` the methods of ``structlog.make_filtering_bound_logger(level)``
    (below the level: structlog's no-op), the enabled ones interpolating safely.

    Each attribute is replaced in one assignment, so a thread logging meanwhile calls either the
    old method or the new one; every level's class has the same attribute names, so none is left
    over from an earlier level. Only the attributes that change are assigned: each assignment
    costs the class its attribute cache, and CPython (3.13 on) stops caching for a class changed
    too often, which would slow every line."""
    for name, method in _methods_for(level).items():
        if vars(FoundationBoundLogger).get(name) is not method:
            setattr(FoundationBoundLogger, name, method)


@functools.cache
def _methods_for(level: str) -> dict[str, Any]:
    base: Any = structlog.make_filtering_bound_logger(level)
    methods: dict[str, Any] = {k: v for k, v in vars(base).items() if not k.startswith("__")}
    threshold = logging.getLevelName(level.upper())
    for name in _LEVELS:
        if logging.getLevelName(name.upper()) >= threshold:  # below: keep structlog's no-op
            methods[name] = _method(name)
            methods[f"a{name}"] = _async_method(name, getattr(base, f"a{name}"))
    for alias, name in _ALIASES.items():
        if logging.getLevelName(name.upper()) >= threshold:
            methods[alias], methods[f"a{alias}"] = methods[name], methods[f"a{name}"]
    base_log, base_alog = base.log, base.alog

    def log(self: Any, level: int, event: Any, *args: Any, **kw: Any) -> Any:
        if args:
            event = interpolated(event, args, kw)
        return base_log(self, level, event, **kw)

    async def alog(self: Any, level: int, event: Any, *args: Any, **kw: Any) -> Any:
        if args:
            event = interpolated(event, args, kw)
        return await base_alog(self, level, event, **kw)

    methods["log"], methods["alog"] = log, alog
    return methods


set_level("info")
