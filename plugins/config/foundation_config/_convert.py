"""A strict cattrs converter: no silent coercion (``"false"`` never becomes ``True``, a table
never becomes the list of its keys, text never the list of its characters).

Text from the environment or ``--set`` (``RawText``) is parsed as a TOML value unless the target
type takes text, so ``FOUNDATION_RETRY__MAX_ATTEMPTS=5`` is the int 5 and
``FOUNDATION_APP__NAME=5`` the string ``"5"``. Dynaconf's ``@`` tokens do not apply to it.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory

from ._layers import RawText

__all__ = ["Expected", "make_converter", "parse_raw", "takes_text"]


class Expected(TypeError):
    """A value of the wrong type; the message says what was expected and what was given."""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Expected(f"expected an integer, got {_describe(value)}")
    return value


def _float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Expected(f"expected a number, got {_describe(value)}")
    return float(value)


def _bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise Expected(f"expected true or false, got {_describe(value)}")
    return value


def _str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise Expected(f"expected a string, got {_describe(value)}")
    return str(value)


def takes_text(tp: Any) -> bool:
    """Whether ``tp`` accepts text as is (``str``, ``str | None``, a ``Literal`` of strings)."""
    if tp is str or tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(takes_text(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(tp))
    return False


def parse_raw(value: Any, tp: Any) -> Any:
    """Parse ``RawText`` for a non-text type (``"5"`` -> 5, ``"[1, 2]"`` -> [1, 2]), recursively."""
    if isinstance(value, dict):  # a table's values are parsed by its value type (dict[str, str]: text)
        args = typing.get_args(tp) if typing.get_origin(tp) in (dict, Mapping) else ()
        return {k: parse_raw(v, args[1] if len(args) == 2 else Any) for k, v in value.items()}
    if isinstance(value, list):
        args = typing.get_args(tp) if typing.get_origin(tp) in (list, Sequence, tuple) else ()
        item = args[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else Any
        return [parse_raw(v, item) for v in value]
    if not isinstance(value, RawText):
        return value
    if takes_text(tp) and tp is not Any:
        return str(value)
    import tomllib

    try:
        parsed = tomllib.loads(f"v = {value}")
    except Exception:  # not TOML: keep the text, the structuring step says what was expected
        return str(value)
    return parsed["v"] if list(parsed) == ["v"] else str(value)


_SETS = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
_LISTS = (list, collections.abc.MutableSequence)
_COLLECTIONS = (*_SETS, *_LISTS, tuple, collections.abc.Sequence)


def _is_collection(tp: Any) -> bool:
    return (typing.get_origin(tp) or tp) in _COLLECTIONS


def _collection_hook(tp: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """cattrs' own hook for ``tp``, given only a list (or a tuple or set): cattrs would iterate
    whatever it is given, making a table the list of its keys and text a list of characters."""
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    inner: Callable[[Any, Any], Any]
    if origin in _SETS:
        as_list: Any = types.GenericAlias(list, args[:1]) if args else list
        items = list_structure_factory(as_list, converter)
        kind = set if origin in (set, collections.abc.MutableSet) else frozenset

        def inner(value: Any, _: Any) -> Any:
            return kind(items(value, None))

    elif origin is tuple and args and args[-1] is not Ellipsis:
        inner = converter.gen_structure_hetero_tuple(tp)
    elif origin in _LISTS:
        inner = list_structure_factory(tp, converter)
    else:
        inner = homogenous_tuple_structure_factory(tp, converter)

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, Mapping):
            raise Expected(f"expected a list, got a table {dict(value)!r}")
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise Expected(f"expected a list, got {_describe(value)}")
        return inner(value, tp)

    return structure


def _is_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Literal


def _literal_hook(tp: Any) -> Callable[[Any, Any], Any]:
    """``Literal["lru", "lfu"]``: one of its values, of its type (``True`` is not ``1``); cattrs'
    own said "unknown error (mru not in literal typing.Literal['lru', 'lfu'])"."""
    allowed = typing.get_args(tp)

    def structure(value: Any, _: Any) -> Any:
        for option in allowed:
            if type(value) is type(option) and value == option:
                return option
        raise Expected(f"expected one of {', '.join(map(repr, allowed))}, got {_describe(value)}")

    return structure


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    converter.register_structure_hook(int, _int)
    converter.register_structure_hook(float, _float)
    converter.register_structure_hook(bool, _bool)
    converter.register_structure_hook(str, _str)
    converter.register_structure_hook_factory(_is_collection, lambda tp: _collection_hook(tp, converter))
    converter.register_structure_hook_factory(_is_literal, _literal_hook)
    return converter
