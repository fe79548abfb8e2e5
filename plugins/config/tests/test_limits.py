"""Small input never exhausts the stack, the memory or the time: nesting, reference chains, YAML
aliases and doubling interpolation are bounded, each with a ConfigError naming key and source."""

from __future__ import annotations

import time

import pytest
from foundation_config import ConfigWarning

from foundation_core.errors import ConfigError


def problems_of(load, *args, **kw):
    with pytest.raises(ConfigError) as info:
        load(*args, **kw)
    return {(p.path, p.source): p.message for p in info.value.problems}


def test_a_400_deep_reference_chain_is_a_problem_naming_the_key(load, write):
    """It raised RecursionError, which made the hub fall back to the defaults."""
    chain = "".join(f"a{i} = '${{zz.a{i + 1}}}'\n" for i in range(400))
    write("settings.toml", f"[db]\nurl = '${{zz.a0}}'\n[zz]\n{chain}a400 = 'end'\n")
    with pytest.warns(ConfigWarning, match="zz: unknown section"):
        found = problems_of(load)
    message = found[("db.url", "settings.toml:db.url")]
    assert message.startswith("a chain of more than 32 references: db.url -> zz.a0 -> zz.a1 -> ...")


def test_a_400_level_environment_variable_is_a_problem_naming_it(load, monkeypatch):
    monkeypatch.setenv("FOUNDATION_RETRY__LABELS__" + "__".join(["A"] * 400), "1")
    [(path, source, message)] = [(p.path, p.source, p.message) for p in _error(load).problems]
    assert path.startswith("FOUNDATION_RETRY__LABELS__A__A") and source.startswith("env FOUNDATION_RETRY")
    assert message == "a key nested more than 32 levels deep (402 names between '__')"


def test_deep_nesting_in_a_file_or_a_set_value_is_a_problem_naming_the_key(load, write):
    write("deep.json", '{"retry": {"labels": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}}")
    found = problems_of(load, ("deep.json",))
    assert (
        found[("retry.labels", "deep.json:retry.labels")]
        == "tables and lists nested more than 32 levels deep"
    )
    found = problems_of(load, overrides=("retry.labels=" + "{a=" * 100 + "1" + "}" * 100,))
    assert found[("retry.labels", "--set")] == "tables and lists nested more than 32 levels deep"


def test_yaml_aliases_that_expand_past_the_limit_are_refused(load, write):
    """A billion laughs: 10 aliases of 10 aliases ... is 111,111 values from a 300-byte file."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcd", "bcde", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    write(
        "lol.yaml", "zz:\n" + "".join(f"  {line}\n" for line in levels) + "retry:\n  labels:\n    all: *e\n"
    )
    # CPU time of this thread: what the bound is about, whatever else the machine runs
    start = time.thread_time()
    found = problems_of(load, ("lol.yaml",))
    assert time.thread_time() - start < 2
    assert found[("zz.e", "lol.yaml:zz.e")].startswith("expands to more than 100000 values")


def test_a_yaml_alias_inside_itself_is_refused(load, write):
    write("loop.yaml", "retry:\n  labels: &x {a: *x}\n")
    found = problems_of(load, ("loop.yaml",))
    assert found[("retry.labels", "loop.yaml:retry.labels")].startswith("contains itself")


def test_doubling_interpolation_is_refused_before_it_builds_megabytes(load, write):
    text = "".join(f"a{i} = '${{zz.a{i - 1}}}${{zz.a{i - 1}}}'\n" for i in range(1, 18))
    write("settings.toml", f"[db]\nurl = '${{zz.a17}}'\n[zz]\na0 = 'xxxxxxxxxxxxxxxx'\n{text}")
    with pytest.warns(ConfigWarning, match="zz: unknown section"):
        found = problems_of(load)
    assert found[("db.url", "settings.toml:db.url")] == (
        "the value built by ${...} is longer than 1000000 characters"
    )
    tables = "".join(f"a{i} = ['${{zz.a{i - 1}}}', '${{zz.a{i - 1}}}']\n" for i in range(1, 18))
    write("settings.toml", f"[retry]\nlabels = '${{zz.a17}}'\n[zz]\na0 = {{x = 'y'}}\n{tables}")
    with pytest.warns(ConfigWarning, match="zz: unknown section"):
        found = problems_of(load)
    assert found[("retry.labels", "settings.toml:retry.labels")].startswith(
        "the value built by ${...} expands to more than 100000 values"
    )


def test_provenance_of_many_keys_is_found_in_linear_time(load, write):
    """Each lookup scanned every key of the later layers: 5,000 keys took seconds."""
    write("a.toml", "[retry.labels]\n" + "".join(f"k{i} = 'v{i}'\n" for i in range(5000)))
    write("b.toml", "[zz]\n" + "".join(f"k{i} = 'v{i}'\n" for i in range(5000)))
    start = time.thread_time()
    with pytest.warns(ConfigWarning, match="zz: unknown section"):
        config = load(("a.toml", "b.toml"))
    assert time.thread_time() - start < 1.5
    assert config.sources["retry.labels"] == "a.toml:retry.labels"
    assert len(config["retry"].labels) == 5000


def _error(load):
    with pytest.raises(ConfigError) as info:
        load()
    return info.value
