"""Hot-path processors: bound context, level, timestamp and stack in one step; redaction of secrets.

Each is a small callable class with ``__slots__`` that did its set-up in ``__init__``.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

from foundation_core import is_sensitive_key

from ._context import _context

__all__ = ["REDACTED", "Redactor", "Stack", "Stamp", "is_sensitive"]

REDACTED = "[REDACTED]"
_LEVEL_NAMES = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}
_MEMO_LIMIT = 4096
NESTED_DEPTH = 8  # how deep into dicts, lists and tuples of a value redaction looks
# the containers redaction looks into, by exact type: a set test per value, in C (a subclass not
# named here, a namedtuple, a Mapping that is not a dict, is passed on as it is)
_CONTAINERS = frozenset({dict, list, tuple, OrderedDict, defaultdict, Counter})
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))  # formatting "%03d" per line costs more
# frames of the logging machinery, skipped to find the caller whose stack ``stack_info`` shows
# (structlog's own are always skipped)
_OWN_FRAMES = ["foundation_logging"]


class Stack(str):
    """The stack ``stack_info`` asked for, as the standard library writes it: text the console
    renderer writes on lines of its own, where a call-site ``stack`` key is one value of the line."""

    __slots__ = ()


def _stack(requested: Any) -> Stack:
    """The caller's stack (structlog's ``stack_info=True``), or a stdlib record's, formatted
    already (``logger.warning(..., stack_info=True)``)."""
    if isinstance(requested, str):
        return Stack(requested)
    from structlog.processors import StackInfoRenderer  # its public API, not its private _frames

    found = StackInfoRenderer(additional_ignores=_OWN_FRAMES)(None, "", {"stack_info": True})
    return Stack(found["stack"])


class Stamp:
    """Add what every line carries: the bound context (``bind_context``), ``level``, ``timestamp``;
    and turn ``stack_info`` (structlog's and the standard library's) into a ``stack`` key holding
    the caller's stack, as structlog's ``StackInfoRenderer`` does.

    Keys given at the call site win over bound context. One processor rather than four because
    each processor call costs about as much as the work it does here.

    The timestamp is ISO 8601 in UTC with millisecond precision, ``2026-11-22T05:31:07.042Z``:
    sortable as text, unambiguous across hosts, and readable by every log store. The part up to
    the second is formatted once per second and cached, so a line costs one ``time.time()``, one
    tuple lookup and one string concatenation.
    """

    __slots__ = ("_clock", "_second")

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        ctx = _context.get()
        if ctx:
            for key, value in ctx.items():
                if key not in event_dict:
                    event_dict[key] = value
        event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
        now = self._clock()
        sec = int(now)
        cached, prefix = self._second  # one tuple, so threads never see a torn update
        if sec != cached:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._second = (sec, prefix)
        event_dict["timestamp"] = prefix + _MILLIS[int((now - sec) * 1000)]
        if "stack_info" in event_dict:
            requested = event_dict.pop("stack_info")
            if requested:
                event_dict["stack"] = _stack(requested)
        return event_dict


def is_sensitive(key: str, names: Iterable[str]) -> bool:
    """A key is sensitive when a name's words appear together among its words (split at ``_``,
    ``-``, ``.`` and camelCase: ``SECRET_KEY``, ``dbPassword``, ``X-Api-Key``, ``Set-Cookie``),
    as ``config show`` masks: :func:`foundation_core.is_sensitive_key`."""
    return is_sensitive_key(key, names)


class Redactor:
    """Replace the values of sensitive keys with ``[REDACTED]``: top-level keys, and keys of the
    dicts inside a value (``headers={"Authorization": ...}``), through dicts, lists and tuples up
    to ``NESTED_DEPTH`` levels (by exact type, with OrderedDict, defaultdict and Counter). A
    nested container holding a sensitive key is copied with it redacted: the caller's own dict is
    never changed.

    Key names already judged safe are kept in a set, so the usual line costs one subset test of
    its keys against that set (a key-set intersection, no string matching) and one set test of
    its values' types. A line with a new or a sensitive key, or with a container value, takes
    the slow path, which judges each new key once.
    """

    __slots__ = ("_names", "_safe")

    def __init__(self, names: Iterable[str]) -> None:
        self._names = tuple(n.lower() for n in names)
        self._safe: set[str] = {"event", "level", "timestamp", "logger"} - {
            k for k in ("event", "level", "timestamp", "logger") if is_sensitive(k, self._names)
        }

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if event_dict.keys() <= self._safe and _CONTAINERS.isdisjoint(map(type, event_dict.values())):
            return event_dict
        for key, value in event_dict.items():
            if self._sensitive(key):
                event_dict[key] = REDACTED
            elif type(value) in _CONTAINERS:
                event_dict[key] = self._nested(value, NESTED_DEPTH)
        return event_dict

    def _sensitive(self, key: object) -> bool:
        safe = self._safe
        if key in safe:
            return False
        if isinstance(key, str) and is_sensitive(key, self._names):
            return True
        if len(safe) < _MEMO_LIMIT and isinstance(key, str):
            safe.add(key)
        return False

    def _nested(self, value: Any, depth: int) -> Any:
        """``value`` with its sensitive keys redacted: itself when it has none, else a copy."""
        if depth <= 0:
            return value
        if isinstance(value, dict):
            out: dict[Any, Any] | None = None
            for key, item in value.items():
                if self._sensitive(key):
                    new = REDACTED
                elif type(item) in _CONTAINERS:
                    new = self._nested(item, depth - 1)
                else:
                    continue
                if new is not item:
                    if out is None:
                        out = value.copy()  # of its own type: an OrderedDict stays one
                    out[key] = new
            return value if out is None else out
        items = [self._nested(item, depth - 1) if type(item) in _CONTAINERS else item for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
