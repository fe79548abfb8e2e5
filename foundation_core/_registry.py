"""Name-keyed registries of patterns, transports, model backends, commands and config sections.

A registry owns its names. Plugins register through a :class:`Registrar` handed to their
registration hook; the registrar knows which plugin is calling (the hub sets it), so a clash can
name both plugins and a failed plugin's registrations can be rolled back whole.

Precedence, the same whatever order pluggy calls the plugins in:

1. an application override (an object passed to ``start(plugins=...)``, or the core's own
   built-ins) wins over every installed plugin; what installed plugins register under its name is
   kept as *shadowed*, never a clash;
2. at the same level, a registration with ``replace=True`` wins over those without it, and the
   later of two ``replace=True`` registrations wins (wrappers decorating in turn);
3. two registrations of one name at the same level, neither with ``replace=True``, are a
   :class:`~foundation_core.errors.NameClashError` naming both plugins.

Every registration is kept, so rolling back a failed plugin gives the name back to whichever
registration would have won without it.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import attrs

from .errors import NameClashError, NotRegisteredError, PluginError

__all__ = ["Entry", "Registrar", "Registry", "check_ref", "current_plugin", "resolve_ref"]

T = TypeVar("T")

#: ``(plugin name, is application override)`` of the plugin whose hook is running.
current_plugin: ContextVar[tuple[str, bool]] = ContextVar(
    "foundation_current_plugin", default=("<unknown>", True)
)


def check_ref(ref: str) -> None:
    """Refuse a lazy reference that is not ``"package.module:attr.path"``."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path or ":" in attr_path:
        raise ValueError(f"lazy reference {ref!r} is not of the form 'module:attribute'")


def resolve_ref(ref: str) -> Any:
    """Import ``"package.module:attr.path"`` and return the attribute."""
    check_ref(ref)
    module_name, _, attr_path = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


_order = itertools.count()


@attrs.define(slots=True)
class Entry:
    """One registration: the object (or its lazy ``module:attr`` reference) and who made it.
    ``shadowed`` (set on the winning entry) names the plugins whose registrations it hides."""

    name: str
    target: Any
    plugin: str
    app: bool
    replace: bool = False
    shadowed: list[str] = attrs.field(factory=list)
    _seq: int = attrs.field(factory=lambda: next(_order), alias="_seq")
    _resolved: Any = attrs.field(default=None, alias="_resolved")
    _is_resolved: bool = attrs.field(default=False, alias="_is_resolved")

    @property
    def lazy(self) -> bool:
        return isinstance(self.target, str) and not self._is_resolved

    @property
    def current(self) -> Any:
        """The object if resolved (or never lazy), else the reference."""
        return self._resolved if self._is_resolved else self.target

    @property
    def rank(self) -> tuple[bool, bool, int]:
        return (self.app, self.replace, self._seq)

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
    """Objects of one kind (``"pattern"``, ``"transport"``, ...) keyed by name.

    With ``factories=True`` (the hub's patterns, transports and model backends, which are called
    to be used) an object that is not callable is refused when registered, and a lazy reference
    to one when it is imported, naming the plugin, not later by whoever calls it."""

    def __init__(
        self, kind: str, hint: Callable[[str], str] | None = None, *, factories: bool = False
    ) -> None:
        self.kind = kind
        self._regs: dict[str, list[Entry]] = {}  # every registration of a name, in order
        self._entries: dict[str, Entry] = {}  # the winner of each name
        self._hint = hint
        self._factories = factories

    def add(self, name: str, target: Any, *, plugin: str, app: bool, replace: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if isinstance(target, str):
            try:
                check_ref(target)
            except ValueError as exc:
                raise ValueError(f"{self.kind} {name!r} of plugin {plugin!r}: {exc}") from None
        elif self._factories and not callable(target):
            raise TypeError(
                f"{self.kind} {name!r} of plugin {plugin!r}: {target!r} is not callable "
                f"(register a factory or class, or a lazy 'module:attribute' reference to one)"
            )
        regs = self._regs.setdefault(name, [])
        if not replace:
            for held in regs:
                if held.app == app and not held.replace:
                    raise NameClashError(self.kind, name, held.plugin, plugin, app=app)
        regs.append(Entry(name, target, plugin, app, replace))
        self._crown(name)

    def _crown(self, name: str) -> None:
        regs = self._regs.get(name)
        if not regs:
            self._regs.pop(name, None)
            self._entries.pop(name, None)
            return
        winner = max(regs, key=lambda e: e.rank)
        winner.shadowed = [e.plugin for e in regs if e is not winner]
        self._entries[name] = winner

    def get(self, name: str) -> T:
        """The registered object, importing a lazy reference on first use; a reference that does
        not import (or, in a registry of factories, names something not callable) is a
        :class:`~foundation_core.errors.PluginError` naming its plugin, also one whose import calls
        ``sys.exit()`` or raises any other ``BaseException`` (as a plugin's entry point doing so
        fails alone); ``KeyboardInterrupt`` passes."""
        entry = self.entry(name)
        try:
            value = entry.resolve()
        except KeyboardInterrupt:  # the user's Ctrl-C while it imports
            raise
        except BaseException as exc:  # a plugin's sys.exit() (or its own) must not end the process
            raise PluginError(
                entry.plugin, f"{self.kind} {name!r}: {entry.target!r} cannot be imported: {exc!r}"
            ) from exc
        if self._factories and not callable(value):  # a lazy one (the others were checked by add)
            raise PluginError(
                entry.plugin, f"{self.kind} {name!r}: {entry.target!r} is {value!r}, not callable"
            )
        return value  # type: ignore[no-any-return]

    def entry(self, name: str) -> Entry:
        if not isinstance(name, str):  # None or 5 failed in the hint's name.replace (AttributeError)
            listing = ", ".join(sorted(self._entries)) or "none"
            raise TypeError(
                f"a {self.kind} name is a str, not {type(name).__name__} {name!r} (registered: {listing})"
            )
        entry = self._entries.get(name)
        if entry is None:
            hint = self._hint(name) if self._hint else ""
            raise NotRegisteredError(self.kind, name, list(self._entries), hint)
        return entry

    def remove_plugin(self, plugin: str) -> list[str]:
        """Drop every registration ``plugin`` made (rollback of a failed plugin): each name goes
        back to the registration that wins without it. Returns the names it had won."""
        gone = sorted(n for n, e in self._entries.items() if e.plugin == plugin)
        for name in [n for n, regs in self._regs.items() if any(e.plugin == plugin for e in regs)]:
            self._regs[name] = [e for e in self._regs[name] if e.plugin != plugin]
            self._crown(name)
        return gone

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.plugin == plugin)

    def shadowed_of(self, plugin: str) -> dict[str, str]:
        """``{name: winning plugin}`` for each name ``plugin`` registered that another's
        registration hides (an application's, the core's, or one with ``replace=True``)."""
        return {
            n: self._entries[n].plugin
            for n, regs in sorted(self._regs.items())
            if self._entries[n].plugin != plugin and any(e.plugin == plugin for e in regs)
        }

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in sorted(self._entries)]

    def items(self) -> dict[str, Any]:
        """``{name: object}`` of the winners; a lazy reference not yet imported stays a string."""
        return {n: e.current for n, e in sorted(self._entries.items())}

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
