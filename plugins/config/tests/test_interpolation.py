"""``${section.key}`` and ``${env:NAME:-default}`` resolve across sources, with types kept."""

from __future__ import annotations

import pytest
from foundation_config import ConfigWarning

from foundation_core.errors import ConfigError


def test_whole_reference_keeps_the_type(load, write):
    write("settings.toml", "[db]\npool = 12\n[retry]\nmax_attempts = '${db.pool}'\n")
    assert load()["retry"].max_attempts == 12


def test_reference_inside_text_is_formatted(load, write):
    write("settings.toml", "[db]\npool = 12\nurl = 'postgres://h/db?pool=${db.pool}'\n")
    assert load()["db"].url == "postgres://h/db?pool=12"


def test_reference_to_a_default_and_across_sources(load, monkeypatch):
    monkeypatch.setenv("FOUNDATION_RETRY__NAME", "r-${retry.max_attempts}-${db.url}")
    assert load()["retry"].name == "r-3-sqlite://"


def test_reference_sees_the_overridden_value(load, write):
    write("settings.toml", "[retry]\nmax_attempts = '${db.pool}'\n")
    assert load(overrides=("db.pool=9",))["retry"].max_attempts == 9


def test_environment_with_and_without_default(load, write, monkeypatch):
    monkeypatch.setenv("DB_HOST", "db.internal")
    write(
        "settings.toml",
        "[db]\nurl = 'postgres://${env:DB_HOST}/${env:DB_NAME:-main}'\npool = '${env:POOL:-4}'\n",
    )
    db = load()["db"]
    assert (db.url, db.pool) == ("postgres://db.internal/main", 4)


def test_dollar_dollar_is_a_literal(load, write):
    write("settings.toml", "[db]\nurl = 'a$${db.pool}b'\n")
    assert load()["db"].url == "a${db.pool}b"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[db]\nurl = '${env:NOT_SET_ANYWHERE}'\n", "environment variable NOT_SET_ANYWHERE is not set"),
        ("[db]\nurl = '${db.nothing}'\n", "refers to a key that is not set and has no default"),
        ("[db]\nurl = '${db.password}'\npassword = '${db.url}'\n", "interpolation cycle"),
        ("[db]\nurl = '${}'\n", "is not a reference"),
    ],
)
def test_bad_references_are_reported_with_their_key_and_file(load, write, toml, message):
    write("settings.toml", toml)
    with pytest.raises(ConfigError) as info:
        load()
    problem = info.value.problems[0]
    assert message in problem.message
    assert problem.path.startswith("db.")
    assert problem.source.startswith("settings.toml:db.")


def test_references_in_ignored_keys_are_not_resolved(load, write):
    """Unknown keys are warned about and ignored: a bad reference inside one is not fatal."""
    write(
        "settings.toml", "[db]\nurl = '${vars.host}/db'\nnope = '${env:NOPE_NOT_SET}'\n[vars]\nhost = 'h'\n"
    )
    with pytest.warns(ConfigWarning) as caught:
        config = load()
    assert config["db"].url == "h/db"  # an unknown section may still hold values to refer to
    assert sorted(str(w.message).partition(":")[0] for w in caught) == ["db.nope", "vars"]
