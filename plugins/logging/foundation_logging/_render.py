"""Renderers: orjson JSON lines (bytes for files, text for streams) and the console renderer."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["JsonBytes", "JsonText"]

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _fallback(obj: Any) -> Any:
    """Anything orjson cannot encode natively (exceptions, paths, sets) is written as its repr."""
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def _dumps(event_dict: dict[str, Any], option: int) -> bytes:
    """orjson's bytes; a log call never raises: what orjson refuses without asking ``default``
    (integers past 64 bits, strings with lone surrogates) is made writable first."""
    try:
        return orjson.dumps(event_dict, default=_fallback, option=option)
    except TypeError:
        return orjson.dumps(_writable(event_dict), default=_fallback, option=option)


def _writable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates escaped
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else repr(value)
    if isinstance(value, dict):
        return {_writable(k) if isinstance(k, str) else k: _writable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_writable(v) for v in value]
    return value


class JsonBytes:
    """Render the event dict as one newline-terminated JSON line, as bytes."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> bytes:
        return _dumps(event_dict, _OPTIONS)


class JsonText:
    """Render the event dict as one JSON line, as text without the newline (the sink adds it)."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        return _dumps(event_dict, orjson.OPT_NON_STR_KEYS).decode()
