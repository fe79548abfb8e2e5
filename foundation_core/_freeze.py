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


def _freeze(value: Any) -> Any:
    if isinstance(value, set):  # a set[...] field: its frozen form is a frozenset
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, dict) and not isinstance(value, FrozenDict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list) and not isinstance(value, FrozenList):
        return FrozenList(_freeze(v) for v in value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_freeze(v) for v in value)
    if attrs.has(type(value)):
        return freeze_section(value, warn=False)
    return value


def freeze_section(instance: Any, *, warn: bool = True, name: str = "") -> Any:
    """Freeze container values of an attrs instance in place; warn if its class is not frozen."""
    cls = type(instance)
    if warn and not _is_frozen(cls):
        warnings.warn(
            f"config section {name!r} ({cls.__qualname__}) is not a frozen attrs class; "
            "declare it with @attrs.frozen so that it cannot change after start-up",
            stacklevel=2,
        )
    for field in attrs.fields(cls):
        value = getattr(instance, field.name)
        frozen = _freeze(value)
        if frozen is not value:
            object.__setattr__(instance, field.name, frozen)
    return instance


def _is_frozen(cls: type[Any]) -> bool:
    return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"
