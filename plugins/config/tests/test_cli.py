"""``foundation config show`` and ``foundation config check``: values, sources, masking, exit status."""

from __future__ import annotations

import json

import pytest
from foundation_config import MASK, load_config
from foundation_config._show import effective_values

from foundation_core._cli import main
from foundation_core.errors import ConfigError


@pytest.fixture(autouse=True)
def _only_our_plugins(monkeypatch):
    monkeypatch.setenv("FOUNDATION_PLUGINS", "config,logging")


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_show_prints_every_effective_value(capsys):
    status, out, _ = run(capsys, "config", "show")
    assert status == 0
    assert 'logging.level = "info"' in out.splitlines()
    assert 'logging.format = "console"' in out.splitlines()


def test_show_json_with_sources_from_every_kind_of_source(capsys, write, monkeypatch):
    write("settings.toml", "[logging]\nlevel = 'warning'\n")
    write("prod.yaml", "logging:\n  format: json\n")
    monkeypatch.setenv("FOUNDATION_LOGGING__OUTPUT", "stdout")
    status, out, _ = run(
        capsys,
        "--config",
        "prod.yaml",
        "--set",
        "logging.stdlib=false",
        "config",
        "show",
        "--json",
        "--sources",
    )
    assert status == 0
    shown = json.loads(out)
    assert shown["values"]["logging"] == {
        "level": "warning",
        "format": "json",
        "output": "stdout",
        "redact": list(shown["values"]["logging"]["redact"]),
        "stdlib": False,
        "reopen": False,
    }
    assert shown["sources"]["logging.level"] == "settings.toml:logging.level"
    assert shown["sources"]["logging.format"] == "prod.yaml:logging.format"
    assert shown["sources"]["logging.output"] == "env FOUNDATION_LOGGING__OUTPUT"
    assert shown["sources"]["logging.stdlib"] == "--set"
    assert shown["sources"]["logging.redact"] == "default"
    assert shown["sources"]["logging.reopen"] == "default"


def test_show_text_with_sources(capsys, monkeypatch):
    monkeypatch.setenv("FOUNDATION_LOGGING__LEVEL", "debug")
    _, out, _ = run(capsys, "config", "show", "--sources")
    [line] = [line for line in out.splitlines() if line.startswith("logging.level")]
    assert line.split() == ["logging.level", "=", '"debug"', "#", "env", "FOUNDATION_LOGGING__LEVEL"]


def test_show_masks_values_from_the_secrets_file_and_configured_keys(capsys, write):
    write(".secrets.toml", "[logging]\noutput = '/var/log/secret-path.log'\n")
    _, out, _ = run(capsys, "--set", "config.secret_keys=['format']", "config", "show", "--json")
    logging_ = json.loads(out)["logging"]
    assert (logging_["output"], logging_["format"], logging_["level"]) == (MASK, MASK, "info")
    assert "secret-path" not in out


def test_masking_by_key_name_including_nested_tables(load, write):
    write(
        "settings.toml",
        "[db]\npassword = 'hunter2'\nurl = 'x'\n[retry.labels]\napi_token = 't'\nteam = 'ml'\n",
    )
    rows = {path: value for path, value, _ in effective_values(load())}
    assert (rows["db.password"], rows["db.url"]) == (MASK, "x")
    assert rows["retry.labels"] == {"api_token": MASK, "team": "ml"}


def test_masking_by_a_name_among_the_key_s_words(load, write):
    """``secret_key`` and ``aws_secret_access_key`` (no ``_secret`` suffix) were shown."""
    write(
        "settings.toml",
        "[retry.labels]\nsecret_key = 's1'\naws_secret_access_key = 's2'\nmax_tokens = '5'\n",
    )
    rows = {path: value for path, value, _ in effective_values(load())}
    assert rows["retry.labels"] == {"secret_key": MASK, "aws_secret_access_key": MASK, "max_tokens": "5"}


@pytest.mark.parametrize("other", ["env", "--set", "file"])
def test_a_secrets_file_value_inside_a_table_stays_masked_when_another_layer_adds_keys(load, write, other):
    """The table's own source is then the other layer; the key from .secrets.toml is still masked."""
    write(".secrets.toml", "[retry.labels]\nsslkey = '-----BEGIN KEY----- abc'\n")
    kw: dict[str, object] = {}
    if other == "env":
        kw["environ"] = {"FOUNDATION_RETRY__LABELS__TEAM": "ml"}
    elif other == "--set":
        kw["overrides"] = ("retry.labels.team=ml",)
    else:
        write("extra.toml", "[retry.labels]\nteam = 'ml'\n")
        kw["files"] = ("extra.toml",)
    rows = {path: (value, source) for path, value, source in effective_values(load(**kw))}
    value, source = rows["retry.labels"]
    assert value == {"sslkey": MASK, "team": "ml"}
    assert ".secrets.toml" not in source  # the table's own source is the other layer's


def test_a_secret_copied_into_another_value_by_interpolation_is_masked_there_too(load, write):
    write(
        "settings.toml",
        "[db]\npassword = 'hunter2'\nurl = 'postgres://u:${db.password}@h/db'\n"
        "[retry]\nname = 'via-${retry.labels.chain}'\n"
        "labels = {chain = '${db.url}', team = 'pool-${db.pool}'}\n",
    )
    config = load()
    assert config["db"].url == "postgres://u:hunter2@h/db"  # the value itself is untouched
    rows = {path: value for path, value, _ in effective_values(config)}
    assert (rows["db.password"], rows["db.url"]) == (MASK, MASK)
    assert rows["retry.name"] == MASK  # read db.url, which read db.password
    assert rows["retry.labels"] == MASK  # holds the chain too
    assert config.references["db.url"] == {"db.password"}
    assert rows["db.pool"] == 5 and rows["retry.max_attempts"] == 3


@pytest.mark.parametrize("var", ["${env:API_TOKEN}", "@format {env[API_TOKEN]}", "@format {env.API_TOKEN}"])
def test_a_value_built_from_a_secrets_variable_is_masked(load, write, var):
    """``url = "${env:API_TOKEN}"``: the key's name is no secret's, the variable's is."""
    url = f"@format https://x/?t={var[8:]}" if var.startswith("@") else f"https://x/?t={var}"
    write("settings.toml", f"[db]\nurl = '{url}'\n[retry.labels]\nauth = '{var}'\nteam = 'ml'\n")
    config = load(environ={"API_TOKEN": "hunter2"})
    assert config["db"].url == "https://x/?t=hunter2"  # the value itself is untouched
    rows = {path: value for path, value, _ in effective_values(config)}
    assert rows["db.url"] == MASK
    # @format is applied per key as the file is read; ${...} is resolved per field, as for keys
    inside = {"auth": MASK, "team": "ml"} if var.startswith("@") else MASK
    assert rows["retry.labels"] == inside
    assert "env:API_TOKEN" in config.references["db.url"]


def test_a_value_built_from_a_secrets_variable_and_copied_is_masked_where_copied(load, write):
    write(
        "settings.toml",
        "[db]\nurl = '@format {env[DB_PASSWORD]}'\n[retry]\nname = 'via-${db.url}'\n"
        "labels = {team = '@format {env[TEAM]}'}\n",
    )
    config = load(environ={"DB_PASSWORD": "hunter2", "TEAM": "ml"})
    rows = {path: value for path, value, _ in effective_values(config)}
    assert (rows["db.url"], rows["retry.name"]) == (MASK, MASK)
    assert rows["retry.labels"] == {"team": "ml"}  # read a variable that is no secret's


def test_a_value_from_a_secrets_variable_replaced_by_a_later_layer_is_shown(load, write):
    write("settings.toml", "[db]\nurl = '@format {env[API_TOKEN]}'\n")
    config = load(environ={"API_TOKEN": "hunter2"}, overrides=("db.url=sqlite://x",))
    rows = {path: value for path, value, _ in effective_values(config)}
    assert rows["db.url"] == "sqlite://x"


@pytest.mark.parametrize(
    "form", ["${env:API_TOKEN}", "@format {env[API_TOKEN]}", "@int @format {env[API_TOKEN]}"]
)
def test_an_error_never_quotes_a_value_built_from_a_secrets_variable(load, write, form):
    write("settings.toml", f"[db]\npool = '{form}'\n")
    with pytest.raises(ConfigError) as info:
        load(environ={"API_TOKEN": "hunter2"})
    assert "db.pool" in str(info.value) and "hunter2" not in str(info.value)


def test_interpolation_of_plain_values_stays_visible(load, write):
    write("settings.toml", "[db]\nurl = 'sqlite://${db.pool}'\n")
    rows = {path: value for path, value, _ in effective_values(load())}
    assert rows["db.url"] == "sqlite://5"


def test_masking_keys_come_from_the_config_section(tmp_path):
    import attrs
    from foundation_config import ConfigSettings

    @attrs.frozen
    class Svc:
        ssn: str = "123"

    config = load_config(
        {"config": ConfigSettings, "svc": Svc}, overrides=["config.secret_keys=['ssn']"], cwd=tmp_path
    )
    assert dict((p, v) for p, v, _ in effective_values(config))["svc.ssn"] == MASK


def test_check_passes_on_good_files(capsys, write):
    write("extra.toml", "[logging]\nlevel = 'error'\n")
    status, out, _ = run(capsys, "config", "check", "extra.toml")
    assert status == 0
    assert out.startswith("configuration ok")


def test_check_exits_2_and_lists_every_problem(capsys, write, monkeypatch):
    write("settings.toml", "[logging]\nlevel = 'loud'\nformat = 3\n")
    write("extra.json", "{not json")
    monkeypatch.setenv("FOUNDATION_LOGGING__STDLIB", "perhaps")
    status, out, err = run(capsys, "--set", "logging.output=", "config", "check", "extra.json")
    assert status == 2
    assert out == ""
    assert "invalid configuration (5 problems)" in err
    for fragment in (
        "logging.level: logging.level must be one of debug, info, warning, error, critical",
        "(from settings.toml:logging.level)",
        "logging.format: expected a string, got 3 (int) (from settings.toml:logging.format)",
        "extra.json: malformed JSON",
        "(from env FOUNDATION_LOGGING__STDLIB)",
        "(from --set)",
    ):
        assert fragment in err


def test_unknown_keys_warn_unless_strict(capsys, write):
    write("settings.toml", "[logging]\nlevl = 'debug'\n")
    status, _, err = run(capsys, "config", "check")
    assert status == 0
    assert "warning: logging.levl: unknown key in section 'logging' (did you mean 'level'?)" in err
    status, _, err = run(capsys, "config", "check", "--strict")
    assert status == 2
    assert "logging.levl: unknown key" in err


def test_bad_config_stops_any_command_that_configures_with_status_2(capsys, write):
    write("settings.toml", "[logging\n")
    status, _, err = run(capsys, "config", "show")
    assert status == 2
    assert "settings.toml: malformed TOML" in err


def test_a_config_warning_prints_as_one_line_naming_the_command(capsys, write):
    write("extra.toml", "[logging]\nlevle = 'debug'\n")
    status, out, err = run(capsys, "--config", "extra.toml", "version")
    assert status == 0 and out.startswith("foundation ")
    assert err.splitlines()[0].startswith(
        "foundation version: warning: logging.levle: unknown key in section 'logging' (did you mean 'level'?)"
    )
    assert "ConfigWarning" not in err and "return load_config" not in err


def test_a_secret_is_masked_in_the_errors_of_config_check(capsys, write):
    write(".secrets.toml", "[logging]\nlevel = 'hunter2'\n")
    status, _, err = run(capsys, "config", "check")
    assert status == 2
    assert "hunter2" not in err
    assert "got ******** (from .secrets.toml:logging.level)" in err


def test_show_json_is_valid_json_with_nan_and_infinity(capsys, monkeypatch):
    import attrs

    from foundation_core import hookimpl

    @attrs.frozen
    class Limits:
        ratio: float = 1.0
        top: float = 1.0

    class Declares:
        @hookimpl
        def foundation_config_sections(self, add):
            add("limits", Limits)

    monkeypatch.setattr("foundation_core._hub.Hub.load_entry_points", _with(Declares()))
    status, out, _ = run(
        capsys, "--set", "limits.ratio=nan", "--set", "limits.top=-inf", "config", "show", "--json"
    )
    assert status == 0
    shown = json.loads(out, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert (shown["limits"]["ratio"], shown["limits"]["top"]) == ("nan", "-inf")


def _with(extra):
    from foundation_core._hub import Hub

    original = Hub.load_entry_points

    def load_entry_points(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        self.register(extra)
        return result

    return load_entry_points


def test_show_leaves_out_the_fields_that_take_functions(capsys, monkeypatch):
    """retry.random was shown as '<built-in method random of Random object at 0x...>', another
    address each run (and in --json); a field configuration cannot set is not shown."""
    monkeypatch.setenv("FOUNDATION_PLUGINS", "config,logging,retry,fallback")
    status, out, _ = run(capsys, "config", "show")
    assert status == 0
    keys = {line.split(" = ")[0] for line in out.splitlines()}
    assert {"retry.max_attempts", "fallback.value"} <= keys
    assert not keys & {"retry.random", "retry.retry_if_result", "fallback.handler"}
    assert " at 0x" not in out
    status, out, _ = run(capsys, "config", "show", "--json")
    assert "random" not in json.loads(out)["retry"] and "handler" not in json.loads(out)["fallback"]
    status, _, err = run(capsys, "--set", "retry.random=1", "config", "check")
    assert status == 2
    assert "retry.random: takes a function, which is given in code (RetryPolicy(...)" in err
