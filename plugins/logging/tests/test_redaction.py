"""Sensitive keys are redacted, by a configurable list, without catching harmless look-alikes."""

from __future__ import annotations

import pytest
from foundation_logging import REDACTED, LoggingSettings, configure_logging, get_logger, is_sensitive
from foundation_logging._processors import Redactor


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_password", "api_token", "x_api_key", "secret", "SECRET_KEY", "dbPassword"],
)
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


def test_keys_inside_a_dict_value_are_redacted_without_changing_the_callers_dict():
    redact = Redactor(["authorization", "password"])
    headers = {"Authorization": "Bearer abc", "Accept": "json"}
    calls = [{"user": "ann", "db": {"password": "p", "host": "h"}}, ("x", {"password": "q"})]
    out = redact(None, "info", {"event": "call", "headers": headers, "calls": calls})
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert out["calls"] == [
        {"user": "ann", "db": {"password": REDACTED, "host": "h"}},
        ("x", {"password": REDACTED}),
    ]
    assert headers == {"Authorization": "Bearer abc", "Accept": "json"}  # the caller's, untouched
    assert calls[0]["db"]["password"] == "p" and calls[1][1]["password"] == "q"


def test_a_container_with_nothing_sensitive_is_passed_on_as_it_is():
    redact = Redactor(["password"])
    shape = [1, 2, 3]
    meta = {"model": "m", "dims": shape}
    out = redact(None, "info", {"event": "e", "meta": meta, "shape": shape})
    assert out["meta"] is meta and out["shape"] is shape


def test_redaction_looks_only_so_deep_and_survives_a_cycle():
    from foundation_logging._processors import NESTED_DEPTH

    redact = Redactor(["password"])
    loop: list[object] = []
    loop.append(loop)
    deep: dict[str, object] = {"password": "deepest"}
    for _ in range(NESTED_DEPTH):
        deep = {"next": deep}
    out = redact(
        None, "info", {"event": "e", "loop": loop, "deep": deep, "near": {"next": {"password": "x"}}}
    )
    assert out["loop"] is loop
    assert out["near"] == {"next": {"password": REDACTED}}
    inner = out["deep"]
    for _ in range(NESTED_DEPTH):
        inner = inner["next"]
    assert inner == {"password": "deepest"}  # past NESTED_DEPTH levels: not looked at


def test_pipeline_redacts_a_nested_header(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path)))
    get_logger().info("GET /", headers={"Authorization": "Bearer abc", "Cookie": "c", "Accept": "*/*"})
    [line] = read_lines(path)
    assert line["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "*/*"}


def test_dict_subclasses_named_are_looked_into_and_keep_their_type():
    from collections import OrderedDict

    redact = Redactor(["token"])
    out = redact(None, "info", {"event": "e", "h": OrderedDict(token="t", a=1)})
    assert type(out["h"]) is OrderedDict and out["h"] == OrderedDict(token=REDACTED, a=1)


def test_http_header_names_with_hyphens_are_redacted(tmp_path, read_lines):
    """``-`` counts as ``_``: headers such as ``X-Api-Key`` and ``Set-Cookie`` were written as they
    were, while ``x_api_key`` was redacted; so was a name in ``redact`` written with a hyphen."""
    path = tmp_path / "app.log"
    names = (*LoggingSettings().redact, "x-tenant")
    configure_logging(LoggingSettings(format="json", output=str(path), redact=names))
    headers = {
        "X-Api-Key": "k", "Set-Cookie": "sid=1", "X-Auth-Token": "t", "Proxy-Authorization": "Basic x",
        "X-Tenant": "acme", "Accept": "*/*", "X-Request-Id": "r1",
    }  # fmt: skip
    get_logger().info("GET /", headers=headers, **{"x-api-key": "k"})
    [line] = read_lines(path)
    assert line["x-api-key"] == REDACTED
    secret = ("X-Api-Key", "Set-Cookie", "X-Auth-Token", "Proxy-Authorization", "X-Tenant")
    assert line["headers"] == {**dict.fromkeys(secret, REDACTED), "Accept": "*/*", "X-Request-Id": "r1"}
    assert not is_sensitive("max-tokens", LoggingSettings().redact)
