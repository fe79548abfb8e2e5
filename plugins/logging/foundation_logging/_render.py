"""Renderers: orjson JSON lines (bytes for files, text for streams) and the console renderer.

A log call never raises for its values: what orjson refuses is made writable (keys that are not
text, numbers or None become their repr, a value containing itself or nested past ``MAX_NESTING``
levels is cut there with a marker), and a value whose ``repr`` raises is written as a
description of it. The fast path is orjson alone; the rest only runs for a line it refused.
The console renderer gets the event with its control characters escaped: one event, one line.
"""

from __future__ import annotations

import io
import re
from typing import Any, TextIO

import orjson

from ._processors import Stack

__all__ = [
    "MAX_NESTING",
    "JsonBytes",
    "JsonText",
    "SafeConsole",
    "escape_controls",
    "plain_traceback",
    "safe_repr",
]

_TEXT_OPTIONS = orjson.OPT_NON_STR_KEYS
_OPTIONS = orjson.OPT_APPEND_NEWLINE | _TEXT_OPTIONS
# numpy arrays up to this many items are written as JSON lists; a bigger one as numpy's summary
# (its repr, the middle elided): a tensor logged by mistake must not make a line of megabytes
MAX_ARRAY_ITEMS = 1000
MAX_NESTING = 100  # dicts and lists inside one value; orjson refuses past 255
_CYCLE = "<recursion: contains itself>"
_TOO_DEEP = f"<nested deeper than {MAX_NESTING} levels>"


def safe_repr(obj: Any) -> str:
    """``repr(obj)``, or a description of ``obj`` when its ``__repr__`` raises."""
    try:
        return repr(obj)
    except Exception as exc:
        try:
            name = type(obj).__qualname__
        except Exception:
            name = "object"
        return f"<{name} object (repr raised {type(exc).__name__})>"


def _fallback(obj: Any) -> Any:
    """Anything orjson cannot encode natively (exceptions, paths, sets) is written as its repr;
    numpy scalars as numbers, numpy arrays of up to ``MAX_ARRAY_ITEMS`` items as lists (views
    and text arrays too), bigger ones as numpy's summary."""
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if type(obj).__module__ == "numpy":
        try:
            if type(obj).__name__ != "ndarray":
                return obj.item()  # np.int64(5) -> 5, np.float32, np.bool_
            if obj.size <= MAX_ARRAY_ITEMS:
                return obj.tolist()
        except Exception:
            pass
    return safe_repr(obj)


def _dumps(event_dict: dict[str, Any], option: int) -> bytes:
    """orjson's bytes; what orjson refuses without asking ``default`` (integers past 64 bits,
    lone surrogates, other keys than text and numbers, cycles, deep nesting) is made writable
    first, and at last anything but plain data is written as its repr."""
    try:
        return orjson.dumps(event_dict, default=_fallback, option=option)
    except TypeError:
        pass
    try:
        return orjson.dumps(_writable(event_dict, 0, set(), False), default=_fallback, option=option)
    except TypeError:  # a native type orjson walks into (a dataclass holding something odd)
        return orjson.dumps(_writable(event_dict, 0, set(), True), default=_fallback, option=option)


def _writable(value: Any, depth: int, inside: set[int], plain: bool) -> Any:
    """``value`` as orjson writes it without complaint; ``plain``: objects as their repr."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates escaped
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else safe_repr(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if id(value) in inside:
            return _CYCLE
        if depth >= MAX_NESTING:
            return _TOO_DEEP
        inside.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): _writable(v, depth + 1, inside, plain) for k, v in list(value.items())}
            return [_writable(v, depth + 1, inside, plain) for v in list(value)]
        finally:
            inside.discard(id(value))
    return safe_repr(value) if plain else value


def _key(key: Any) -> Any:
    if isinstance(key, str):
        return key.encode("utf-8", "backslashreplace").decode("utf-8")
    if key is None or isinstance(key, (bool, float)):
        return key
    if isinstance(key, int):
        return key if -(2**63) <= key < 2**64 else safe_repr(key)
    return safe_repr(key)


class JsonBytes:
    """Render the event dict as one newline-terminated JSON line, as bytes."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> bytes:
        return _dumps(event_dict, _OPTIONS)


class JsonText:
    """Render the event dict as one JSON line, as text without the newline (the sink adds it)."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        return _dumps(event_dict, _TEXT_OPTIONS).decode()


#: what could end a console line early or drive the terminal: C0 and C1 controls, DEL, and
#: the Unicode line and paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_IN_TRACEBACK = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # but \n
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PRIMITIVE = (int, float, bool, type(None))
_BARE = ("event", "level", "logger", "timestamp")  # the console renderer writes these unquoted


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_controls(event_dict: dict[str, Any]) -> dict[str, Any]:
    """The event dict with control characters escaped as ``\\n``, ``\\x1b``... in keys, text values
    and the ``repr`` of other values, so that one console line stays one line and never drives
    the terminal (a client's ``"\\n2026-... [error] forged"`` or ``"\\x1b[2J"``). A traceback
    keeps its line breaks: the renderer writes it from ``exc_info`` (``plain_traceback``); an
    ``exception`` key in the event is the caller's, escaped like any value. So does the stack
    ``stack_info`` asked for (a ``Stack``), where a ``stack`` given at the call site is a value."""
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if isinstance(key, str) and _CONTROL.search(key):
            key = _CONTROL.sub(_escape, key)
        if key == "event" and not isinstance(value, str):  # written as its str()
            value = _str_of(value)
        if isinstance(value, Stack):  # stack_info's: its own lines, as a traceback
            value = Stack(_CONTROL_IN_TRACEBACK.sub(_escape, value))
        elif isinstance(value, str):
            if _CONTROL.search(value):  # written bare, or quoted as its repr (as structlog does)
                value = _CONTROL.sub(_escape, value) if key in _BARE else _Shown(str.__repr__(value))
        elif not isinstance(value, _PRIMITIVE):
            text = safe_repr(value)
            if _CONTROL.search(text):
                value = _Shown(_CONTROL.sub(_escape, text))
        out[key] = value
    return out


def plain_traceback(sio: TextIO, exc_info: Any) -> None:
    """The console renderer's ``exception_formatter``: structlog's plain traceback with its line
    breaks kept and every other control character escaped (an exception's message is text from
    anywhere). Plain, not rich's, even where rich is installed: the same in a file as on a tty."""
    import structlog

    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(_CONTROL_IN_TRACEBACK.sub(_escape, buffer.getvalue()))


def _str_of(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return safe_repr(value)


class _Shown(str):
    """A value's escaped ``repr``, which the console renderer writes as it is (its ``repr``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


class SafeConsole:
    """structlog's console renderer, which calls ``repr`` on values, given the event with its
    control characters escaped (``escape_controls``): a value whose ``repr`` raises is written
    as a description of it, and a line that still cannot be rendered is written as its event
    with a note."""

    __slots__ = ("_render",)

    def __init__(self, render: Any) -> None:
        self._render = render

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        try:
            saved = escape_controls(event_dict)
        except Exception:  # a key that cannot be compared with "exception"
            saved = dict(event_dict)
        tail = _inline_own_lines(saved)
        try:
            return self._render(logger, method_name, dict(saved)) + tail  # type: ignore[no-any-return]
        except Exception:
            pass
        plain = {
            k if isinstance(k, str) else safe_repr(k): v if isinstance(v, (str, int, float)) else safe_repr(v)
            for k, v in saved.items()
        }
        try:
            return self._render(logger, method_name, plain) + tail  # type: ignore[no-any-return]
        except Exception as exc:
            event = safe_repr(saved.get("event"))
            level = saved.get("level", method_name)
            return f"{level} {event} [line not rendered: {type(exc).__name__}]{tail}"


#: keys structlog's console renderer writes as they are on lines of their own, after the line:
#: in the event dict they come from the caller (a traceback is rendered from ``exc_info``)
_OWN_LINES = ("exception", "stack")


def _inline_own_lines(saved: dict[Any, Any]) -> str:
    """Take a call-site ``exception`` or ``stack`` out of ``saved`` (escaped already) and return
    them as `` key=value`` text for the end of the line: written by the renderer, a client's
    ``exception="2026-... [critical ] forged"`` was a line of its own, and ``""`` an empty one."""
    tail = ""
    for key in _OWN_LINES:
        if key in saved and not isinstance(saved[key], Stack):
            value = saved.pop(key)
            text = value if isinstance(value, str) else _CONTROL.sub(_escape, safe_repr(value))
            tail += f" {key}={text}"
    return tail
