"""Sources, later wins: defaults < files < environment < --set; each value knows its source."""

from __future__ import annotations

import json


def test_defaults_only(load, sections):
    config = load()
    assert config["retry"] == sections["retry"]()
    assert config["db"] == sections["db"]()
    assert set(config.sources.values()) == {"default"}
    assert "retry.max_attempts" in config.sources


def test_all_four_sources_in_order(load, write, monkeypatch):
    write("settings.toml", "[retry]\nmax_attempts = 4\nbase_delay = 1.0\nname = 'from-file'\n")
    monkeypatch.setenv("FOUNDATION_RETRY__BASE_DELAY", "2.5")
    monkeypatch.setenv("FOUNDATION_RETRY__NAME", "from-env")
    config = load(overrides=("retry.name=from-cli",))
    retry = config["retry"]
    assert (retry.max_attempts, retry.base_delay, retry.name, retry.jitter) == (4, 2.5, "from-cli", False)
    assert config.sources["retry.max_attempts"] == "settings.toml:retry.max_attempts"
    assert config.sources["retry.base_delay"] == "env FOUNDATION_RETRY__BASE_DELAY"
    assert config.sources["retry.name"] == "--set"
    assert config.sources["retry.jitter"] == "default"


def test_secrets_file_wins_over_settings_file(load, write):
    write("settings.toml", "[db]\npassword = 'weak'\npool = 7\n")
    write(".secrets.toml", "[db]\npassword = 'strong'\n")
    config = load()
    assert (config["db"].password, config["db"].pool) == ("strong", 7)
    assert config.sources["db.password"] == ".secrets.toml:db.password"
    assert config.sources["db.pool"] == "settings.toml:db.pool"


def test_explicit_files_come_after_default_files_and_in_order(load, write):
    write("settings.toml", "[retry]\nmax_attempts = 4\n")
    write("a.yaml", "retry:\n  max_attempts: 5\n  jitter: true\n")
    write("b.json", json.dumps({"retry": {"max_attempts": 6}}))
    config = load(("a.yaml", "b.json"))
    assert (config["retry"].max_attempts, config["retry"].jitter) == (6, True)
    assert config.sources["retry.max_attempts"] == "b.json:retry.max_attempts"
    assert config.sources["retry.jitter"] == "a.yaml:retry.jitter"


def test_default_files_can_be_skipped(load, write):
    write("settings.toml", "[retry]\nmax_attempts = 4\n")
    assert load(use_default_files=False)["retry"].max_attempts == 3


def test_environment_text_is_parsed_by_the_field_type(load, monkeypatch):
    monkeypatch.setenv("FOUNDATION_RETRY__MAX_ATTEMPTS", "7")
    monkeypatch.setenv("FOUNDATION_RETRY__NAME", "42")
    monkeypatch.setenv("FOUNDATION_RETRY__JITTER", "true")
    monkeypatch.setenv("FOUNDATION_RETRY__CODES", "[502, 504]")
    retry = load()["retry"]
    assert (retry.max_attempts, retry.name, retry.jitter, retry.codes) == (7, "42", True, (502, 504))


def test_set_beats_environment(load, monkeypatch):
    monkeypatch.setenv("FOUNDATION_DB__POOL", "9")
    config = load(overrides=("db.pool=11", "db.url=postgres://h/db"))
    assert (config["db"].pool, config["db"].url) == (11, "postgres://h/db")
    assert config.sources["db.pool"] == "--set"


def test_later_set_wins(load):
    assert load(overrides=("db.pool=1", "db.pool=2"))["db"].pool == 2


def test_core_switches_without_double_underscore_are_not_config(load, monkeypatch, sections):
    monkeypatch.setenv("FOUNDATION_PLUGINS", "retry")
    monkeypatch.setenv("FOUNDATION_STRICT_PLUGINS", "1")
    assert load(strict=True)["retry"] == sections["retry"]()


def test_tables_merge_key_by_key_across_sources(load, write, monkeypatch):
    write("settings.toml", "[retry.labels]\nteam = 'ml'\nzone = 'a'\n")
    monkeypatch.setenv("FOUNDATION_RETRY__LABELS__ZONE", "b")
    config = load()
    assert config["retry"].labels == {"team": "ml", "zone": "b"}
    assert config.sources["retry.labels"] == "env FOUNDATION_RETRY__LABELS__ZONE"


def test_through_the_hub(write, monkeypatch, sections):
    from foundation_config import plugin

    import foundation_core

    class Declares:
        @foundation_core.hookimpl
        def foundation_config_sections(self, add):
            for name, cls in sections.items():
                add(name, cls)

    write("extra.toml", "[retry]\nmax_attempts = 8\n")
    monkeypatch.setenv("FOUNDATION_DB__POOL", "3")
    hub = foundation_core.Hub(env={})
    hub.register(plugin, name="config")
    hub.register(Declares())
    config = hub.configure(["extra.toml"], ["retry.jitter=true"])
    assert (config["retry"].max_attempts, config["retry"].jitter, config["db"].pool) == (8, True, 3)
    assert config.sources["retry.jitter"] == "--set"


def test_text_for_a_table_of_str_stays_text(load):
    """``labels: dict[str, str]``: environment and --set text is parsed by the table's value type."""
    config = load(
        overrides=("retry.labels.sslmode=true",),
        environ={"FOUNDATION_RETRY__LABELS__PORT": "5432", "FOUNDATION_RETRY__LABELS__TEAM": "ml"},
    )
    assert config["retry"].labels == {"port": "5432", "team": "ml", "sslmode": "true"}
