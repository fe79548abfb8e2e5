"""A layer of configuration: nested values from one source, with where each value came from.

Layers are merged in order (later wins, mappings merge key by key). Provenance is kept per
dotted path, so every effective value can be traced to a file and key, a variable, ``--set``
or a default.

Every value is bounded before it is merged: at most ``MAX_DEPTH`` tables and lists inside one
another and ``MAX_VALUES`` values once YAML aliases (or shared interpolated tables) are expanded,
so that a small file can neither exhaust the stack nor the memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

__all__ = ["MAX_DEPTH", "MAX_VALUES", "Layer", "RawText", "iter_leaves", "merge_into", "shape_problem"]

MAX_DEPTH = 32  # tables and lists inside one another (a dotted key counts each of its parts)
MAX_VALUES = 100_000  # values in one file, or in one key after interpolation, counted expanded


class RawText(str):
    """Text from the environment or ``--set``: parsed by the type of the field it lands in
    (``"5"`` stays text for a ``str`` field, becomes 5 for an ``int`` field)."""

    __slots__ = ()


def shape_problem(value: Any, depth: int = 0) -> str | None:
    """What makes ``value`` unusable, or None: nested more than ``MAX_DEPTH`` levels (counting
    ``depth`` levels above it), more than ``MAX_VALUES`` values once shared parts (YAML aliases)
    are counted as often as they appear, or containing itself. Iterative: never recursion."""
    sizes: dict[int, int] = {}  # id -> expanded size, for containers done
    heights: dict[int, int] = {}  # id -> levels of containers, itself included
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    keep: list[Any] = []  # ids stay valid while their objects live
    while stack:
        node, done = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        ident = id(node)
        children = list(node.values()) if isinstance(node, dict) else list(node)
        if done:
            open_.discard(ident)
            boxes = [c for c in children if isinstance(c, (dict, list, tuple))]
            sizes[ident] = 1 + sum(sizes[id(c)] for c in boxes) + len(children) - len(boxes)
            heights[ident] = 1 + max((heights[id(c)] for c in boxes), default=0)
            if sizes[ident] > MAX_VALUES:
                return f"expands to more than {MAX_VALUES} values (YAML aliases or ${{...}} copies?)"
            if depth + heights[ident] > MAX_DEPTH:
                return f"tables and lists nested more than {MAX_DEPTH} levels deep"
            continue
        if ident in sizes:
            continue
        if ident in open_:
            return "contains itself (a YAML alias inside its own anchor)"
        open_.add(ident)
        keep.append(node)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return None


@attrs.define
class Layer:
    """``data`` is nested; ``origin(path)`` names where the value at ``path`` came from;
    ``reads`` names the environment variables (``env:NAME``) an ``@format`` value read."""

    name: str
    data: dict[str, Any] = attrs.field(factory=dict)
    origins: dict[str, str] = attrs.field(factory=dict)  # dotted path -> source
    below: dict[str, str] = attrs.field(factory=dict)  # dotted path -> last source set under it
    reads: dict[str, frozenset[str]] = attrs.field(factory=dict)  # dotted path -> env:NAME read

    def set(self, path: tuple[str, ...], value: Any, source: str) -> None:
        node = self.data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        self.record(".".join(path), source)

    def record(self, path: str, source: str) -> None:
        """Note that the value at ``path`` came from ``source`` (and so did a key below each of
        the tables above it): one dict update per level, so ``origin`` never scans."""
        self.origins[path] = source
        parent, sep, _ = path.rpartition(".")
        while sep:
            self.below[parent] = source
            parent, sep, _ = parent.rpartition(".")

    def origin(self, path: str) -> str | None:
        """Where this layer's value at ``path`` came from: the path itself, else a key below it
        (a field whose table this layer extended), else a scalar this layer set above it."""
        if path in self.origins:
            return self.origins[path]
        if path in self.below:
            return self.below[path]
        parts = path.split(".")
        node: Any = self.data
        for i, part in enumerate(parts[:-1]):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                return None
            if not isinstance(node, dict):
                return self.origins.get(".".join(parts[: i + 1]))
        return None


def iter_leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every non-mapping value with its dotted path."""
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from iter_leaves(value, path)
        else:
            yield path, value


def merge_into(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    """Deep-merge ``source`` into ``target``: mappings merge, anything else replaces."""
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
