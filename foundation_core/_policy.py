"""Validators and converters shared by the pattern policies (frozen attrs classes).

A validator raises :class:`~foundation_core.errors.PolicyError` naming the policy, the parameter,
the value and the allowed range, so a bad config value is reported where it was written.
"""

from __future__ import annotations

import builtins
import importlib
import math
from collections.abc import Callable, Iterable
from typing import Any

from . import errors
from .errors import PolicyError

__all__ = ["exception_types", "exception_set", "in_range", "is_bool", "one_of", "optional_in_range"]

Validator = Callable[[Any, Any, Any], None]


def _describe(lo: float, hi: float, unit: str, lo_open: bool, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    left = "(" if lo_open else "["
    suffix = f" {unit}" if unit else ""
    return f"{kind} in {left}{lo:g}, {hi:g}]{suffix}"


def in_range(
    policy: str, lo: float, hi: float, *, unit: str = "", lo_open: bool = False, integer: bool = False
) -> Validator:
    """A validator: the value is a number (an int when ``integer``) within ``lo..hi``."""
    allowed = _describe(lo, hi, unit, lo_open, integer)

    def check(_inst: Any, attribute: Any, value: Any) -> None:
        types: tuple[type, ...] = (int,) if integer else (int, float)
        ok = isinstance(value, types) and not isinstance(value, bool)
        if ok and not integer:
            try:
                ok = math.isfinite(value)
            except OverflowError:  # an int past the float range (10**400 from YAML)
                ok = False
        if ok:
            ok = (lo < value if lo_open else lo <= value) and value <= hi
        if not ok:
            raise PolicyError(policy, attribute.name, value, allowed)

    return check


def optional_in_range(
    policy: str, lo: float, hi: float, *, unit: str = "", lo_open: bool = False
) -> Validator:
    """Like :func:`in_range`, but ``None`` (meaning "off") is also allowed."""
    inner = in_range(policy, lo, hi, unit=unit, lo_open=lo_open)
    allowed = "None (off) or " + _describe(lo, hi, unit, lo_open, False)

    def check(inst: Any, attribute: Any, value: Any) -> None:
        if value is None:
            return
        try:
            inner(inst, attribute, value)
        except PolicyError:
            raise PolicyError(policy, attribute.name, value, allowed) from None

    return check


def one_of(policy: str, choices: Iterable[str]) -> Validator:
    """A validator: the value is one of ``choices``."""
    options = tuple(choices)
    allowed = "one of " + ", ".join(repr(c) for c in options)

    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if value not in options:
            raise PolicyError(policy, attribute.name, value, allowed)

    return check


def _resolve_exception(name: str) -> type[BaseException]:
    """A builtin's name (``"ConnectionError"``), one of Foundation's own errors by its bare name
    (``"CircuitOpenError"``, as the pattern specs and retry's default write it), or
    ``"pkg.mod:Error"`` / ``"pkg.mod.Error"``."""
    module, sep, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    why = ""
    if not sep:
        obj = getattr(builtins, name, None)
        if obj is None:
            obj = getattr(errors, name, None)
    else:
        try:
            obj = getattr(importlib.import_module(module), attr, None)
        except KeyboardInterrupt:  # the user's Ctrl-C while it imports
            raise
        except BaseException as exc:  # any other failure of the module, sys.exit() included
            obj, why = None, f": module {module!r} cannot be imported ({_failure(exc)})"
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        if not why and not sep:
            why = " (a builtin exception, one of foundation_core.errors, or 'package.module:Error')"
        raise ValueError(f"{name!r} does not name an exception class{why}")
    return obj


def _failure(exc: BaseException) -> str:
    """An import's failure as an error quotes it: an ImportError's own words, else its type too."""
    return str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"


def exception_types(value: Any) -> tuple[type[BaseException], ...]:
    """Convert exception classes or their names (``"ConnectionError"``, ``"CircuitOpenError"``,
    ``"pkg.mod:Error"``)."""
    items = (value,) if isinstance(value, (str, type)) else tuple(value)
    out: list[type[BaseException]] = []
    for item in items:
        if isinstance(item, str):
            out.append(_resolve_exception(item))
        elif isinstance(item, type) and issubclass(item, BaseException):
            out.append(item)
        else:
            raise ValueError(f"{item!r} is not an exception class or the name of one")
    return tuple(out)


def exception_set(policy: str, parameter: str, value: Any) -> tuple[type[BaseException], ...]:
    """Convert an exception-set parameter; a bad entry is a PolicyError naming the parameter.

    Policies call it from a small named converter per field (mypy's attrs plugin needs one).
    """
    try:
        return exception_types(value)
    except (ValueError, TypeError) as exc:
        raise PolicyError(policy, parameter, value, f"exception classes or their names ({exc})") from None


def is_bool(policy: str) -> Validator:
    """A validator: the value is ``True`` or ``False`` (not merely truthy)."""

    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, bool):
            raise PolicyError(policy, attribute.name, value, "true or false")

    return check
