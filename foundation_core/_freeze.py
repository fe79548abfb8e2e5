"""Deep-freeze a structured section: dict and list values inside it refuse mutation too, and a set
becomes a frozenset. Used for the defaults (no config plugin installed) and by the config plugin."""

from __future__ import annotations

import warnings
from typing import Any, NoReturn

import attrs

__all__ = ["FrozenDict", "FrozenList", "freeze_section"]


def _refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise attrs.exceptions.FrozenInstanceError()


class FrozenDict(dict[Any, Any]):
    """A dict that raises ``FrozenInstanceError`` on any change (still a ``dict`` for readers)."""

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse


class FrozenList(list[Any]):
    """A list that raises ``FrozenInstanceError`` on any change (still a ``list`` for readers)."""

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = _refuse
    sort = reverse = __iadd__ = __imul__ = _refuse


#: Containers nested deeper than this in a section are refused (a config is no deep tree; this
#: keeps freezing far from the interpreter's recursion limit).
MAX_DEPTH = 100


class _Untreelike(ValueError):
    """A value that contains itself or is nested too deeply; ``path`` is filled on the way out."""

    def __init__(self, fault: str) -> None:
        super().__init__(fault)
        self.fault = fault
        self.path: list[str] = []


def _child(value: Any, step: str, outer: set[int]) -> Any:
    try:
        return _freeze(value, outer)
    except _Untreelike as exc:
        exc.path.insert(0, step)
        raise


def _freeze(value: Any, outer: set[int]) -> Any:
    is_attrs = attrs.has(type(value))
    if not (is_attrs or isinstance(value, set | dict | list | tuple)):
        return value
    if id(value) in outer:
        raise _Untreelike("contains itself")
    if len(outer) >= MAX_DEPTH:
        raise _Untreelike(f"is nested more than {MAX_DEPTH} containers deep")
    outer.add(id(value))
    try:
        if isinstance(value, set):  # a set[...] field: its frozen form is a frozenset
            return frozenset(_child(v, "{}", outer) for v in value)
        if isinstance(value, dict) and not isinstance(value, FrozenDict):
            return FrozenDict({k: _child(v, f"[{k!r}]", outer) for k, v in value.items()})
        if isinstance(value, list) and not isinstance(value, FrozenList):
            return FrozenList(_child(v, f"[{i}]", outer) for i, v in enumerate(value))
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(_child(v, f"[{i}]", outer) for i, v in enumerate(value))
        if is_attrs:
            _freeze_fields(value, outer)
        return value
    finally:
        outer.discard(id(value))


def _freeze_fields(instance: Any, outer: set[int]) -> None:
    for field in attrs.fields(type(instance)):
        value = getattr(instance, field.name)
        frozen = _child(value, f".{field.name}", outer)
        if frozen is not value:
            object.__setattr__(instance, field.name, frozen)


def freeze_section(instance: Any, *, warn: bool = True, name: str = "") -> Any:
    """Freeze container values of an attrs instance in place; warn if its class is not frozen.
    A value that contains itself, or containers nested more than :data:`MAX_DEPTH` deep, is a
    ``ValueError`` naming the section and the path to it."""
    cls = type(instance)
    if warn and not _is_frozen(cls):
        warnings.warn(
            f"config section {name!r} ({cls.__qualname__}) is not a frozen attrs class; "
            "declare it with @attrs.frozen so that it cannot change after start-up",
            stacklevel=2,
        )
    try:
        _freeze_fields(instance, {id(instance)})
    except _Untreelike as exc:
        where = (name or cls.__qualname__) + "".join(exc.path)
        raise ValueError(
            f"config section {name or cls.__qualname__!r}: the value at {where} {exc.fault} "
            f"(a section's values must form a tree of plain values)"
        ) from None
    return instance


def _is_frozen(cls: type[Any]) -> bool:
    return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"
