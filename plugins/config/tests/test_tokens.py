"""dynaconf's value tokens in files: @format reads the environment only and is bounded; @jinja is
refused (a template can loop and compute without bound)."""

from __future__ import annotations

import time

import pytest
from foundation_config._interpolate import MAX_TEXT
from foundation_config._tokens import format_env
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_core.errors import ConfigError


def problems_of(load):
    with pytest.raises(ConfigError) as info:
        load()
    return {(p.path, p.source): p.message for p in info.value.problems}


def test_a_format_width_past_the_limit_is_an_error_naming_the_key_not_a_gigabyte(load, write, monkeypatch):
    monkeypatch.setenv("HOME", "/h")
    write("settings.toml", "[retry]\nname = '@format {env[HOME]:>999999999}'\n")
    # CPU time of this thread: what the bound is about, whatever else the machine runs
    started = time.thread_time()
    found = problems_of(load)
    assert time.thread_time() - started < 1.0
    assert found[("retry.name", "settings.toml:retry.name")] == (
        "@format could not be applied: a field wider than 1000000 characters ({...:>999999999})"
    )


def test_many_format_fields_together_past_the_limit_are_an_error(load, write, monkeypatch):
    monkeypatch.setenv("W", "900000")
    write("settings.toml", "[retry]\nname = '@format {env[W]:>900000}{env[W]:>{env[W]}}'\n")
    found = problems_of(load)
    assert "longer than 1000000 characters" in found[("retry.name", "settings.toml:retry.name")]


@pytest.mark.parametrize(
    "field",
    ["{env.__class__.__mro__}", "{this.__class__.__init__.__globals__}", "{env[HOME].__class__}", "{0}"],
)
def test_format_fields_other_than_the_environment_are_refused(load, write, field, monkeypatch):
    monkeypatch.setenv("HOME", "/h")
    write("settings.toml", f"[retry]\nname = '@format {field}'\n")
    found = problems_of(load)
    assert found[("retry.name", "settings.toml:retry.name")] == (
        f"@format could not be applied: {field} is not allowed: @format reads only {{env[NAME]}} "
        "(refer to other keys with ${section.key})"
    )


def test_format_of_an_unset_variable_names_it(load, write, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    write("settings.toml", "[retry]\nname = '@format {env[NOPE_NOT_SET]}'\n")
    found = problems_of(load)
    assert found[("retry.name", "settings.toml:retry.name")] == (
        "@format could not be applied: environment variable NOPE_NOT_SET is not set"
    )


@pytest.mark.parametrize(
    "template",
    ["{{ range(10**5)|list|length }}", "{{ env.HOME }}", "{{ cycler.__init__.__globals__.os }}"],
)
def test_jinja_is_refused_before_anything_is_rendered(load, write, template):
    """Its sandbox let ``'a' * 10**9`` build a gigabyte and turned an unsafe access into ''."""
    write("settings.toml", f'[retry]\nname = "@jinja {template}"\n[db]\nurl = "@str @jinja x"\n')
    found = problems_of(load)
    for key in ("retry.name", "db.url"):
        message = found[(key, f"settings.toml:{key}")]
        assert message.startswith("the value token @jinja is not allowed in config files (a template")
        assert "use @format {env[NAME]} or ${env:NAME}" in message


@settings(max_examples=200, deadline=None)
@given(
    name=st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
    value=st.text(max_size=30),
    spec=st.from_regex(r"(?:[^{}]?[<>^])?\d{0,3}(?:\.\d{1,2})?", fullmatch=True),
    before=st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=10),
)
def test_format_env_agrees_with_str_format_on_environment_fields(name, value, spec, before):
    """Within the bounds, ``@format`` is ``str.format`` over ``env``: same text, same errors."""
    template = f"{before}{{env[{name}]:{spec}}}" + f"{{env.{name}}}"
    try:
        expected = before + format(value, spec) + value
    except ValueError:
        with pytest.raises(ValueError):
            format_env(template, {name: value})
        return
    assert format_env(template, {name: value}) == expected
    assert len(expected) <= MAX_TEXT
