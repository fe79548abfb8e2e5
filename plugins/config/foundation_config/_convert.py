"""A strict cattrs converter: no silent coercion (``"false"`` never becomes ``True``).

Text from the environment or ``--set`` (``RawText``) is parsed with dynaconf's TOML-style value
parser unless the target type takes text, so ``FOUNDATION_RETRY__MAX_ATTEMPTS=5`` is the int 5
and ``FOUNDATION_APP__NAME=5`` the string ``"5"``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import cattrs

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
    from dynaconf.utils.parse_conf import parse_conf_data

    try:
        return parse_conf_data(str(value), tomlfy=True, box_settings={})
    except Exception:  # not TOML: keep the text, the structuring step says what was expected
        return str(value)


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    converter.register_structure_hook(int, _int)
    converter.register_structure_hook(float, _float)
    converter.register_structure_hook(bool, _bool)
    converter.register_structure_hook(str, _str)
    return converter
