"""Bad input: one ConfigError listing every problem with its source and what was expected."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pytest
from foundation_config import ConfigWarning, _files, load_config, plugin
from foundation_config._show import effective_values

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


@attrs.frozen
class HooksSection:
    """Fields taking functions, as retry's random and retry_if_result, fallback's handler."""

    attempts: int = 3
    random: Callable[[], float] = random.random
    predicate: Callable[[Any], bool] | None = None


def test_a_field_taking_a_function_is_refused_by_name_from_every_source(write, tmp_path, monkeypatch):
    """Setting one from configuration failed with cattrs' 'unknown error (Unsupported type:
    Callable[...]. Register a structure hook for it.)'. Configuration holds data; such a field
    is given in code."""
    write("settings.toml", "[hooks]\nrandom = 1\nattempts = 4\n")
    monkeypatch.setenv("FOUNDATION_HOOKS__PREDICATE", "os.path:isfile")
    with pytest.raises(ConfigError) as info:
        load_config({"hooks": HooksSection}, (), ("hooks.random=random:random",), cwd=tmp_path)
    found = {(p.path, p.source): p.message for p in info.value.problems}
    expected = (
        "takes a function, which is given in code (HooksSection(...) or hub.pipeline(hooks={...})), "
        "not by configuration"
    )
    assert found == {
        ("hooks.random", "--set"): expected,
        ("hooks.predicate", "env FOUNDATION_HOOKS__PREDICATE"): expected,
    }
    monkeypatch.delenv("FOUNDATION_HOOKS__PREDICATE")
    with pytest.raises(ConfigError) as info:  # a file's value, when nothing overrides it
        load_config({"hooks": HooksSection}, (), (), cwd=tmp_path)
    [problem] = info.value.problems
    assert (problem.path, problem.source, problem.message) == (
        "hooks.random",
        "settings.toml:hooks.random",
        expected,
    )
    write("settings.toml", "[hooks]\nattempts = 4\n")
    config = load_config({"hooks": HooksSection}, (), (), cwd=tmp_path)
    assert config["hooks"].random is random.random and config["hooks"].attempts == 4
    assert [path for path, _, _ in effective_values(config)] == ["hooks.attempts"]  # not shown


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


def test_a_value_a_literal_field_does_not_allow_names_those_it_does():
    """cattrs said "unknown error (mru not in literal typing.Literal['lru', 'lfu'])"."""
    import attrs
    from foundation_config import load_config

    @attrs.frozen
    class Cache:
        mode: Literal["lru", "lfu"] = "lru"
        level: Literal[1, 2] | None = None

    with pytest.raises(ConfigError) as info:
        load_config(
            {"cache": Cache}, overrides=("cache.mode=mru", "cache.level=true"), use_default_files=False
        )
    message = str(info.value)
    assert "cache.mode: expected one of 'lru', 'lfu', got 'mru' (str) (from --set)" in message
    assert "cache.level: " in message and "expected one of 1, 2, got True (bool)" in message
    assert "unknown error" not in message
    config = load_config(
        {"cache": Cache}, overrides=("cache.mode=lfu", "cache.level=2"), use_default_files=False
    )
    assert (config["cache"].mode, config["cache"].level) == ("lfu", 2)


if TYPE_CHECKING:
    from decimal import Decimal


@attrs.frozen
class Priced:  # as a plugin writes it: a type imported for type checkers only
    size: int = 1
    price: Decimal | None = None


def test_a_field_whose_type_names_a_type_checking_import_is_named_and_the_others_work():
    """One annotation that cannot be resolved left every field's type a string, and setting any
    key of the section failed with "unknown error (Unsupported type: 'int'. Register a structure
    hook for it.)", naming neither the field at fault nor why."""
    from foundation_config import load_config

    config = load_config({"priced": Priced}, overrides=("priced.size=5",), use_default_files=False)
    assert config["priced"].size == 5
    with pytest.raises(ConfigError) as info:
        load_config({"priced": Priced}, overrides=("priced.price=3",), use_default_files=False)
    message = str(info.value)
    module = Priced.__module__
    assert (
        f"priced.price: its type 'Decimal | None' (in {module}.Priced) cannot be resolved at run "
        "time (NameError: name 'Decimal' is not defined): import what it names at run time in "
        f"{module}, not only under TYPE_CHECKING (from --set)"
    ) in message
    assert "unknown error" not in message


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


@pytest.mark.parametrize(
    ("how", "path", "source"),
    [
        ("env", "retry.codes", "env FOUNDATION_RETRY__CODES__SSN"),
        ("--set", "retry.codes", "--set"),
        ("yaml", "retry.codes", "codes.yaml:retry.codes"),
    ],
)
def test_a_table_where_a_list_is_expected_is_refused(load, write, monkeypatch, how, path, source):
    """cattrs iterated the table: its keys became the list (redact=('ssn',) dropped the defaults)."""
    if how == "env":
        monkeypatch.setenv("FOUNDATION_RETRY__CODES__SSN", "true")
        found = problems_of(load)
    elif how == "--set":
        found = problems_of(load, overrides=("retry.codes.0=500",))
    else:
        write("codes.yaml", "retry:\n  codes: {a: 1}\n")
        found = problems_of(load, ("codes.yaml",))
    assert found[(path, source)].startswith("expected a list, got a table {")


def test_a_table_where_a_nested_list_or_a_set_is_expected_is_refused():
    import attrs
    from foundation_config import load_config

    @attrs.frozen
    class Section:
        groups: dict[str, list[str]] = attrs.field(factory=dict)
        tags: set[str] = attrs.field(factory=set)
        pair: tuple[int, int] = (1, 2)

    with pytest.raises(ConfigError) as info:
        load_config(
            {"s": Section},
            overrides=("s.groups.ops={x=1}", "s.tags.a=1", "s.pair={a=1, b=2}"),
            use_default_files=False,
        )
    found = {p.path: p.message for p in info.value.problems}
    assert found["s.groups['ops']"] == "expected a list, got a table {'x': 1}"
    assert found["s.tags"].startswith("expected a list, got a table {'a': 1}")
    assert found["s.pair"].startswith("expected a list, got a table {'a': 1, 'b': 2}")
    ok = load_config({"s": Section}, overrides=("s.tags=['a', 'a']",), use_default_files=False)
    assert ok["s"].tags == {"a"}


def test_secret_values_never_appear_in_error_messages(load, write, monkeypatch):
    """Values from .secrets.* files and of keys named like secrets are masked in every message."""
    write(".secrets.toml", "[retry]\nmax_attempts = 'hunter2'\nbase_delay = -31337.5\n")
    write("settings.toml", "[db]\npassword = 271828\n[retry.labels]\napi_token = 4242\nteam = 7\n")
    write("dup.yaml", "db:\n  password: swordfish\n  password: swordfish2\n")
    monkeypatch.setenv("FOUNDATION_DB__URL", "postgres://u:${db.password}@h/${db.pool}")
    monkeypatch.setenv("FOUNDATION_DB__POOL", "many")
    with pytest.raises(ConfigError) as info:
        load(("dup.yaml",), ("db_password=letmein", "retry.api_key hunter3"))
    text = str(info.value)
    for secret in ("hunter2", "31337", "271828", "4242", "swordfish", "letmein", "hunter3"):
        assert secret not in text
    found = {p.path: (p.message, p.source) for p in info.value.problems}
    assert found["retry.max_attempts"][0] == "expected an integer, got ******** (str)"
    assert found["retry.base_delay"][0] == "'base_delay' must be >= 0: ********"
    assert found["retry.labels['api_token']"][0] == "expected a string, got ******** (int)"
    assert found["retry.labels['team']"][0] == "expected a string, got 7 (int)"  # not a secret
    assert found["db.pool"][0] == "expected an integer, got 'many' (str)"
    assert found["db_password"][1] == "--set db_password=********"
    assert found["dup.yaml"][0] == "malformed YAML: duplicate key 'password' (line 3, column 3)"


def test_a_secret_read_by_interpolation_is_masked_in_errors_of_the_key_that_read_it():
    import attrs
    from foundation_config import load_config

    @attrs.frozen
    class Section:
        password: str = ""
        port: int = 0

    with pytest.raises(ConfigError) as info:
        load_config(
            {"s": Section},
            overrides=("s.password=hunter2", "s.port=${s.password}"),
            use_default_files=False,
        )
    assert "hunter2" not in str(info.value)
    assert "s.port: expected an integer, got ******** (str)" in str(info.value)


def test_dynaconf_environment_variables_change_nothing(load, write, monkeypatch, tmp_path):
    """INCLUDES_FOR_DYNACONF pulled in another file; YAML_LOADER_FOR_DYNACONF=unsafe_load would run
    code; AUTO_CAST_FOR_DYNACONF turned tokens off. None of them is read."""
    write("other.toml", "[retry]\nmax_attempts = 99\n")
    write("settings.toml", "[retry]\nname = 'mine'\nbase_delay = '@float 0.5'\n")
    write("extra.yaml", "db:\n  url: !!python/name:os.system\n")
    monkeypatch.setenv("INCLUDES_FOR_DYNACONF", str(tmp_path / "other.toml"))
    monkeypatch.setenv("SETTINGS_FILE_FOR_DYNACONF", str(tmp_path / "other.toml"))
    monkeypatch.setenv("AUTO_CAST_FOR_DYNACONF", "false")
    monkeypatch.setenv("MERGE_ENABLED_FOR_DYNACONF", "true")
    config = load()
    assert (config["retry"].max_attempts, config["retry"].name, config["retry"].base_delay) == (
        3,
        "mine",
        0.5,
    )
    monkeypatch.setenv("YAML_LOADER_FOR_DYNACONF", "unsafe_load")
    found = problems_of(load, ("extra.yaml",))
    assert found[("extra.yaml", "extra.yaml")].startswith("malformed YAML: could not determine a constructor")


def test_includes_written_in_a_file_are_not_followed(load, write, tmp_path):
    write("other.toml", "[retry]\nmax_attempts = 99\n")
    write("settings.toml", f"dynaconf_include = ['{tmp_path / 'other.toml'}']\n[retry]\nname = 'x'\n")
    with pytest.warns(ConfigWarning, match="dynaconf_include: unknown section"):
        config = load()
    assert (config["retry"].max_attempts, config["retry"].name) == (3, "x")


def test_value_tokens_that_read_files_or_settings_are_refused(load, write, tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("top secret")
    write("settings.toml", f"[db]\nurl = '@read_file {tmp_path / 'secret.txt'}'\npassword = '@get HOME'\n")
    found = problems_of(load)
    assert found[("db.url", "settings.toml:db.url")].startswith(
        "the value token @read_file is not allowed in config files (it reads a file; allowed: @str, @int"
    )
    assert "@get is not allowed" in found[("db.password", "settings.toml:db.password")]
    monkeypatch.setenv("POOL", "9")
    write(
        "settings.toml",
        "[db]\npool = '@int 8'\nurl = '@format {env[POOL]}/x'\n[retry]\nname = '@str @format {env.POOL}'\n",
    )
    config = load()
    assert (config["db"].pool, config["db"].url, config["retry"].name) == (8, "9/x", "9")


def test_sections_differing_only_in_case_are_refused_naming_both(load, write):
    """dynaconf upper-cased section names: [RETRY] replaced [retry] and lost its keys."""
    write("settings.toml", "[RETRY]\nmax_attempts = 5\n[retry]\nname = 'x'\n")
    found = problems_of(load)
    assert found[("retry", "settings.toml")] == (
        "sections 'RETRY' and 'retry' differ only in case (section names are not case-sensitive): "
        "write them as one"
    )


def test_set_section_names_are_not_case_sensitive_and_key_case_gets_a_hint(load):
    """As in files and the environment: --set Retry.max_attempts=7 is retry.max_attempts."""
    config = load(overrides=("Retry.max_attempts=7",))
    assert (config["retry"].max_attempts, config.sources["retry.max_attempts"]) == (7, "--set")
    with pytest.warns(ConfigWarning, match=r"retry.Max_Attempts: unknown key .*did you mean 'max_attempts'"):
        load(overrides=("retry.Max_Attempts=7",))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("list.json", "[1, 2]", "malformed JSON: the top level must be a table of sections, not a list"),
        ("null.json", "null", "malformed JSON: the top level must be a table of sections, not null"),
        ("dup.json", '{"db": {"pool": 1, "pool": 2}}', "malformed JSON: duplicate key 'pool'"),
    ],
)
def test_json_whose_top_level_is_no_table_or_with_duplicate_keys_is_refused(load, write, name, text, message):
    write(name, text)
    assert problems_of(load, (name,))[(name, name)] == message


def test_a_directory_given_as_a_file_says_so(load, tmp_path):
    (tmp_path / "conf.toml").mkdir()
    assert problems_of(load, ("conf.toml",))[("conf.toml", "conf.toml")] == "is a directory, not a file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symbolic links")
def test_what_is_not_a_regular_file_says_what_it_is_and_never_blocks(load, tmp_path):
    """A FIFO, a device or a symbolic link loop was "file not found"; a FIFO opened blindly
    would block start-up until something wrote to it."""
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    (tmp_path / "dangling.toml").symlink_to("nowhere.toml")
    found = problems_of(load, ("fifo.toml", "zero.json", "loop.yaml", "dangling.toml"))
    assert found == {
        ("fifo.toml", "fifo.toml"): "is a FIFO, not a regular file",
        ("zero.json", "zero.json"): "is a character device, not a regular file",
        ("loop.yaml", "loop.yaml"): "cannot be read: Too many levels of symbolic links",
        ("dangling.toml", "dangling.toml"): "file not found",
    }


def test_a_file_past_the_size_limit_is_refused_before_it_is_parsed(load, tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "MAX_FILE_BYTES", 1000)
    (tmp_path / "big.json").write_text('{"db": {"url": "' + "a" * 2000 + '"}}')
    assert problems_of(load, ("big.json",)) == {
        ("big.json", "big.json"): "is larger than 1000 bytes: not a config file?"
    }


def test_bytes_that_are_not_utf8_are_named_by_line_and_column(load, tmp_path):
    (tmp_path / "latin1.toml").write_bytes(b'[retry]\nname = "caf\xc3\xa9 \xe9"\n')
    found = problems_of(load, ("latin1.toml",))
    assert found == {("latin1.toml", "latin1.toml"): "not UTF-8 text: byte 0xe9 at line 2, column 14"}


def test_a_byte_order_mark_is_allowed(load, write, tmp_path):
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf[retry]\nmax_attempts = 6\n")
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"db": {"pool": 6}}')
    config = load(("bom.toml", "bom.json"))
    assert (config["retry"].max_attempts, config["db"].pool) == (6, 6)


def test_a_variable_inside_a_key_another_variable_sets_is_refused_naming_both(load, monkeypatch):
    """``FOUNDATION_RETRY__LABELS=x`` was silently replaced by ``FOUNDATION_RETRY__LABELS__TEAM``
    (or the other way round): which one won was an accident of sorting."""
    monkeypatch.setenv("FOUNDATION_RETRY__LABELS", "{team = 'a'}")
    monkeypatch.setenv("FOUNDATION_RETRY__LABELS__TEAM", "b")
    monkeypatch.setenv("FOUNDATION_RETRY__MAX_ATTEMPTS", "many")  # still reported, at once
    found = problems_of(load)
    assert found == {
        ("retry.labels", "env FOUNDATION_RETRY__LABELS"): (
            "FOUNDATION_RETRY__LABELS sets retry.labels and FOUNDATION_RETRY__LABELS__TEAM sets a key "
            "inside it: set one or the other"
        ),
        ("retry.max_attempts", "env FOUNDATION_RETRY__MAX_ATTEMPTS"): "expected an integer, got 'many' (str)",
    }


def test_a_huge_value_or_key_is_shown_cut_in_the_middle(load, write):
    """A 5000-digit --set value, or a 3000-character key, was echoed whole into the error."""
    write("settings.toml", "[retry]\n" + "k" * 3000 + " = 1\n")
    with pytest.warns(ConfigWarning) as warned:
        found = problems_of(load, overrides=("retry.max_attempts=" + "9" * 5000,))
    [(path, source, message)] = [(p, s, m) for (p, s), m in found.items()]
    assert (path, source) == ("retry.max_attempts", "--set")
    assert message.startswith("expected an integer, got '999") and message.endswith("999' (str)")
    assert "...[4683 characters]..." in message and len(message) < 400
    [warning] = [str(w.message) for w in warned if "unknown key" in str(w.message)]
    assert len(warning) < 1300 and "...[2656 characters]..." in warning


@pytest.mark.parametrize("name", ["big.json", "big.toml"])
def test_an_integer_past_pythons_digit_limit_is_named_without_pythons_advice(load, write, name):
    text = '{"retry": {"max_attempts": 1%s}}' if name.endswith("json") else "[retry]\nmax_attempts = 1%s\n"
    write(name, text % ("0" * 5000))
    kind = name.rpartition(".")[2].upper()
    assert problems_of(load, (name,)) == {
        (name, name): f"malformed {kind}: an integer of 5001 digits (at most 4300)"
    }
