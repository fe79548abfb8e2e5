"""Which keys name secrets (``is_sensitive_key``): the config plugin masks them, the logging
plugin redacts them. The suffix rule alone let ``SECRET_KEY``, ``AWS_SECRET_ACCESS_KEY`` and
``dbPassword`` through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation_core import SENSITIVE_KEYS, is_sensitive_key


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "client_secret_id",
        "dbPassword",
        "DB_PASSWORD2",
        "apiKeyId",
        "APIKey",
        "X-Api-Key",
        "Set-Cookie",
        "OAuth2Token",
        "github.token",
        "privateKeyPem",
        "auth",
        "basic_auth",
        "proxyAuth",
        "X-Session-Id",
        "sessionid",
        "django_session_key",
        "ssh_passphrase",
    ],
)
def test_a_default_name_among_the_key_s_words_is_sensitive(key: str) -> None:
    assert is_sensitive_key(key, SENSITIVE_KEYS)


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens",
        "tokens_generated",
        "passwords_checked",
        "secretary",
        "model_id",
        "event",
        "keyword",
        "author",
        "authority",
        "session_count",
        "session_timeout",
        "",
    ],
)
def test_a_name_inside_another_word_is_not(key: str) -> None:
    assert not is_sensitive_key(key, SENSITIVE_KEYS)


def test_a_configured_name_of_several_words_must_appear_whole_and_in_order() -> None:
    assert is_sensitive_key("customerSsnLast4", ["ssn"])
    assert is_sensitive_key("x_session_id", ["session-id"])
    assert not is_sensitive_key("id_session", ["session_id"])
    assert not is_sensitive_key("password", [])


_word = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_sep = st.sampled_from(["_", "-", ".", ""])


@given(st.lists(_word, max_size=3), st.sampled_from(SENSITIVE_KEYS), st.lists(_word, max_size=3), _sep)
def test_a_default_name_between_any_words_is_sensitive(
    before: list[str], name: str, after: list[str], sep: str
) -> None:
    """Joined by a separator, or camelCased (``sep == ""``: each word capitalised)."""
    words = [*before, *name.split("_"), *after]
    key = sep.join(words) if sep else words[0] + "".join(w.capitalize() for w in words[1:])
    assert is_sensitive_key(key, SENSITIVE_KEYS), key


@given(st.text(max_size=20), st.sampled_from(SENSITIVE_KEYS))
def test_what_the_suffix_rule_caught_stays_caught(prefix: str, name: str) -> None:
    """Any key equal to a name or ending with ``_`` + name, in any script, as before."""
    assert is_sensitive_key(name, SENSITIVE_KEYS)
    assert is_sensitive_key(f"{prefix}_{name}", SENSITIVE_KEYS)
    assert is_sensitive_key(f"{prefix}-{name.upper()}", SENSITIVE_KEYS)
