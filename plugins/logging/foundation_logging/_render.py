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


class JsonBytes:
    """Render the event dict as one newline-terminated JSON line, as bytes."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> bytes:
        return orjson.dumps(event_dict, default=_fallback, option=_OPTIONS)


class JsonText:
    """Render the event dict as one JSON line, as text without the newline (the sink adds it)."""

    __slots__ = ()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        return orjson.dumps(event_dict, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()
