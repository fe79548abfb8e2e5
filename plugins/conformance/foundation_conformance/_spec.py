"""Loading and validating the language-neutral pattern specs (``docs/patterns/*.yaml``).

Every structural problem raises :class:`~foundation_core.errors.SpecError` naming the file and,
where it applies, the case, before any case runs.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from foundation_core.errors import SpecError

__all__ = ["Case", "Spec", "default_specs_dir", "load_spec", "load_specs"]

_TOP_KEYS = {"pattern_id", "version", "summary", "semantics", "exceptions", "guarantees", "cases"}
_BEHAVIOUR_KEYS = {"return", "raise", "sleep"}
_EXPECT_KEYS = {"outcomes", "invocations", "sleeps", "sleeps_between", "events"}
_OUTCOME_KEYS = {"returns", "raises", "fields", "cause", "times"}
_PARAM_TYPES = {"int", "float", "bool", "str", "exceptions", "callable", "any"}
# The calls one case may make (the runner makes every one of them, twice); the bounds on the file
# itself are in ._yaml.
MAX_CASE_CALLS = 10_000


@attrs.frozen
class Case:
    """One ``given``/``expect`` case of a spec."""

    name: str
    policy: Mapping[str, Any]
    function: tuple[Mapping[str, Any], ...]
    actions: tuple[Any, ...]
    expect: Mapping[str, Any]
    modes: tuple[str, ...] = ("sync", "async")


@attrs.frozen
class Spec:
    """A pattern's spec: its parameters (name -> description mapping) and its cases."""

    pattern_id: str
    version: int
    file: str
    parameters: Mapping[str, Mapping[str, Any]]
    cases: tuple[Case, ...]
    raw: Mapping[str, Any] = attrs.field(repr=False)


def default_specs_dir() -> Path:
    """``$FOUNDATION_PATTERN_SPECS``, else the specs shipped in this package (in a checkout, a
    link to ``docs/patterns``)."""
    env = os.environ.get("FOUNDATION_PATTERN_SPECS")
    return Path(env) if env else Path(__file__).with_name("specs")


def load_specs(directory: Path | str | None = None) -> dict[str, Spec]:
    """Every ``*.yaml`` spec in ``directory``, by pattern id."""
    folder = Path(directory) if directory is not None else default_specs_dir()
    if not folder.is_dir():
        raise SpecError(str(folder), "is not a directory of pattern specs")
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise SpecError(str(folder), "no pattern spec files (*.yaml) found")
    specs: dict[str, Spec] = {}
    for path in files:
        spec = load_spec(path)
        if spec.pattern_id in specs:
            raise SpecError(
                str(path), f"pattern_id {spec.pattern_id!r} also defined in {specs[spec.pattern_id].file}"
            )
        specs[spec.pattern_id] = spec
    return specs


def load_spec(path: Path | str) -> Spec:
    """One spec file, validated: any problem is a :class:`SpecError` naming the file, the case
    and the field, raised before anything runs."""
    from ._yaml import read_spec_yaml  # only the runner needs yaml

    file = str(path)
    raw = read_spec_yaml(file)
    if not isinstance(raw, dict):
        raise SpecError(file, "the top level must be a mapping")
    missing = sorted(_TOP_KEYS - {"summary"} - set(raw))
    if missing:
        raise SpecError(file, f"missing top-level key(s): {', '.join(missing)}")
    unknown = sorted(map(str, set(raw) - _TOP_KEYS))
    if unknown:
        raise SpecError(file, f"unknown top-level key(s): {', '.join(unknown)}")
    if not _is_name(raw["pattern_id"]):
        raise SpecError(file, f"pattern_id must be {_NAME_RULE}, got {_brief(raw['pattern_id'])}")
    if not _is_int(raw["version"]) or raw["version"] < 1:
        raise SpecError(file, f"version must be a positive integer, got {_brief(raw['version'])}")
    params = _parameters(file, raw["semantics"])
    exceptions = raw["exceptions"]
    if not isinstance(exceptions, dict) or not {"retryable", "non_retryable"} <= set(exceptions):
        raise SpecError(file, "exceptions must be a mapping with retryable and non_retryable lists")
    if not isinstance(raw["guarantees"], list) or not raw["guarantees"]:
        raise SpecError(file, "guarantees must be a non-empty list")
    if not isinstance(raw["cases"], list) or not raw["cases"]:
        raise SpecError(file, "cases must be a non-empty list")
    cases = [_case(file, i, c, params) for i, c in enumerate(raw["cases"])]
    counts = Counter(c.name for c in cases)
    dupes = sorted(n for n, k in counts.items() if k > 1)
    if dupes:
        raise SpecError(file, "duplicate case name(s)", case=", ".join(dupes))
    return Spec(raw["pattern_id"], raw["version"], file, params, tuple(cases), raw)


def _parameters(file: str, semantics: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(semantics, dict) or not isinstance(semantics.get("parameters"), dict):
        raise SpecError(file, "semantics.parameters must be a mapping of parameter name -> description")
    params: dict[str, Mapping[str, Any]] = semantics["parameters"]
    for name, desc in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(file, f"parameter name {_brief(name)} is not an identifier")
        if (
            not isinstance(desc, dict)
            or not isinstance(desc.get("type"), str)
            or desc["type"] not in _PARAM_TYPES
            or "default" not in desc
        ):
            raise SpecError(
                file,
                f"parameter {name!r} needs a type (one of {', '.join(sorted(_PARAM_TYPES))}) and a default",
            )
        rng = desc.get("range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2):
            raise SpecError(file, f"parameter {name!r}: range must be [low, high]")
        if not isinstance(desc.get("invalid", []), list):
            raise SpecError(file, f"parameter {name!r}: invalid must be a list of values")
        if desc["type"] == "exceptions":
            problem = _error_names(desc["default"])
            if problem:
                raise SpecError(file, f"parameter {name!r}: default {problem}")
    return params


def _case(file: str, index: int, raw: Any, params: Mapping[str, Any]) -> Case:
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not name:
        raise SpecError(file, f"case #{index + 1} has no name", case=f"#{index + 1}")
    if not _is_name(name):  # names are printed as they are: no escape sequences, no forged lines
        raise SpecError(file, f"name {_brief(name)} must be {_NAME_RULE}", case=f"#{index + 1}")

    def bad(message: str) -> SpecError:
        return SpecError(file, message, case=name)

    unknown = sorted(map(str, set(raw) - {"name", "description", "given", "expect", "modes"}))
    if unknown:
        raise bad(f"unknown key(s): {', '.join(unknown)}")
    given, expect = raw.get("given"), raw.get("expect")
    if not isinstance(given, dict) or not isinstance(expect, dict):
        raise bad("needs a 'given' mapping and an 'expect' mapping")
    unknown = sorted(map(str, set(given) - {"policy", "function", "actions"}))
    if unknown:
        raise bad(f"unknown key(s) in given: {', '.join(unknown)}")
    policy = given.get("policy") or {}
    if not isinstance(policy, dict):
        raise bad("given.policy must be a mapping")
    for key, value in policy.items():
        if key not in params:
            raise bad(f"unknown parameter {key!r} in given.policy (parameters: {', '.join(params)})")
        _check_policy_value(params[key]["type"], key, value, bad)
    function = given.get("function")
    if not isinstance(function, list) or not function:
        raise bad("given.function must be a non-empty list of behaviours")
    for step in function:
        _check_behaviour(step, bad)
    actions = given.get("actions", ["call"])
    calls = _count_calls(actions, bad)
    _check_expect(expect, calls, bad)
    modes = raw.get("modes", ["sync", "async"])
    if (
        not isinstance(modes, list)
        or not modes
        or not all(isinstance(m, str) and m in {"sync", "async"} for m in modes)
        or len(set(modes)) != len(modes)
    ):
        raise bad(f"modes must be a non-empty subset of [sync, async], got {_brief(modes)}")
    return Case(name, policy, tuple(function), tuple(actions), expect, tuple(modes))


def _check_policy_value(kind: str, key: str, value: Any, bad: Callable[[str], SpecError]) -> None:
    """The values the runner turns into Python (exception names, ``result_in`` predicates)."""
    if kind == "exceptions" and isinstance(value, list):
        problem = _error_names(value)
        if problem:
            raise bad(f"given.policy.{key}: {problem}")
    if (
        kind == "callable"
        and isinstance(value, dict)
        and (set(value) != {"result_in"} or not isinstance(value["result_in"], list))
    ):
        raise bad(f"given.policy.{key}: a predicate is {{result_in: [values]}}, got {_brief(value)}")


def _check_behaviour(step: Any, bad: Callable[[str], SpecError]) -> None:
    if (
        not isinstance(step, dict)
        or not set(step) <= _BEHAVIOUR_KEYS
        or ("return" in step) == ("raise" in step)
    ):
        raise bad(
            f"behaviour {_brief(step)}: use {{return: V}} or {{raise: Error}}, optionally with sleep: S"
        )
    if "raise" in step:
        problem = _error_names([step["raise"]])
        if problem:
            raise bad(f"given.function raise: {problem}")
        if step["raise"] == "KeyboardInterrupt":  # the runner could not tell it from a Ctrl-C
            raise bad("given.function raise: KeyboardInterrupt cannot be simulated (it stops the run)")
        from ._checks import make_error

        try:
            make_error(step["raise"])
        except Exception as exc:  # its constructor needs arguments the suite does not have
            raise bad(f"given.function raise: {step['raise']} cannot be raised by the suite: {exc}") from exc
    if "sleep" in step and not _is_seconds(step["sleep"]):
        raise bad(
            f"given.function sleep: must be a finite number of seconds >= 0, got {_brief(step['sleep'])}"
        )


def _check_expect(expect: Mapping[str, Any], calls: int, bad: Callable[[str], SpecError]) -> None:
    unknown = sorted(map(str, set(expect) - _EXPECT_KEYS))
    if unknown:
        raise bad(
            f"unknown key(s) in expect: {', '.join(unknown)} (known: {', '.join(sorted(_EXPECT_KEYS))})"
        )
    outcomes = expect.get("outcomes")
    if not isinstance(outcomes, list):
        raise bad("expect.outcomes must be a list, one entry per call")
    total = 0
    for outcome in outcomes:
        if (
            not isinstance(outcome, dict)
            or not set(outcome) <= _OUTCOME_KEYS
            or (("returns" in outcome) == ("raises" in outcome))
        ):
            raise bad(
                f"outcome {_brief(outcome)}: use {{returns: V}} or"
                " {raises: Error, fields: {...}, cause: Error}"
            )
        times = outcome.get("times", 1)
        if not _is_int(times) or not 1 <= times <= MAX_CASE_CALLS:
            raise bad(f"expect.outcomes times: must be an integer 1..{MAX_CASE_CALLS}, got {_brief(times)}")
        total += times
        for key in ("raises", "cause"):
            if key in outcome and not (key == "cause" and outcome[key] is None):
                problem = _error_names([outcome[key]])
                if problem:
                    raise bad(f"expect.outcomes {key}: {problem}")
        fields = outcome.get("fields")
        if fields is not None and not (isinstance(fields, dict) and all(isinstance(k, str) for k in fields)):
            raise bad(
                f"expect.outcomes fields: must be a mapping of field name -> value, got {_brief(fields)}"
            )
    if total != calls:
        raise bad(f"expect.outcomes describes {total} call(s) but given.actions makes {calls}")
    invocations = expect.get("invocations", 0)
    if not _is_int(invocations) or invocations < 0:
        raise bad(f"expect.invocations must be an integer >= 0, got {_brief(invocations)}")
    sleeps = expect.get("sleeps", [])
    if not isinstance(sleeps, list) or not all(_is_seconds(s) for s in sleeps):
        raise bad(f"expect.sleeps must be a list of finite seconds >= 0, got {_brief(sleeps)}")
    bounds = expect.get("sleeps_between", [])
    if not isinstance(bounds, list) or not all(
        isinstance(b, list) and len(b) == 2 and all(_is_number(x) for x in b) for b in bounds
    ):
        raise bad(f"expect.sleeps_between must be a list of [low, high] pairs, got {_brief(bounds)}")
    events = expect.get("events", [])
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and all(isinstance(k, str) for k in e) for e in events
    ):
        raise bad(f"expect.events must be a list of mappings ({{event: NAME, ...}}), got {_brief(events)}")


def _count_calls(actions: Any, bad: Callable[[str], SpecError]) -> int:
    if not isinstance(actions, list):
        raise bad("given.actions must be a list")
    calls = 0
    for action in actions:
        if action == "call":
            calls += 1
        elif isinstance(action, dict) and set(action) == {"call"} and _is_int(action["call"]):
            if not 1 <= action["call"] <= MAX_CASE_CALLS:
                raise bad(f"action {{call: N}}: N must be 1..{MAX_CASE_CALLS}, got {_brief(action['call'])}")
            calls += action["call"]
        elif isinstance(action, dict) and set(action) == {"advance"} and _is_number(action["advance"]):
            if not _is_seconds(action["advance"]):
                raise bad(f"action {{advance: S}}: S must be finite and >= 0, got {action['advance']!r}")
        else:
            raise bad(f"action {_brief(action)}: use 'call', {{call: N}} or {{advance: seconds}}")
        if calls > MAX_CASE_CALLS:
            raise bad(f"given.actions makes over {MAX_CASE_CALLS} calls")
    return calls


def _error_names(names: Any) -> str:
    """What is wrong with a list of exception names ('' if nothing): each must name a
    ``foundation_core.errors`` class or a builtin exception (looked up, never imported)."""
    from ._checks import error_class

    if not isinstance(names, list):
        return f"must be a list of exception names, got {_brief(names)}"
    for n in names:
        try:
            error_class(n)
        except ValueError as exc:
            return str(exc)
    return ""


_NAME_RULE = "printable text of 1 to 200 characters (no control characters or line breaks)"


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_seconds(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= 0


def _brief(value: Any) -> str:
    """A value for an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
