"""Spec loading: the shipped specs are complete; a malformed spec names its file and case."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from foundation_conformance import default_specs_dir, load_spec, load_specs

from foundation_core.errors import SpecError

REQUIRED_CASES = {
    "retry": {
        "succeeds_after_two_failures",
        "attempts_exhausted_raises_retry_error",
        "non_retryable_error_stops_at_attempt_1",
    },
    "circuit_breaker": {"opens_at_threshold", "half_open_success_closes", "half_open_failure_reopens"},
    "rate_limit": {"allows_burst_then_throttles"},
    "timeout": {"slow_call_times_out"},
    "fallback": {"listed_error_returns_value"},
}

GOOD_CASE = {
    "name": "ok_case",
    "given": {"policy": {"max_attempts": 2}, "function": [{"return": 1}]},
    "expect": {"outcomes": [{"returns": 1}]},
}


def write_spec(tmp_path: Path, **changes: object) -> Path:
    spec = yaml.safe_load((default_specs_dir() / "retry.yaml").read_text())
    spec["cases"] = [GOOD_CASE]
    spec.update(changes)
    path = tmp_path / "retry.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_shipped_specs_are_the_docs_specs() -> None:
    """The package's specs are docs/patterns (a link in the checkout, a copy in a built wheel)."""
    docs = Path(__file__).resolve().parents[3] / "docs" / "patterns"
    shipped = default_specs_dir()
    names = sorted(p.name for p in docs.glob("*.yaml"))
    assert names and sorted(p.name for p in shipped.glob("*.yaml")) == names
    for name in names:
        assert (shipped / name).read_bytes() == (docs / name).read_bytes(), name


def test_every_pattern_has_a_spec_with_the_required_cases() -> None:
    specs = load_specs()
    assert set(specs) == set(REQUIRED_CASES)
    for pattern, required in REQUIRED_CASES.items():
        assert required <= {c.name for c in specs[pattern].cases}, pattern
        for desc in specs[pattern].parameters.values():
            assert {"type", "default"} <= set(desc)


def test_unknown_parameter_in_a_case_names_file_and_case(tmp_path: Path) -> None:
    bad = {
        **GOOD_CASE,
        "name": "typo_case",
        "given": {"policy": {"max_attemps": 2}, "function": [{"return": 1}]},
    }
    path = write_spec(tmp_path, cases=[GOOD_CASE, bad])
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert (info.value.file, info.value.case) == (str(path), "typo_case")
    assert "max_attemps" in str(info.value)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ({**GOOD_CASE, "expect": {"outcomes": []}}, "describes 0 call"),
        ({**GOOD_CASE, "given": {"function": [{"return": 1, "raise": "ValueError"}]}}, "behaviour"),
        ({**GOOD_CASE, "given": {"function": [{"return": 1}], "actions": ["jump"]}}, "action 'jump'"),
        ({**GOOD_CASE, "expect": {"outcomes": [{"returns": 1}], "sleepz": []}}, "sleepz"),
        ({**GOOD_CASE, "given": {"function": []}}, "given.function"),
    ],
)
def test_malformed_case_names_file_and_case(tmp_path: Path, case: dict[str, object], message: str) -> None:
    path = write_spec(tmp_path, cases=[case])
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert info.value.case == "ok_case"
    assert str(path) in str(info.value)


def test_missing_top_level_key_names_the_file(tmp_path: Path) -> None:
    path = write_spec(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["guarantees"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="guarantees") as info:
        load_spec(path)
    assert info.value.file == str(path)


def test_unnamed_case_is_reported_by_position(tmp_path: Path) -> None:
    path = write_spec(tmp_path, cases=[GOOD_CASE, {"given": {}, "expect": {}}])
    with pytest.raises(SpecError, match="case #2 has no name"):
        load_spec(path)
