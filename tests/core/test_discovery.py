"""Entry-point discovery with real installed distributions: loading, isolation, selection."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from foundation_core import FoundationPluginWarning, Hub, start
from foundation_core.errors import NameClashError, PluginError, PluginLoadError

from .conftest import run_cli

ALL_FIXTURES = "good,broken,raiser,typo,badargs,clash,needy,late"


def _hub(only: str, **env: str) -> Hub:
    hub = Hub(env={"FOUNDATION_PLUGINS": only, **env})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FoundationPluginWarning)
        hub.load_entry_points()
        hub.run_registration()
    return hub


def test_good_plugin_is_discovered_with_its_distribution_and_registrations(on_path: Path) -> None:
    hub = _hub("good")
    info = hub.plugins["good"]
    assert (info.status, info.distribution, info.version) == ("loaded", "foundation-fixture-good", "1.2.3")
    assert "double" in hub.patterns
    assert hub.patterns.get("double")(None)(lambda: 21)() == 42
    assert info.registered["transports"] == ["pigeon"]
    assert info.registered["commands"] == ["good-hello"]
    assert info.registered["config_sections"] == ["good"]


def test_lazy_registration_imports_nothing_until_used(on_path: Path) -> None:
    import sys

    hub = _hub("good")
    assert "fixture_good.heavy" not in sys.modules
    assert hub.transports.get("pigeon").name == "pigeon"
    assert "fixture_good.heavy" in sys.modules


def test_missing_module_is_reported_by_name_and_others_load(on_path: Path) -> None:
    with pytest.warns(FoundationPluginWarning, match="broken"):
        hub = Hub(env={"FOUNDATION_PLUGINS": "good,broken"})
        hub.load_entry_points()
    hub.run_registration()
    broken = hub.plugins["broken"]
    assert broken.status == "failed"
    assert "fixture_does_not_exist" in (broken.error or "")
    assert "FOUNDATION_DISABLE_PLUGINS" in (broken.error or "")
    assert hub.plugins["good"].status == "loaded" and "double" in hub.patterns


def test_plugin_raising_in_a_hook_is_rolled_back_whole(on_path: Path) -> None:
    hub = _hub("good,raiser")
    raiser = hub.plugins["raiser"]
    assert raiser.status == "failed" and raiser.error_hook == "foundation_register_patterns"
    assert "raiser exploded halfway" in (raiser.error or "")
    assert "raiser-first" not in hub.patterns  # nothing half-applied
    assert "double" in hub.patterns


def _line_of(path: Path, text: str) -> str:
    """``PATH:N``, the line of ``path`` holding ``text``."""
    lines = path.read_text().splitlines()
    return f"{path}:{next(n for n, line in enumerate(lines, 1) if text in line)}"


def test_a_plugin_raising_in_a_hook_is_reported_with_the_line_that_raised(on_path: Path) -> None:
    """`foundation plugins` prints the error on one line, no traceback: it names the plugin's line."""
    hub = _hub("raiser")
    where = _line_of(on_path / "fixture_raiser" / "plugin.py", 'raise RuntimeError("raiser exploded')
    assert f"RuntimeError('raiser exploded halfway') (at {where})" in (hub.plugins["raiser"].error or "")


def test_a_missing_entry_point_module_names_the_plugin_to_disable(on_path: Path) -> None:
    error = _hub("broken").plugins["broken"].error or ""
    assert error.endswith("reinstall the plugin or disable it with FOUNDATION_DISABLE_PLUGINS=broken")
    assert "(at " not in error  # no line of the plugin's ran


def test_misspelled_hook_name_gets_a_did_you_mean(on_path: Path) -> None:
    hub = _hub("typo")
    error = hub.plugins["typo"].error or ""
    assert "'foundation_regster_patterns' is not a foundation hook" in error
    assert "did you mean 'foundation_register_patterns'" in error


def test_wrong_hook_arguments_are_rejected_by_pluggy_validation(on_path: Path) -> None:
    hub = _hub("badargs")
    error = hub.plugins["badargs"].error or ""
    assert hub.plugins["badargs"].status == "failed"
    assert "registr" in error and "badargs" in error


def test_two_plugins_registering_one_name_fail_naming_both(on_path: Path) -> None:
    hub = _hub("good,clash")
    error = hub.plugins["clash"].error or ""
    assert "'good'" in error and "'clash'" in error and "replace=True" in error
    assert hub.patterns.entry("double").plugin == "good"


def test_clash_in_strict_mode_is_fatal(on_path: Path) -> None:
    hub = Hub(env={"FOUNDATION_PLUGINS": "good,clash", "FOUNDATION_STRICT_PLUGINS": "1"})
    hub.load_entry_points()
    with pytest.raises(PluginError, match="clash") as exc_info:
        hub.run_registration()
    assert isinstance(exc_info.value.__cause__, NameClashError)


def test_strict_mode_fails_naming_the_broken_plugin(on_path: Path) -> None:
    hub = Hub(env={"FOUNDATION_PLUGINS": "good,broken", "FOUNDATION_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginLoadError, match="plugin 'broken' failed"):
        hub.load_entry_points()


def test_disable_variable_blocks_a_plugin(on_path: Path) -> None:
    hub = _hub("good,clash", FOUNDATION_DISABLE_PLUGINS="good")
    assert hub.plugins["good"].status == "disabled"
    assert hub.patterns.entry("double").plugin == "clash"  # no clash without 'good'


def test_allow_variable_loads_only_the_listed(on_path: Path) -> None:
    hub = _hub("good")
    assert {n for n, i in hub.plugins.items() if i.status == "loaded"} == {"good"}
    assert hub.plugins["broken"].status == "not-selected"


def test_allow_variable_naming_an_unknown_plugin_is_an_error(on_path: Path) -> None:
    hub = Hub(env={"FOUNDATION_PLUGINS": "good,nosuch"})
    with pytest.raises(PluginLoadError, match="FOUNDATION_PLUGINS names nosuch"):
        hub.load_entry_points()


def test_disabled_plugin_that_another_needs_is_named(on_path: Path) -> None:
    hub = _hub("good,needy", FOUNDATION_DISABLE_PLUGINS="good")
    error = hub.plugins["needy"].error or ""
    assert "needs plugin 'good'" in error and "disabled by FOUNDATION_DISABLE_PLUGINS" in error
    assert "needy" not in hub.patterns


def test_lookup_of_a_name_from_a_disabled_plugin_says_so(on_path: Path) -> None:
    hub = _hub("good,clash", FOUNDATION_DISABLE_PLUGINS="clash,good")
    with pytest.raises(LookupError, match=r"no pattern named 'double'.*good \(disabled"):
        hub.patterns.get("double")


def test_startup_failing_halfway_shuts_down_what_started_in_reverse(on_path: Path) -> None:
    with pytest.raises(PluginError, match="late failed to start"):
        start(env={"FOUNDATION_PLUGINS": "good,late", "FOUNDATION_STRICT_PLUGINS": "1"})
    import fixture_good.plugin as good
    import fixture_late.plugin as late

    assert good.EVENTS == ["good.startup", "good.shutdown"]
    assert late.EVENTS == ["late.startup"]  # it never started, so it is not shut down


def test_non_strict_startup_failure_isolates_the_plugin(on_path: Path) -> None:
    with pytest.warns(FoundationPluginWarning, match="late failed to start"):
        hub = start(env={"FOUNDATION_PLUGINS": "good,late"})
    with hub:
        assert hub.plugins["late"].status == "failed"
    import fixture_good.plugin as good

    assert good.EVENTS == ["good.startup", "good.shutdown"]


def test_cli_plugins_json_lists_errors_and_registrations(plugin_site: Path) -> None:
    proc = run_cli(plugin_site, "plugins", "--json", FOUNDATION_PLUGINS=ALL_FIXTURES)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert by_name["good"]["registered"]["patterns"] == ["double"]
    assert by_name["good"]["distribution"] == "foundation-fixture-good"
    assert by_name["good"]["hooks"] == sorted(by_name["good"]["hooks"])
    assert {n for n, p in by_name.items() if p["status"] == "failed"} == {
        "broken",
        "raiser",
        "typo",
        "badargs",
        "clash",
    }
    # each isolated plugin is one plain line, not Python's warning with its source line
    assert "foundation: warning: plugin 'broken' failed: entry point" in proc.stderr, proc.stderr
    assert "FoundationPluginWarning" not in proc.stderr


def test_cli_strict_flag_exits_nonzero_naming_the_plugin(plugin_site: Path) -> None:
    proc = run_cli(plugin_site, "--strict-plugins", "plugins", FOUNDATION_PLUGINS="good,broken")
    assert proc.returncode == 1
    assert "plugin 'broken' failed" in proc.stderr


def test_cli_runs_a_plugin_command(plugin_site: Path) -> None:
    proc = run_cli(plugin_site, "good-hello", FOUNDATION_PLUGINS="good")
    assert (proc.returncode, proc.stdout.strip()) == (0, "hello from good")


def test_trace_variable_logs_every_hook_call(plugin_site: Path) -> None:
    proc = run_cli(plugin_site, "plugins", FOUNDATION_PLUGINS="good", FOUNDATION_TRACE_HOOKS="1")
    assert proc.returncode == 0
    assert "[foundation-trace]" in proc.stderr
    assert "foundation_register_patterns" in proc.stderr


def _odd_hub(site: Path, only: str, **env: str) -> tuple[Hub, list[str]]:
    import importlib
    import sys

    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FoundationPluginWarning)
            hub = Hub(env={"FOUNDATION_PLUGINS": only, **env})
            hub.register(object(), name="foundation", _builtin=True)  # as the CLI does
            hub.load_entry_points()
    finally:
        sys.path.remove(str(site))
        for mod in [m for m in sys.modules if m.startswith("fixture_")]:
            del sys.modules[mod]
    return hub, [str(w.message) for w in caught]


def test_a_plugin_calling_sys_exit_while_importing_fails_alone(odd_site: Path) -> None:
    hub, _ = _odd_hub(odd_site, "exiter,needsdep")
    assert hub.plugins["exiter"].status == "failed"
    assert "exiter: refusing to load" in (hub.plugins["exiter"].error or "")


def test_a_plugin_raising_any_base_exception_but_ctrl_c_while_importing_fails_alone(odd_site: Path) -> None:
    """Not only sys.exit(): a BaseException of the plugin's own (as pytest's Skipped is) escaped
    load_entry_points and ended the start-up of every plugin."""
    hub, _ = _odd_hub(odd_site, "baser,needsdep")
    assert hub.plugins["baser"].status == "failed"
    assert "raised Refused('baser: not here')" in (hub.plugins["baser"].error or "")
    assert hub.plugins["needsdep"].status == "failed"  # and the one after it was still loaded


def test_a_plugin_failing_to_import_is_reported_with_the_line_that_raised(odd_site: Path) -> None:
    hub, _ = _odd_hub(odd_site, "exiter,needsdep")
    exiter = hub.plugins["exiter"].error or ""
    assert f"(at {_line_of(odd_site / 'fixture_exiter' / 'plugin.py', 'sys.exit(')})" in exiter
    needsdep = hub.plugins["needsdep"].error or ""
    where = _line_of(odd_site / "fixture_needsdep" / "plugin.py", "import fixture_dependency")
    assert f"(at {where}); install the plugin's dependencies" in needsdep
    assert needsdep.endswith("disable it with FOUNDATION_DISABLE_PLUGINS=needsdep")


def test_a_missing_dependency_of_a_plugin_is_not_called_its_entry_point_module(odd_site: Path) -> None:
    hub, _ = _odd_hub(odd_site, "needsdep")
    error = hub.plugins["needsdep"].error or ""
    assert "it needs module 'fixture_dependency_not_installed', which is not installed" in error
    assert "names module" not in error


def test_an_entry_point_with_the_cores_name_is_refused_and_the_core_kept(odd_site: Path) -> None:
    hub, warned = _odd_hub(odd_site, "foundation")
    assert hub.plugins["foundation"].source == "builtin"
    assert any("has the name of the builtin plugin 'foundation'" in w for w in warned)


def test_selection_names_ignore_case_and_dashes_and_unknown_disables_warn(on_path: Path) -> None:
    unknown = "FOUNDATION_DISABLE_PLUGINS names no_such, which no installed plugin has"
    with pytest.warns(FoundationPluginWarning, match=unknown):
        hub = Hub(env={"FOUNDATION_PLUGINS": "Good,Clash", "FOUNDATION_DISABLE_PLUGINS": "GOOD,no-such"})
        hub.load_entry_points()
    assert hub.plugins["good"].status == "disabled"
    assert hub.plugins["clash"].status == "loaded"


def test_disabling_the_builtin_plugin_says_it_stays_and_unknown_names_list_only_installed_ones(
    on_path: Path,
) -> None:
    env = {"FOUNDATION_PLUGINS": "Good", "FOUNDATION_DISABLE_PLUGINS": "foundation,nope"}
    from foundation_core._cli import _builtin_commands

    with pytest.warns(FoundationPluginWarning) as record:
        hub = Hub(env=env)
        hub.register(_builtin_commands, name="foundation", _builtin=True)  # as the CLI does
        hub.load_entry_points()
    messages = [str(w.message) for w in record]
    assert any("names foundation, which is not an installed plugin but built in" in m for m in messages)
    [unknown] = [m for m in messages if "names nope" in m]
    installed = unknown.split("(installed: ")[1].rstrip(")").split(", ")
    assert "good" in installed and "foundation" not in installed  # entry points, not the builtin
    assert hub.plugins["foundation"].source == "builtin"


def test_a_plugin_command_cannot_take_a_builtin_commands_name(odd_site: Path) -> None:
    result = run_cli(odd_site, "plugins", FOUNDATION_PLUGINS="hijacker")
    assert result.returncode == 0, result.stderr
    assert "hijacker" in result.stdout and "hijacked" not in result.stdout
