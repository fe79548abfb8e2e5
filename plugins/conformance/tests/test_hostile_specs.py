"""A spec file is untrusted input: every malformed one is a SpecError naming the file, the case
and the field, before anything runs; none hangs the loader, exhausts memory or imports anything."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_conformance import default_specs_dir, load_spec, load_specs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation_core._cli import main
from foundation_core.errors import SpecError

GOOD_CASE: dict[str, Any] = {
    "name": "ok_case",
    "given": {"policy": {"max_attempts": 2}, "function": [{"return": 1}]},
    "expect": {"outcomes": [{"returns": 1}]},
}
BASE: dict[str, Any] = yaml.safe_load((default_specs_dir() / "retry.yaml").read_text())


def spec_with(**case_changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    case = copy.deepcopy(GOOD_CASE)
    for dotted, value in case_changes.items():
        *parents, leaf = dotted.split("__")
        node = case
        for key in parents:
            node = node[key]
        node[leaf] = value
    spec["cases"] = [case]
    return spec


def test_the_shipped_specs_load_within_the_limits() -> None:
    assert load_specs()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"given__function": [{"raise": "os:system"}]}, "given.function raise: 'os:system'"),
        ({"given__function": [{"raise": 5}]}, "given.function raise: 5"),
        ({"given__function": [{"raise": "__import__"}]}, "given.function raise: '__import__'"),
        ({"given__function": [{"raise": "KeyboardInterrupt"}]}, "KeyboardInterrupt cannot be simulated"),
        ({"given__function": [{"raise": "SpecError"}]}, "SpecError cannot be raised by the suite"),
        ({"given__function": [{"return": 1, "sleep": "x"}]}, "given.function sleep"),
        ({"given__function": [{"return": 1, "sleep": -1}]}, "given.function sleep"),
        ({"given__function": [{"return": 1, "sleep": math.nan}]}, "given.function sleep"),
        ({"given__actions": ["call", {"advance": math.nan}]}, "action {advance: S}"),
        ({"given__actions": ["call", {"advance": -5}]}, "action {advance: S}"),
        ({"given__actions": [{"call": -1}, "call", "call"]}, "action {call: N}"),
        (
            {"given__actions": [{"call": 10**12}], "expect__outcomes": [{"returns": 1, "times": 10**12}]},
            "call: N",
        ),
        ({"expect__outcomes": [{"returns": 1, "times": "x"}]}, "expect.outcomes times"),
        ({"expect__outcomes": [{"returns": 1, "times": math.inf}]}, "expect.outcomes times"),
        ({"expect__outcomes": [{"raises": "NoSuchError"}]}, "expect.outcomes raises: 'NoSuchError'"),
        ({"expect__outcomes": [{"raises": "RetryError", "cause": "os:system"}]}, "expect.outcomes cause"),
        ({"expect__outcomes": [{"raises": "RetryError", "fields": [1]}]}, "expect.outcomes fields"),
        ({"expect__invocations": "x"}, "expect.invocations"),
        ({"expect__sleeps": 5}, "expect.sleeps"),
        ({"expect__sleeps_between": [1]}, "expect.sleeps_between"),
        ({"expect__events": 3}, "expect.events"),
        ({"expect__events": [1]}, "expect.events"),
        ({"modes": 5}, "modes"),
        ({"modes": "sync"}, "modes"),
        ({"modes": []}, "modes"),
        ({"modes": ["sync", "sync"]}, "modes must be a non-empty subset"),  # ran and reported twice
        ({"given__policy": {"retry_on": ["os:system"]}}, "given.policy.retry_on: 'os:system'"),
        ({"given__policy": {"retry_if_result": {"result_in": 5}}}, "given.policy.retry_if_result"),
    ],
)
def test_a_wrong_value_in_a_case_names_file_case_and_field(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    path = tmp_path / "retry.yaml"
    path.write_text(yaml.safe_dump(spec_with(**changes)))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert (info.value.file, info.value.case) == (str(path), "ok_case")
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"version": "abc"}, "version"),
        ({"version": None}, "version"),
        ({"version": True}, "version"),
        ({"pattern_id": [1]}, "pattern_id"),
    ],
)
def test_a_wrong_top_level_value_names_the_field(tmp_path: Path, changes: dict[str, Any], field: str) -> None:
    path = tmp_path / "retry.yaml"
    path.write_text(yaml.safe_dump({**spec_with(), **changes}))
    with pytest.raises(SpecError, match=field):
        load_spec(path)


@pytest.mark.parametrize(
    ("param", "desc", "field"),
    [
        ("max_attempts", {"type": "int", "default": 3, "invalid": 5}, "invalid must be a list"),
        ("retry_on", {"type": "exceptions", "default": ["nope"]}, "default 'nope'"),
        ("retry_on", {"type": "exceptions", "default": 3}, "default must be a list"),
        (1, {"type": "int", "default": 1}, "key '1' is read as int 1, not a string"),
    ],
)
def test_a_wrong_parameter_description_names_the_parameter(
    tmp_path: Path, param: Any, desc: dict[str, Any], field: str
) -> None:
    spec = spec_with()
    spec["semantics"]["parameters"][param] = desc
    path = tmp_path / "retry.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=field):
        load_spec(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"pattern_id: \xff\xfe\n", "not UTF-8"),
        (b"a: [1, 2\n", "cannot be read as YAML"),
        (b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
        (b"a: " + b"[" * 60 + b"]" * 60 + b"\n", "nested deeper than"),
        (b"version: 1" + b"0" * 6000 + b"\n", "cannot be read as YAML"),
        (
            b"l0: &a0 [lol]\n"
            + b"".join(f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n".encode() for i in range(1, 10)),
            "once anchors and aliases are expanded",
        ),
    ],
)
def test_an_unreadable_or_hostile_document_is_a_spec_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "retry.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert info.value.file == str(path)


@pytest.mark.parametrize(
    "name",
    [
        "ok\x1b[2J\x1b[31mred",
        "ok\n  FAIL retry/forged [sync]: a line the run did not write",
        "ok\u2028x",
        "x" * 201,
    ],
)
def test_a_case_name_that_would_forge_or_colour_the_report_is_refused(tmp_path: Path, name: str) -> None:
    """The report prints case names as they are: an escape sequence drove the terminal and a
    line break wrote a FAIL line of its own."""
    spec = spec_with(name=name)
    path = tmp_path / "retry.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="must be printable text of 1 to 200 characters") as info:
        load_spec(path)
    assert info.value.case == "#1"
    spec["cases"][0]["name"], spec["pattern_id"] = "ok_case", "retry\x1b[0m"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="pattern_id must be printable text"):
        load_spec(path)


def test_an_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "retry.yaml"
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(SpecError, match="byte limit"):
        load_spec(path)


def test_a_fifo_or_a_directory_named_like_a_spec_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "retry.yaml")  # opening it for reading would wait for a writer forever
    (tmp_path / "timeout.yaml").mkdir()
    with pytest.raises(SpecError, match="not a regular file"):
        load_specs(tmp_path)
    with pytest.raises(SpecError, match="not a regular file"):
        load_spec(tmp_path / "timeout.yaml")


def test_specs_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is not a directory"):
        load_specs(default_specs_dir() / "retry.yaml")


def test_cli_reports_a_hostile_spec_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "retry.yaml").write_text(yaml.safe_dump(spec_with(expect__sleeps=5)))
    assert main(["conformance", "--specs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "case 'ok_case': expect.sleeps" in err


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)
_names = st.sampled_from(["ConnectionError", "RetryError", "os:system", "SystemExit", "", "x"])


def _mutated(data: st.DataObject) -> dict[str, Any]:
    """A shipped-shaped spec with one value anywhere replaced by a generated one."""
    spec = spec_with()
    spec["cases"].append(copy.deepcopy(BASE["cases"][0]))
    node: Any = spec
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
            node[key] = data.draw(_values | _names)
            break
        node = node[key]
    return spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_generated_spec_loads_or_is_a_spec_error(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "retry.yaml"
    path.write_text(yaml.safe_dump(_mutated(data)))
    failure: SpecError | None = None
    try:
        load_spec(path)
    except SpecError as exc:  # any other exception fails the test
        failure = exc
    assert failure is None or failure.file == str(path)


SHIPPED_TEXT = (default_specs_dir() / "retry.yaml").read_text()


def _line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "marker", "message"),
    [
        # a second top-level cases: would replace every case above it
        (
            "cases:\n",
            "cases: []\ncases:\n",
            "cases:\n  -",
            "duplicate key 'cases' (first at line",
        ),
        ("jitter: false}", "jitter: false, jitter: true}", "jitter: true", "duplicate key 'jitter'"),
        (
            "  - name: succeeds_after_two_failures\n",
            "  - name: succeeds_after_two_failures\n    name: renamed\n",
            "name: renamed",
            "duplicate key 'name'",
        ),
        ("{return: ok}]", "{return: {1: ok}}]", "1: ok", "key '1' is read as int 1, not a string"),
        ("{retry_on: [ConnectionError]}", "{on: [ConnectionError]}", "{on: [", "key 'on' is read as bool"),
        (
            "{max_attempts: 4, backoff: exponential, base_delay: 0.1}",
            "{<<: {max_attempts: 4}, backoff: exponential, base_delay: 0.1}",
            "<<",
            "merge keys (<<) are not supported",
        ),
        ("function: [{raise: ConnectionError}]", "function: &f [*f]", "*f", "alias *f is inside"),
        ("{returns: ok}]", "{returns: ok, ? [a, b]: 1}]", "? [a", "a key is a sequence"),
    ],
)
def test_what_yaml_readers_disagree_on_is_refused_naming_the_line(
    tmp_path: Path, old: str, new: str, marker: str, message: str
) -> None:
    """PyYAML keeps the last of two equal keys, reads yes/on/1 keys as bool/int and expands <<;
    a spec read in other languages must mean one thing, so each is refused where it is."""
    assert old in SHIPPED_TEXT
    text = SHIPPED_TEXT.replace(old, new, 1)
    path = tmp_path / "retry.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.file == str(path)
    assert f"line {_line_of(text, marker)}: " in str(info.value) and message in str(info.value)


def test_nested_merge_keys_are_refused_before_they_expand(tmp_path: Path) -> None:
    """Each level of << copies the merged mappings' pairs: 9 merges a level for 7 levels took
    minutes and gigabytes before the alias budget could look at the result."""
    doc = "a0: &a0 {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}\n"
    doc += "".join(f"a{n}: &a{n} {{<<: [{', '.join([f'*a{n - 1}'] * 9)}]}}\n" for n in range(1, 8))
    path = tmp_path / "retry.yaml"
    path.write_text(doc)
    with pytest.raises(SpecError, match="line 2: merge keys"):
        load_spec(path)


def test_a_quoted_key_and_a_repeated_alias_are_still_fine(tmp_path: Path) -> None:
    text = SHIPPED_TEXT.replace("{retry_on: [ConnectionError]}", "{'retry_on': &errs [ConnectionError]}", 1)
    text = text.replace("{raise: ValueError}]", "{raise: ValueError}]\n      actions: &once [call]", 1)
    path = tmp_path / "retry.yaml"
    path.write_text(text)
    spec = load_spec(path)
    case = next(c for c in spec.cases if c.name == "non_retryable_error_stops_at_attempt_1")
    assert case.policy == {"retry_on": ["ConnectionError"]} and case.actions == ("call",)


# keys YAML reads as the names they are: not yes/no/on/off/y/n/true/false/null, which it reads as
# bools and None (refused as such, another test's case: a flake drew ['no'])
_NAMES = st.from_regex(r"[a-z_]{1,8}", fullmatch=True).filter(lambda k: yaml.safe_load(k) == k)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(_NAMES, min_size=1, max_size=6, unique=True),
    data=st.data(),
)
def test_a_key_given_twice_at_any_depth_is_refused_naming_it(
    tmp_path: Path, keys: list[str], data: st.DataObject
) -> None:
    depth = data.draw(st.integers(0, 5))
    twice = data.draw(st.sampled_from(keys))
    flow = data.draw(st.booleans())
    order = data.draw(st.permutations([*keys, twice]))
    indent = "  " * depth
    head = "".join(f"{'  ' * d}level{d}:\n" for d in range(depth))
    if flow:
        body = indent + "x: {" + ", ".join(f"{k}: 1" for k in order) + "}\n"
    else:
        body = indent + "x:\n" + "".join(f"{indent}  {k}: 1\n" for k in order)
    path = tmp_path / "retry.yaml"
    path.write_text(head + body)
    with pytest.raises(SpecError, match=f"duplicate key '{twice}'") as info:
        load_spec(path)
    assert info.value.file == str(path)
