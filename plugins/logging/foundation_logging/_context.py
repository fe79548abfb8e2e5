"""Context bound to the current task or thread (request id, model id, plugin), merged into lines.

One ``ContextVar`` holds a mapping that is replaced, never mutated, so merging it into a line
(``_processors.Stamp``) costs one lookup when nothing is bound; asyncio tasks and threads each
see their own context.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["bind_context", "bound_context", "clear_context", "get_context", "unbind_context"]

_EMPTY: Mapping[str, Any] = {}
_context: ContextVar[Mapping[str, Any]] = ContextVar("foundation_log_context", default=_EMPTY)


def bind_context(**values: Any) -> Token[Mapping[str, Any]]:
    """Bind ``values`` (``request_id=...``, ``model_id=...``) to every line logged from here on in
    this task or thread. Returns a token for ``contextvars``-style reset; prefer ``bound_context``."""
    return _context.set({**_context.get(), **values})


def unbind_context(*keys: str) -> None:
    """Remove ``keys`` from the bound context."""
    current = _context.get()
    _context.set({k: v for k, v in current.items() if k not in keys})


def clear_context() -> None:
    """Remove everything bound in this task or thread."""
    _context.set(_EMPTY)


def get_context() -> Mapping[str, Any]:
    """What is bound now (read-only view)."""
    return _context.get()


@contextmanager
def bound_context(**values: Any) -> Iterator[None]:
    """``with bound_context(request_id=rid): ...`` binds for the block, then restores."""
    token = bind_context(**values)
    try:
        yield
    finally:
        _context.reset(token)
