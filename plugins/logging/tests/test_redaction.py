"""Sensitive keys are redacted, by a configurable list, without catching harmless look-alikes."""

from __future__ import annotations

import pytest
from foundation_logging import REDACTED, LoggingSettings, configure_logging, get_logger, is_sensitive
from foundation_logging._processors import Redactor


@pytest.mark.parametrize("key", ["password", "PASSWORD", "db_password", "api_token", "x_api_key", "secret"])
def test_default_names_match_the_key_or_its_suffix(key):
    assert is_sensitive(key, LoggingSettings().redact)


@pytest.mark.parametrize("key", ["tokens_generated", "max_tokens", "passwords_checked", "event", "model_id"])
def test_look_alikes_are_not_sensitive(key):
    assert not is_sensitive(key, LoggingSettings().redact)


def test_redactor_replaces_values_and_keeps_the_rest():
    redact = Redactor(["password", "token"])
    out = redact(None, "info", {"event": "login", "user": "ann", "password": "hunter2", "auth_token": "t"})
    assert out == {"event": "login", "user": "ann", "password": REDACTED, "auth_token": REDACTED}


def test_redactor_judges_a_key_again_on_every_line():
    redact = Redactor(["password"])
    redact(None, "info", {"event": "a", "user": "x"})  # "user" now known safe
    assert redact(None, "info", {"event": "b", "user": "y", "password": "p"})["password"] == REDACTED


def test_pipeline_redacts_with_the_configured_list(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path), redact=("ssn",)))
    get_logger().info("e", ssn="123", password="visible-now", customer_ssn="456")
    [line] = read_lines(path)
    assert (line["ssn"], line["customer_ssn"], line["password"]) == (REDACTED, REDACTED, "visible-now")


def test_bound_and_context_values_are_redacted_too(tmp_path, read_lines):
    from foundation_logging import bound_context

    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path)))
    with bound_context(api_key="k"):
        get_logger().bind(password="p").info("e")
    [line] = read_lines(path)
    assert (line["api_key"], line["password"]) == (REDACTED, REDACTED)
