"""Loading and validating the language-neutral pattern specs (``docs/patterns/*.yaml``).

Every structural problem raises :class:`~foundation_core.errors.SpecError` naming the file and,
where it applies, the case, before any case runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    import yaml  # only the runner needs it

    file = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(file, f"cannot be read as YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(file, "the top level must be a mapping")
    missing = sorted(_TOP_KEYS - {"summary"} - set(raw))
    if missing:
        raise SpecError(file, f"missing top-level key(s): {', '.join(missing)}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise SpecError(file, f"unknown top-level key(s): {', '.join(unknown)}")
    params = _parameters(file, raw["semantics"])
    exceptions = raw["exceptions"]
    if not isinstance(exceptions, dict) or not {"retryable", "non_retryable"} <= set(exceptions):
        raise SpecError(file, "exceptions must be a mapping with retryable and non_retryable lists")
    if not isinstance(raw["guarantees"], list) or not raw["guarantees"]:
        raise SpecError(file, "guarantees must be a non-empty list")
    if not isinstance(raw["cases"], list) or not raw["cases"]:
        raise SpecError(file, "cases must be a non-empty list")
    cases = [_case(file, i, c, params) for i, c in enumerate(raw["cases"])]
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(file, "duplicate case name(s)", case=", ".join(dupes))
    return Spec(str(raw["pattern_id"]), int(raw["version"]), file, params, tuple(cases), raw)


def _parameters(file: str, semantics: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(semantics, dict) or not isinstance(semantics.get("parameters"), dict):
        raise SpecError(file, "semantics.parameters must be a mapping of parameter name -> description")
    params: dict[str, Mapping[str, Any]] = semantics["parameters"]
    for name, desc in params.items():
        if not isinstance(desc, dict) or desc.get("type") not in _PARAM_TYPES or "default" not in desc:
            raise SpecError(
                file,
                f"parameter {name!r} needs a type (one of {', '.join(sorted(_PARAM_TYPES))}) and a default",
            )
        rng = desc.get("range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2):
            raise SpecError(file, f"parameter {name!r}: range must be [low, high]")
    return params


def _case(file: str, index: int, raw: Any, params: Mapping[str, Any]) -> Case:
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not name:
        raise SpecError(file, f"case #{index + 1} has no name", case=f"#{index + 1}")

    def bad(message: str) -> SpecError:
        return SpecError(file, message, case=name)

    unknown = sorted(set(raw) - {"name", "description", "given", "expect", "modes"})
    if unknown:
        raise bad(f"unknown key(s): {', '.join(unknown)}")
    given, expect = raw.get("given"), raw.get("expect")
    if not isinstance(given, dict) or not isinstance(expect, dict):
        raise bad("needs a 'given' mapping and an 'expect' mapping")
    unknown = sorted(set(given) - {"policy", "function", "actions"})
    if unknown:
        raise bad(f"unknown key(s) in given: {', '.join(unknown)}")
    policy = given.get("policy") or {}
    if not isinstance(policy, dict):
        raise bad("given.policy must be a mapping")
    for key in policy:
        if key not in params:
            raise bad(f"unknown parameter {key!r} in given.policy (parameters: {', '.join(params)})")
    function = given.get("function")
    if not isinstance(function, list) or not function:
        raise bad("given.function must be a non-empty list of behaviours")
    for step in function:
        if (
            not isinstance(step, dict)
            or not set(step) <= _BEHAVIOUR_KEYS
            or ("return" in step) == ("raise" in step)
        ):
            raise bad(f"behaviour {step!r}: use {{return: V}} or {{raise: Error}}, optionally with sleep: S")
    actions = given.get("actions", ["call"])
    calls = _count_calls(actions, bad)
    unknown = sorted(set(expect) - _EXPECT_KEYS)
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
                f"outcome {outcome!r}: use {{returns: V}} or {{raises: Error, fields: {{...}}, cause: Error}}"
            )
        total += int(outcome.get("times", 1))
    if total != calls:
        raise bad(f"expect.outcomes describes {total} call(s) but given.actions makes {calls}")
    modes = tuple(raw.get("modes", ("sync", "async")))
    if not set(modes) <= {"sync", "async"}:
        raise bad(f"modes must be a subset of [sync, async], got {list(modes)}")
    return Case(name, policy, tuple(function), tuple(actions), expect, modes)


def _count_calls(actions: Any, bad: Any) -> int:
    if not isinstance(actions, list):
        raise bad("given.actions must be a list")
    calls = 0
    for action in actions:
        if action == "call":
            calls += 1
        elif isinstance(action, dict) and set(action) == {"call"} and isinstance(action["call"], int):
            calls += action["call"]
        elif (
            isinstance(action, dict)
            and set(action) == {"advance"}
            and isinstance(action["advance"], int | float)
        ):
            pass
        else:
            raise bad(f"action {action!r}: use 'call', {{call: N}} or {{advance: seconds}}")
    return calls
