"""Name-keyed registries of patterns, transports and model backends, and the ``register`` callback.

A registry owns its names. Plugins register through a :class:`Registrar` handed to their
registration hook; the registrar knows which plugin is calling (the hub sets it), so a clash can
name both plugins and a failed plugin's registrations can be rolled back whole.

Precedence: an application override (an object passed to ``start(plugins=...)``) wins over an
installed plugin whatever the call order; between two registrations of the same level, a second
one needs ``replace=True`` or it is a :class:`~foundation_core.errors.NameClashError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import attrs

from .errors import NameClashError, NotRegisteredError

__all__ = ["Entry", "Registrar", "Registry", "current_plugin", "resolve_ref"]

T = TypeVar("T")

#: ``(plugin name, is application override)`` of the plugin whose hook is running.
current_plugin: ContextVar[tuple[str, bool]] = ContextVar(
    "foundation_current_plugin", default=("<unknown>", True)
)


def resolve_ref(ref: str) -> Any:
    """Import ``"package.module:attr.path"`` and return the attribute."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"lazy reference {ref!r} is not of the form 'module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


@attrs.define(slots=True)
class Entry:
    """One registration: the object (or its lazy ``module:attr`` reference) and who made it."""

    name: str
    target: Any
    plugin: str
    app: bool
    shadowed: list[str] = attrs.field(factory=list)
    _resolved: Any = attrs.field(default=None, alias="_resolved")
    _is_resolved: bool = attrs.field(default=False, alias="_is_resolved")

    @property
    def lazy(self) -> bool:
        return isinstance(self.target, str) and not self._is_resolved

    def resolve(self) -> Any:
        if not self._is_resolved:
            self._resolved = resolve_ref(self.target) if isinstance(self.target, str) else self.target
            self._is_resolved = True
        return self._resolved

    def describe(self) -> str:
        if isinstance(self.target, str):
            return self.target
        mod = getattr(self.target, "__module__", None) or type(self.target).__module__
        qual = getattr(self.target, "__qualname__", None) or type(self.target).__qualname__
        return f"{mod}:{qual}"


class Registry(Generic[T]):
    """Objects of one kind (``"pattern"``, ``"transport"``, ...) keyed by name."""

    def __init__(self, kind: str, hint: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._hint = hint

    def add(self, name: str, target: Any, *, plugin: str, app: bool, replace: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        held = self._entries.get(name)
        if held is not None and not replace:
            if held.app and not app:
                held.shadowed.append(plugin)  # the application overrides the plugin on purpose
                return
            raise NameClashError(self.kind, name, held.plugin, plugin)
        entry = Entry(name, target, plugin, app)
        if held is not None:
            entry.shadowed = [*held.shadowed, held.plugin]
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The registered object, importing a lazy reference on first use."""
        return self.entry(name).resolve()  # type: ignore[no-any-return]

    def entry(self, name: str) -> Entry:
        entry = self._entries.get(name)
        if entry is None:
            hint = self._hint(name) if self._hint else ""
            raise NotRegisteredError(self.kind, name, list(self._entries), hint)
        return entry

    def remove_plugin(self, plugin: str) -> list[str]:
        """Drop every entry ``plugin`` made (rollback of a failed plugin); returns the names."""
        gone = [n for n, e in self._entries.items() if e.plugin == plugin]
        for name in gone:
            del self._entries[name]
        return gone

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.plugin == plugin)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry {self.kind}: {', '.join(self.names()) or 'empty'}>"


class Registrar:
    """The ``register`` callback handed to a registration hook.

    ``register(name, obj_or_ref, replace=False)`` registers; ``register.get(name)`` returns what
    is registered now, so a wrapper hookimpl can decorate another plugin's object after ``yield``.
    """

    __slots__ = ("_registry",)

    def __init__(self, registry: Registry[Any]) -> None:
        self._registry = registry

    def __call__(self, name: str, target: Any, *, replace: bool = False) -> None:
        plugin, app = current_plugin.get()
        self._registry.add(name, target, plugin=plugin, app=app, replace=replace)

    def get(self, name: str) -> Any:
        return self._registry.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._registry

    @property
    def kind(self) -> str:
        return self._registry.kind
