"""Bad input: one ConfigError listing every problem with its source and what was expected."""

from __future__ import annotations

import pytest
from foundation_config import ConfigWarning, plugin

import foundation_core
from foundation_core.errors import ConfigError


def problems_of(load, *args, **kw):
    with pytest.raises(ConfigError) as info:
        load(*args, **kw)
    return {(p.path, p.source): p.message for p in info.value.problems}


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("settings.toml", "[retry\nmax_attempts = 3\n", "TOML"),
        ("bad.yaml", "retry:\n  max_attempts: [1,\n", "YAML"),
        ("bad.json", '{"retry": {"max_attempts": 3,}', "JSON"),
    ],
)
def test_malformed_files_name_the_file_and_the_parser_error(load, write, name, text, kind):
    write(name, text)
    found = problems_of(load, () if name == "settings.toml" else (name,))
    [(path, source)] = found
    assert (path, source) == (name, name)
    assert found[(path, source)].startswith(f"malformed {kind}: ")


def test_a_top_level_list_is_rejected(load, write):
    write("list.yaml", "- 1\n- 2\n")
    assert "top level must be a table" in problems_of(load, ("list.yaml",))[("list.yaml", "list.yaml")]


def test_missing_and_unsupported_files(load, write):
    write("settings.ini", "[retry]\n")
    found = problems_of(load, ("nowhere.toml", "settings.ini"))
    assert found[("nowhere.toml", "nowhere.toml")] == "file not found"
    assert "unsupported file type '.ini'" in found[("settings.ini", "settings.ini")]


def test_wrong_types_say_what_was_expected(load, write):
    write(
        "settings.toml",
        "[retry]\nmax_attempts = 'lots'\njitter = 'yes'\nbase_delay = true\ncodes = [500, 'x']\n",
    )
    found = problems_of(load)
    assert found[("retry.max_attempts", "settings.toml:retry.max_attempts")] == (
        "expected an integer, got 'lots' (str)"
    )
    assert found[("retry.jitter", "settings.toml:retry.jitter")] == "expected true or false, got 'yes' (str)"
    assert found[("retry.base_delay", "settings.toml:retry.base_delay")] == (
        "expected a number, got True (bool)"
    )
    assert "expected an integer, got 'x'" in found[("retry.codes[1]", "settings.toml:retry.codes")]


def test_out_of_range_values_give_the_range(load, monkeypatch):
    monkeypatch.setenv("FOUNDATION_RETRY__MAX_ATTEMPTS", "0")
    found = problems_of(load, overrides=("retry.base_delay=-1",))
    assert "must be >= 1" in found[("retry.max_attempts", "env FOUNDATION_RETRY__MAX_ATTEMPTS")]
    assert "must be >= 0" in found[("retry.base_delay", "--set")]


def test_every_problem_from_every_source_is_reported_at_once(load, write, monkeypatch):
    write("settings.toml", "[retry]\nmax_attempts = 'lots'\n")
    write("broken.yaml", "a: [\n")
    monkeypatch.setenv("FOUNDATION_DB__POOL", "many")
    with pytest.raises(ConfigError) as info:
        load(("broken.yaml",), ("retry.jitter=maybe", "no-equals-sign"))
    sources = sorted(p.source for p in info.value.problems)
    assert sources == [
        "--set",
        "--set no-equals-sign",
        "broken.yaml",
        "env FOUNDATION_DB__POOL",
        "settings.toml:retry.max_attempts",
    ]
    assert "invalid configuration (5 problems)" in str(info.value)


def test_bad_set_forms(load):
    found = problems_of(load, overrides=("retry", "=3", "retry.=1"))
    assert found[("retry", "--set retry")].startswith("expected KEY=VALUE")
    assert found[("", "--set =3")].startswith("expected a dotted key")
    assert found[("retry.", "--set retry.=1")].startswith("expected a dotted key")


def test_unknown_keys_and_sections_warn_and_are_ignored(load, write):
    write("settings.toml", "[retry]\nmax_atempts = 5\n[cache]\nsize = 1\n")
    with pytest.warns(ConfigWarning) as caught:
        config = load()
    messages = sorted(str(w.message) for w in caught)
    assert "did you mean 'max_attempts'?" in messages[1]
    assert "settings.toml:retry.max_atempts" in messages[1]
    assert messages[0].startswith("cache: unknown section")
    assert config["retry"].max_attempts == 3


def test_unknown_keys_and_sections_are_errors_when_strict(load, write, monkeypatch):
    write("settings.toml", "[retry]\nmax_atempts = 5\n")
    monkeypatch.setenv("FOUNDATION_CACHE__SIZE", "1")
    found = problems_of(load, strict=True)
    assert "unknown key in section 'retry'" in found[("retry.max_atempts", "settings.toml:retry.max_atempts")]
    assert "unknown section" in found[("cache", "env FOUNDATION_CACHE__SIZE")]


def test_a_required_field_without_a_value_is_reported(tmp_path):
    import attrs
    from foundation_config import load_config

    @attrs.frozen
    class Needs:
        url: str

    with pytest.raises(ConfigError, match=r"needs.url: required: no default, expected str"):
        load_config({"needs": Needs}, cwd=tmp_path)


def test_nothing_is_applied_when_the_hub_gets_bad_config(write, sections):
    class Declares:
        @foundation_core.hookimpl
        def foundation_config_sections(self, add):
            for name, cls in sections.items():
                add(name, cls)

    configured = []

    class Observer:
        @foundation_core.hookimpl
        def foundation_configure(self, config):
            configured.append(config)

    write("settings.toml", "[retry]\nmax_attempts = 'lots'\n")
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": "config"})  # the installed entry point
    hub.load_entry_points()
    hub.register(Declares())
    hub.register(Observer())
    assert hub.plugins["config"].plugin is plugin
    with pytest.raises(ConfigError):
        hub.configure()
    assert hub.config is None
    assert configured == []


def test_a_single_name_where_a_list_is_expected_says_so():
    """cattrs would have split the text into a tuple of characters."""
    import attrs
    from foundation_config import load_config

    @attrs.frozen
    class Section:
        names: tuple[str, ...] = ()

    with pytest.raises(ConfigError, match=r"s\.names: expected a list, got 'ConnectionError': write \["):
        load_config({"s": Section}, overrides=("s.names=ConnectionError",), use_default_files=False)
    config = load_config({"s": Section}, overrides=("s.names=['a', 'b']",), use_default_files=False)
    assert config["s"].names == ("a", "b")
