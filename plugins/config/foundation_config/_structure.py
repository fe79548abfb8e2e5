"""Structure each section's merged values into its frozen attrs class, collecting every problem.

Fields are structured one by one with the strict converter, then their validators run, then the
class is built (for checks across fields): one wrong value never hides another.
"""

from __future__ import annotations

import collections.abc
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import cattrs

from foundation_core.errors import ConfigProblem

from ._convert import Expected, make_converter, parse_raw
from ._layers import shape_problem

__all__ = ["code_only", "did_you_mean", "field_types", "structure_section"]


@attrs.frozen
class Unresolved:
    """The annotation of a field that cannot be resolved at run time (it names something the
    module imports only under ``TYPE_CHECKING``), and why."""

    annotation: str
    error: str

    def __str__(self) -> str:
        return self.annotation


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Each init field's resolved type; :class:`Unresolved` for one whose annotation cannot be
    resolved. One such field no longer leaves the others unresolved (as annotation strings, which
    the converter refused: "unknown error (Unsupported type: 'int')")."""
    fields = [f for f in attrs.fields(cls) if f.init]
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {f.name: _resolve_field(cls, f.name, f.type) for f in fields}
    return {f.alias or f.name: hints.get(f.name, f.type or Any) for f in fields}


def _resolve_field(cls: type[Any], name: str, annotation: Any) -> Any:
    """Field ``name``'s annotation resolved alone, in the module of the class that declares it."""
    if not isinstance(annotation, str):
        return Any if annotation is None else annotation
    owners = [k for k in cls.__mro__ if name in vars(k).get("__annotations__", {})] or [cls]
    error = ""
    for owner in owners:
        holder = type("_Field", (), {"__annotations__": {name: annotation}, "__module__": owner.__module__})
        try:
            return typing.get_type_hints(holder)[name]
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    return Unresolved(annotation, error)


def code_only(tp: Any) -> bool:
    """Whether a field of type ``tp`` takes a function (``Callable``, or ``Callable | None``): such
    a field is given in code (the section's class, ``hub.pipeline(...)``), never by configuration,
    which holds data, not code; ``config show`` leaves it out."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(args) and all(code_only(a) for a in args)
    return typing.get_origin(tp) is collections.abc.Callable or tp is collections.abc.Callable


def _messages(exc: BaseException, path: str) -> list[tuple[str, str]]:
    """(path, message) for every leaf error in a cattrs exception group."""

    def fmt(e: BaseException, tp: type | None) -> str:
        if isinstance(e, Expected):
            return str(e)
        if isinstance(e, cattrs.ForbiddenExtraKeysError):
            return f"unknown keys {sorted(e.extra_fields)}"
        return cattrs.v.format_exception(e, tp)

    out = []
    for line in cattrs.transform_error(exc, path=path, format_exception=fmt):
        message, _, where = line.rpartition(" @ ")
        out.append((where or path, message or line))
    return out


def structure_section(
    name: str,
    cls: type[Any],
    values: Mapping[str, Any],
    origin: Callable[[str], str],
    strict: bool,
) -> tuple[Any, list[ConfigProblem], list[ConfigProblem]]:
    """(instance or None, problems, warnings) for section ``name`` from its merged ``values``."""
    converter = _converter()
    types_ = field_types(cls)
    fields = {f.alias or f.name: f for f in attrs.fields(cls) if f.init}
    problems: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    if not isinstance(values, Mapping):
        src = origin(name)
        return None, [ConfigProblem(name, f"expected a table of keys, got {values!r}", src)], []
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{name}.{key}"
        if key not in fields:
            found = ConfigProblem(
                path, f"unknown key in section {name!r}{did_you_mean(key, fields)}", origin(path)
            )
            (problems if strict else warnings).append(found)
            continue
        if isinstance(types_[key], Unresolved):
            problems.append(
                ConfigProblem(
                    path,
                    f"its type {types_[key].annotation!r} (in {cls.__module__}.{cls.__qualname__}) "
                    f"cannot be resolved at run time ({types_[key].error}): import what it names "
                    f"at run time in {cls.__module__}, not only under TYPE_CHECKING",
                    origin(path),
                )
            )
            continue
        if code_only(types_[key]):
            problems.append(
                ConfigProblem(
                    path,
                    f"takes a function, which is given in code ({cls.__name__}(...) or "
                    f"hub.pipeline({name}={{...}})), not by configuration",
                    origin(path),
                )
            )
            continue
        parsed = parse_raw(value, types_[key])
        problem = _list_problem(parsed, types_[key])
        if problem is None and parsed is not value:  # text parsed as TOML
            problem = shape_problem(parsed, 2)
        if problem:
            problems.append(ConfigProblem(path, problem, origin(path)))
            continue
        try:
            kwargs[key] = converter.structure(parsed, types_[key])
        except Exception as exc:
            problems.extend(ConfigProblem(p, m, origin(path)) for p, m in _messages(exc, path))
    for key, field in fields.items():
        if key not in kwargs and field.default is attrs.NOTHING and key not in values:
            problems.append(
                ConfigProblem(
                    f"{name}.{key}", f"required: no default, expected {_type_name(types_[key])}", ""
                )
            )
    problems.extend(_validator_problems(name, fields, kwargs, origin))
    if problems:
        return None, problems, warnings
    try:
        return cls(**kwargs), [], warnings
    except Exception as exc:  # a check across fields (or any validator) refused the values
        param = getattr(exc, "parameter", None)
        path = f"{name}.{param}" if isinstance(param, str) else name
        return None, [ConfigProblem(path, str(exc), origin(path))], warnings


def _list_problem(parsed: Any, tp: Any) -> str | None:
    """Why a value for a list field is not a list, when it is text or a table: cattrs would
    iterate it (``"ConnectionError"`` into its characters)."""
    if not (_is_sequence(tp) and isinstance(parsed, (str, Mapping))):
        return None
    if isinstance(parsed, str):
        text = str(parsed)
        return f"expected a list, got {text!r}: write [{text!r}]"
    # FOUNDATION_S__TAGS__0=x or --set s.tags.0=x: a list is set whole
    return f"expected a list, got a table {dict(parsed)!r}: a list is set whole, as [...]"


def _validator_problems(
    name: str, fields: Mapping[str, Any], kwargs: Mapping[str, Any], origin: Callable[[str], str]
) -> list[ConfigProblem]:
    """What each structured field's own validator refuses, before the class is built (so that one
    wrong value does not hide another)."""
    problems: list[ConfigProblem] = []
    for key, value in kwargs.items():
        field = fields[key]
        if field.validator is None or field.converter is not None:
            continue
        try:
            field.validator(None, field, value)
        except (ValueError, TypeError) as exc:
            problems.append(ConfigProblem(f"{name}.{key}", str(exc), origin(f"{name}.{key}")))
        except Exception:  # a validator that needs the instance runs when the class is built
            pass
    return problems


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near name (the same but for case first), else the known ones."""
    known = list(known)
    near = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(sorted(known))})"


def _is_sequence(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple, set, frozenset, Sequence)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


_CONVERTER: cattrs.Converter | None = None


def _converter() -> cattrs.Converter:
    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = make_converter()
    return _CONVERTER
