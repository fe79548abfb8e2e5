"""A layer of configuration: nested values from one source, with where each value came from.

Layers are merged in order (later wins, mappings merge key by key). Provenance is kept per
dotted path, so every effective value can be traced to a file and key, a variable, ``--set``
or a default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

__all__ = ["Layer", "RawText", "iter_leaves", "merge_into"]


class RawText(str):
    """Text from the environment or ``--set``: parsed by the type of the field it lands in
    (``"5"`` stays text for a ``str`` field, becomes 5 for an ``int`` field)."""

    __slots__ = ()


@attrs.define
class Layer:
    """``data`` is nested; ``origin(path)`` names where the value at ``path`` came from."""

    name: str
    data: dict[str, Any] = attrs.field(factory=dict)
    origins: dict[str, str] = attrs.field(factory=dict)  # dotted path -> source

    def set(self, path: tuple[str, ...], value: Any, source: str) -> None:
        node = self.data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        self.origins[".".join(path)] = source

    def origin(self, path: str) -> str | None:
        """Where this layer's value at ``path`` came from: the path itself, else a key below it
        (a field whose table this layer extended), else a scalar this layer set above it."""
        if path in self.origins:
            return self.origins[path]
        below = [src for key, src in self.origins.items() if key.startswith(path + ".")]
        if below:
            return below[-1]
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
