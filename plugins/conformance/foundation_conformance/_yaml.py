"""Reading a spec file's YAML strictly: one meaning for every document, bounded in size and work.

A spec is read by implementations in other languages too, so what YAML readers disagree on is
refused rather than read one way: a key given twice (PyYAML keeps the last, silently), a key that
is not a string (``yes``, ``on``, ``1``, ``null`` are booleans, numbers or null to a YAML 1.1
reader and strings to a YAML 1.2 one), and merge keys (``<<``: not YAML 1.2; expanded, they also
copy a mapping per use, so nested merges grow exponentially before any size check could run).
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from foundation_core.errors import SpecError

__all__ = ["MAX_SPEC_BYTES", "MAX_SPEC_DEPTH", "MAX_SPEC_VALUES", "read_spec_yaml"]

# Bounds on what a spec file may hold: its size, its values once anchors/aliases are expanded
# (so a "billion laughs" document is refused, not walked or printed) and its nesting.
MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_SPEC_VALUES = 200_000
MAX_SPEC_DEPTH = 50

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A construct the strict loader refuses, at a line of the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing duplicate, non-string and merge keys and self-containing
    aliases, each naming its line."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open_anchors: dict[str, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = event.anchor
        if isinstance(event, yaml.AliasEvent):
            if anchor in self._open_anchors:
                raise _Refused(
                    _line(event.start_mark),
                    f"alias *{anchor} is inside the value anchored &{anchor} (line"
                    f" {self._open_anchors[anchor]}): a value cannot contain itself",
                )
            return super().compose_node(parent, index)
        if anchor is None or anchor in self._open_anchors:  # a duplicate anchor: PyYAML says so
            return super().compose_node(parent, index)
        self._open_anchors[anchor] = _line(event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            del self._open_anchors[anchor]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep=deep)
        mapping: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = _line(key_node.start_mark)
            if key_node.tag == _MERGE_TAG:
                raise _Refused(line, "merge keys (<<) are not supported; write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(line, f"a key is a {key_node.id}; keys must be strings")
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise _Refused(
                    line,
                    f"key {_brief(key_node.value)} is read as {type(key).__name__} {_brief(key)}, not a"
                    f" string; quote it if it is a name (YAML readers disagree on yes, on, 1, null)",
                )
            if key in mapping:
                raise _Refused(
                    line, f"duplicate key {_brief(key)} (first at line {lines[key]}); give each key once"
                )
            lines[key] = line
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def read_spec_yaml(file: str) -> Any:
    """The file's YAML document; only a regular file is opened (a FIFO would block the read).
    Every problem is a :class:`SpecError` naming the file (and the line, where there is one)."""
    try:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(file, "is not a regular file")
        if info.st_size > MAX_SPEC_BYTES:
            raise SpecError(file, f"is {info.st_size} bytes, over the {MAX_SPEC_BYTES}-byte limit")
        with open(file, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(file, f"is over the {MAX_SPEC_BYTES}-byte limit")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(file, f"is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise SpecError(file, f"cannot be read: {exc.strerror or exc}") from exc
    loader = _StrictLoader(text)
    loader.name = file  # for PyYAML's own messages ("in <file>, line 3, column 5")
    try:
        raw = loader.get_single_data()
    except _Refused as exc:
        raise SpecError(file, str(exc)) from None
    except yaml.YAMLError as exc:
        raise SpecError(file, f"cannot be read as YAML: {exc}") from exc
    except RecursionError as exc:
        raise SpecError(file, "cannot be read as YAML: nested too deeply") from exc
    except ValueError as exc:  # an integer over Python's digit limit
        raise SpecError(file, f"cannot be read as YAML: {exc}") from exc
    finally:
        loader.dispose()
    _check_size(file, raw)
    return raw


def _check_size(file: str, raw: Any) -> None:
    """Refuse a document too deep or too large once aliases are expanded (walked iteratively,
    counting a shared value each time it is reached, with a budget)."""
    budget = MAX_SPEC_VALUES
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise SpecError(
                file, f"holds over {MAX_SPEC_VALUES} values once anchors and aliases are expanded"
            )
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(file, f"is nested deeper than {MAX_SPEC_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _line(mark: Any) -> int:
    return int(mark.line) + 1 if mark is not None else 0


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
