"""Turning spec values into Python (errors, predicates) and comparing what happened to ``expect``."""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from foundation_core import errors as core_errors

__all__ = ["compare", "error_class", "make_error", "policy_value"]

_TOL = 1e-6
# Positional arguments for the pattern errors, whose constructors need more than a message.
_ERROR_ARGS: dict[str, tuple[Any, ...]] = {
    "CircuitOpenError": ("upstream", 1.0),
    "RateLimited": ("upstream", 1.0),
    "TimeoutExceeded": ("upstream", 1.0),
    "RetryError": ("upstream", 1, 0.0),
}


def error_class(name: str) -> type[BaseException]:
    """A Foundation error or a builtin exception, by name (looked up, never imported)."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"{name!r} is neither a foundation_core.errors class nor a builtin exception")
    cls = getattr(core_errors, name, None) or getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise ValueError(f"{name!r} is neither a foundation_core.errors class nor a builtin exception")
    return cls


def make_error(name: str) -> BaseException:
    return error_class(name)(*_ERROR_ARGS.get(name, (f"conformance: {name}",)))


def policy_value(kind: str, value: Any) -> Any:
    """A spec parameter value as the policy takes it (predicates built from ``result_in``)."""
    if kind == "callable" and isinstance(value, Mapping):
        allowed = list(value.get("result_in", []))
        return lambda result: result in allowed
    if kind == "exceptions" and isinstance(value, list):
        return tuple(error_class(v) if isinstance(v, str) else v for v in value)
    return value


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, BaseException):
        return isinstance(actual, error_class(expected))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=_TOL, abs_tol=_TOL)
    return bool(expected == actual)


def _flatten(outcomes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in outcomes for _ in range(int(o.get("times", 1)))]


def _check_outcome(i: int, expected: Mapping[str, Any], actual: tuple[str, Any]) -> list[str]:
    kind, value = actual
    got = f"returned {value!r}" if kind == "returns" else f"raised {value!r}"
    if "returns" in expected:
        if kind != "returns" or not _same(expected["returns"], value):
            return [f"call {i}: expected to return {expected['returns']!r}, {got}"]
        return []
    want = expected["raises"]
    if kind != "raises" or not isinstance(value, error_class(want)):
        return [f"call {i}: expected to raise {want}, {got}"]
    problems = []
    for field, exp in (expected.get("fields") or {}).items():
        if not hasattr(value, field):
            problems.append(f"call {i}: {want} has no field {field!r}")
        elif not _same(exp, getattr(value, field)):
            problems.append(f"call {i}: {want}.{field} = {getattr(value, field)!r}, expected {exp!r}")
    if "cause" in expected:
        cause, want_cause = value.__cause__, expected["cause"]
        ok = cause is None if want_cause is None else isinstance(cause, error_class(want_cause))
        if not ok:
            problems.append(f"call {i}: __cause__ is {cause!r}, expected {want_cause}")
    return problems


def compare(
    expect: Mapping[str, Any],
    outcomes: list[tuple[str, Any]],
    invocations: int,
    sleeps: list[float],
    events: list[dict[str, Any]],
) -> list[str]:
    """Every difference between ``expect`` and what happened, as readable lines."""
    problems: list[str] = []
    for i, (exp, act) in enumerate(zip(_flatten(expect["outcomes"]), outcomes, strict=True), 1):
        problems += _check_outcome(i, exp, act)
    if "invocations" in expect and expect["invocations"] != invocations:
        problems.append(f"the function was invoked {invocations} time(s), expected {expect['invocations']}")
    if "sleeps" in expect:
        want = expect["sleeps"]
        if len(want) != len(sleeps) or not all(_same(w, s) for w, s in zip(want, sleeps, strict=False)):
            problems.append(f"waits were {_fmt(sleeps)}, expected {_fmt(want)}")
    if "sleeps_between" in expect:
        bounds = expect["sleeps_between"]
        inside = len(bounds) == len(sleeps) and all(
            lo - _TOL <= s <= hi + _TOL for (lo, hi), s in zip(bounds, sleeps, strict=False)
        )
        if not inside:
            problems.append(f"waits were {_fmt(sleeps)}, expected within {bounds}")
    if "events" in expect:
        problems += _check_events(expect["events"], events)
    return problems


def _check_events(want: Sequence[Mapping[str, Any]], got: list[dict[str, Any]]) -> list[str]:
    shown = [_brief(e) for e in got]
    if len(want) != len(got):
        return [f"{len(got)} event(s) {shown}, expected {len(want)}: {list(want)}"]
    for i, (exp, act) in enumerate(zip(want, got, strict=True), 1):
        for key, value in exp.items():
            if key not in act or not _same(value, act[key]):
                return [f"event {i} was {_brief(act)}, expected {dict(exp)}"]
    return []


def _brief(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (repr(v) if isinstance(v, BaseException) else v) for k, v in event.items() if k != "name"}


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


Check = Callable[..., list[str]]
