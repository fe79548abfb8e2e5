"""Interpolation in string values: ``${section.key}`` and ``${env:NAME}`` / ``${env:NAME:-default}``.

A value that is exactly one ``${section.key}`` takes the referenced value with its type; inside
longer text it is formatted with ``str``. ``$${`` writes a literal ``${``. References resolve
against the merged configuration (defaults included), recursively, with cycles reported. A chain
of references is at most ``MAX_CHAIN`` long and a value built by them at most ``MAX_TEXT``
characters (or ``MAX_VALUES`` values): a few lines of text can neither exhaust the stack nor build
gigabytes by doubling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from foundation_core.errors import ConfigProblem

from ._layers import MAX_DEPTH, RawText, shape_problem

__all__ = ["MAX_CHAIN", "MAX_TEXT", "MISSING", "interpolate"]

MAX_CHAIN = MAX_DEPTH  # references followed from one key (a -> b -> c ... counts each arrow)
MAX_TEXT = 1_000_000  # characters of one value built by ${...}

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
MISSING: Any = object()  # what ``lookup_default`` returns for a path without a default


class _Unresolved(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Resolver:
    def __init__(
        self,
        data: dict[str, Any],
        lookup_default: Callable[[str], Any],
        environ: Mapping[str, str],
    ) -> None:
        self.data = data
        self.lookup_default = lookup_default
        self.environ = environ
        self.done: dict[str, Any] = {}
        self.stack: list[str] = []
        self.reads: dict[str, set[str]] = {}  # path -> every key its resolution read
        self.collecting: list[set[str]] = []  # one set per lookup in progress
        self.nesting = 0  # tables and lists being resolved, one inside the other
        self.seeds: dict[str, set[str]] = {}  # path -> variables its value read before (@format)

    def _read(self, path: str) -> None:
        """Note that the lookups in progress read ``path`` (and what it read)."""
        for reads in self.collecting:
            reads.add(path)
            reads.update(self.reads.get(path, ()))

    def lookup(self, path: str) -> Any:
        if path in self.done:
            self._read(path)
            return self.done[path]
        if path in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(path) :], path])
            raise _Unresolved(f"interpolation cycle: {cycle}")
        if len(self.stack) > MAX_CHAIN:
            chain = " -> ".join([*self.stack[:3], "...", path])
            raise _Unresolved(f"a chain of more than {MAX_CHAIN} references: {chain}")
        node: Any = self.data
        for part in path.split("."):
            node = node.get(part, MISSING) if isinstance(node, Mapping) else MISSING
            if node is MISSING:
                break
        if node is MISSING:
            node = self.lookup_default(path)
        if node is MISSING:
            raise _Unresolved(f"${{{path}}} refers to a key that is not set and has no default")
        self.stack.append(path)
        self.collecting.append(set())
        try:
            value = self.resolve(node)
        finally:
            self.stack.pop()
            self.reads[path] = self.collecting.pop() | self.seeds.get(path, set())
        self.done[path] = value
        self._read(path)
        return value

    def resolve(self, value: Any) -> Any:
        if isinstance(value, (dict, list)):
            if self.nesting + len(self.stack) > 2 * MAX_DEPTH:
                raise _Unresolved(f"references and tables nested more than {2 * MAX_DEPTH} levels deep")
            self.nesting += 1
            try:
                if isinstance(value, dict):
                    return {k: self.resolve(v) for k, v in value.items()}
                return [self.resolve(v) for v in value]
            finally:
                self.nesting -= 1
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole and whole.group(1) is not None:
            return self.expression(whole.group(1).strip(), raw=isinstance(value, RawText))
        size = len(value)

        def part(match: re.Match[str]) -> str:
            nonlocal size
            text = "${" if match.group(1) is None else str(self.expression(match.group(1).strip()))
            size += len(text)
            if size > MAX_TEXT:
                raise _Unresolved(f"the value built by ${{...}} is longer than {MAX_TEXT} characters")
            return text

        text = _REF.sub(part, value)
        return RawText(text) if isinstance(value, RawText) else text

    def expression(self, expr: str, raw: bool = False) -> Any:
        if expr.startswith("env:"):
            name, sep, default = expr[4:].partition(":-")
            name = name.strip()
            if name in self.environ:
                self._read(f"env:{name}")  # a secret's variable (API_TOKEN) makes the value one
                return RawText(self.environ[name])
            if sep:
                return RawText(default)
            raise _Unresolved(f"${{{expr}}}: environment variable {name} is not set and has no default")
        if not expr or not all(expr.split(".")):
            raise _Unresolved(f"${{{expr}}} is not a reference (expected ${{section.key}} or ${{env:NAME}})")
        return self.lookup(expr)


def interpolate(
    data: dict[str, Any],
    origin: Callable[[str], str],
    lookup_default: Callable[[str], Any],
    environ: Mapping[str, str],
    references: dict[str, frozenset[str]] | None = None,
    wanted: Callable[[str], bool] = lambda path: True,
) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Resolve the references in each ``section.key`` of ``data`` that is ``wanted`` (and in
    what those read); problems name the key holding the bad reference. The others are kept as
    they are: a key that is ignored (unknown) never fails for its references. ``references``,
    when given, receives each key that held references, with every key (and ``env:NAME``
    variable) it read; what it holds on entry (``@format``'s variables, by dotted path) counts
    as read by the keys it is under, so a table copied by ``${...}`` carries them along."""
    resolver = _Resolver(data, lookup_default, environ)
    for path, read in (references or {}).items():
        parts = path.split(".")
        for i in range(2, len(parts) + 1):  # section.key and each table below it
            resolver.seeds.setdefault(".".join(parts[:i]), set()).update(read)
    problems: list[ConfigProblem] = []
    out: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            out[section] = values
            continue
        out[section] = {}
        for key, value in values.items():
            path = f"{section}.{key}"
            if not wanted(path) or not _has_ref(value):
                out[section][key] = value
                continue
            try:
                out[section][key] = resolved = resolver.lookup(path)
                if isinstance(resolved, (dict, list)) and (found := shape_problem(resolved, 2)):
                    raise _Unresolved(f"the value built by ${{...}} {found}")
            except _Unresolved as exc:
                problems.append(ConfigProblem(path, exc.message, origin(path)))
                out[section].pop(key, None)  # never structured: it may be huge once copied
                resolver.stack.clear()
                resolver.collecting.clear()
                resolver.nesting = 0
                continue
            if references is not None and resolver.reads.get(path):
                references[path] = frozenset(resolver.reads[path]) | references.get(path, frozenset())
    return out, problems


def _has_ref(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_has_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v) for v in value)
    return False
