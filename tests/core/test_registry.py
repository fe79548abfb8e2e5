"""Registries: names, lazy references, precedence of application overrides, rollback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from foundation_core import Registrar, Registry
from foundation_core._registry import resolve_ref
from foundation_core.errors import NameClashError, NotRegisteredError, PluginError


def test_second_registration_without_replace_names_both_plugins() -> None:
    reg: Registry[object] = Registry("pattern")
    reg.add("retry", object(), plugin="a", app=False)
    with pytest.raises(NameClashError) as exc_info:
        reg.add("retry", object(), plugin="b", app=False)
    err = exc_info.value
    assert (err.holder, err.newcomer, err.name) == ("a", "b", "retry")
    assert "FOUNDATION_DISABLE_PLUGINS" in str(err)


def test_a_clash_of_two_application_objects_does_not_advise_the_variable_that_ignores_them() -> None:
    """FOUNDATION_DISABLE_PLUGINS selects installed plugins only: following that advice for two
    objects passed to start(plugins=...) left the clash as it was."""
    import foundation_core
    from foundation_core import hookimpl

    class First:
        @hookimpl
        def foundation_register_patterns(self, register: Registrar) -> None:
            register("dup", lambda policy: lambda fn: fn)

    class Second(First):
        pass

    with pytest.raises(NameClashError) as exc_info:
        foundation_core.start(
            plugins=[First(), Second()], entry_points=False, env={"FOUNDATION_DISABLE_PLUGINS": "Second"}
        )
    message = str(exc_info.value)
    assert "FOUNDATION_DISABLE_PLUGINS" not in message
    assert "both are the application's (passed to start(plugins=...)) or the core's" in message
    assert "pass replace=True in" in message


def test_replace_true_takes_the_name_and_records_the_displaced() -> None:
    reg: Registry[str] = Registry("pattern")
    reg.add("retry", "x:a", plugin="a", app=False)
    reg.add("retry", "x:b", plugin="b", app=False, replace=True)
    assert reg.entry("retry").plugin == "b" and reg.entry("retry").shadowed == ["a"]


def test_application_registration_wins_whatever_the_order() -> None:
    reg: Registry[int] = Registry("pattern")
    reg.add("retry", 1, plugin="app", app=True)
    reg.add("retry", 2, plugin="installed", app=False)  # later, but shadowed, not a clash
    assert reg.get("retry") == 1 and reg.entry("retry").shadowed == ["installed"]
    with pytest.raises(NameClashError):
        reg.add("retry", 3, plugin="app2", app=True)


def test_lazy_reference_resolves_on_first_get_only() -> None:
    reg: Registry[object] = Registry("transport")
    reg.add("json", "json:dumps", plugin="p", app=False)
    assert reg.entry("json").lazy
    import json

    assert reg.get("json") is json.dumps
    assert not reg.entry("json").lazy


@pytest.mark.parametrize("ref", ["nocolon", ":attr", "module:", ""])
def test_malformed_lazy_reference_is_a_clear_error(ref: str) -> None:
    with pytest.raises(ValueError, match="not of the form 'module:attribute'"):
        resolve_ref(ref)


def test_unknown_name_lists_what_is_registered() -> None:
    reg: Registry[int] = Registry("model backend")
    reg.add("torch", 1, plugin="torch", app=False)
    with pytest.raises(
        NotRegisteredError, match=r"no model backend named 'onnx' is registered \(registered: torch\)"
    ):
        reg.get("onnx")


@pytest.mark.parametrize("name", [None, 5, ["shm"]])
def test_a_name_that_is_no_str_is_a_type_error_listing_what_is_registered(name: object) -> None:
    """``InferenceClient(server, transport=None)``, ``runtime.start(transport=5)`` and
    ``register_model(..., backend=5)`` failed with AttributeError: 'NoneType' object has no
    attribute 'replace' (the install hint's), a list with 'unhashable type'."""
    reg: Registry[int] = Registry("transport", hint=lambda name: f"; no {name.replace('_', '-')}")
    reg.add("shm", 1, plugin="shm", app=False)
    with pytest.raises(TypeError) as caught:
        reg.get(name)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"a transport name is a str, not {type(name).__name__} {name!r} (registered: shm)"
    )


def test_remove_plugin_rolls_back_only_its_entries() -> None:
    reg: Registry[int] = Registry("pattern")
    reg.add("a", 1, plugin="p", app=False)
    reg.add("b", 2, plugin="q", app=False)
    assert reg.remove_plugin("p") == ["a"]
    assert reg.names() == ["b"]


@pytest.mark.parametrize("name", ["", None, 3])
def test_invalid_names_are_rejected(name: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Registry("pattern").add(name, 1, plugin="p", app=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("app_first", [True, False])
def test_an_application_wins_whatever_the_order_even_over_replace(app_first: bool) -> None:
    reg: Registry[int] = Registry("pattern")
    steps = [
        lambda: reg.add("greet", 1, plugin="app", app=True),
        lambda: reg.add("greet", 2, plugin="installed", app=False, replace=True),
    ]
    for step in steps if app_first else steps[::-1]:
        step()
    assert reg.get("greet") == 1
    assert reg.entry("greet").plugin == "app" and reg.entry("greet").shadowed == ["installed"]


@pytest.mark.parametrize("replacer_first", [True, False])
def test_replace_true_wins_whichever_plugin_pluggy_calls_first(replacer_first: bool) -> None:
    reg: Registry[int] = Registry("pattern")
    steps = [
        lambda: reg.add("retry", 2, plugin="turbo", app=False, replace=True),
        lambda: reg.add("retry", 1, plugin="retry", app=False),
    ]
    for step in steps if replacer_first else steps[::-1]:
        step()  # neither order is a clash
    assert reg.get("retry") == 2 and reg.entry("retry").shadowed == ["retry"]


def test_decorating_wrappers_stack_and_the_later_replace_wins() -> None:
    reg: Registry[str] = Registry("pattern")
    reg.add("greet", "m:base", plugin="p", app=False)
    reg.add("greet", "m:traced", plugin="w1", app=False, replace=True)
    reg.add("greet", "m:timed", plugin="w2", app=False, replace=True)
    assert reg.entry("greet").target == "m:timed"
    assert reg.entry("greet").shadowed == ["p", "w1"]


def test_rolling_back_a_replacer_gives_the_name_back() -> None:
    reg: Registry[int] = Registry("pattern")
    reg.add("retry", 1, plugin="retry", app=False)
    reg.add("retry", 2, plugin="turbo", app=False, replace=True)
    assert reg.remove_plugin("turbo") == ["retry"]
    assert reg.get("retry") == 1
    assert reg.entry("retry").plugin == "retry" and reg.entry("retry").shadowed == []
    assert reg.remove_plugin("retry") == ["retry"] and "retry" not in reg


def test_two_plain_applications_still_clash_and_a_plugin_under_an_app_does_not() -> None:
    reg: Registry[int] = Registry("command")
    reg.add("version", 1, plugin="foundation", app=True)
    reg.add("version", 2, plugin="a", app=False)
    reg.add("version", 3, plugin="b", app=False, replace=True)
    assert reg.get("version") == 1
    with pytest.raises(NameClashError):
        reg.add("version", 4, plugin="app", app=True)


def test_a_malformed_lazy_reference_is_refused_at_registration_naming_the_plugin() -> None:
    with pytest.raises(ValueError, match="transport 'odd' of plugin 'p': lazy reference 'no colon'"):
        Registry("transport").add("odd", "no colon", plugin="p", app=False)


def test_a_lazy_reference_that_does_not_import_names_the_plugin_and_the_registry() -> None:
    from foundation_core.errors import PluginError

    reg: Registry[object] = Registry("transport")
    reg.add("fast", "fast_transport_not_installed:Fast", plugin="fastplug", app=False)
    with pytest.raises(PluginError, match=r"plugin 'fastplug' failed: transport 'fast'.*cannot be imported"):
        reg.get("fast")


@pytest.mark.parametrize("target", [42, None, object(), 3.5, b"module:attr"])
def test_a_factory_registry_refuses_what_cannot_be_called_naming_the_plugin(target: object) -> None:
    reg: Registry[object] = Registry("transport", factories=True)
    with pytest.raises(TypeError, match=r"transport 'pigeon' of plugin 'birds': .* is not callable"):
        reg.add("pigeon", target, plugin="birds", app=False)
    assert "pigeon" not in reg


def test_a_lazy_reference_to_something_not_callable_fails_its_plugin_when_imported() -> None:
    reg: Registry[object] = Registry("pattern", factories=True)
    reg.add("sep", "os:sep", plugin="paths", app=False)
    with pytest.raises(PluginError, match=r"plugin 'paths'.*pattern 'sep': 'os:sep' is '/', not callable"):
        reg.get("sep")


def test_hub_registries_hold_factories_and_a_plugin_registering_a_value_is_isolated() -> None:
    from foundation_core import hookimpl, start
    from foundation_core._isolation import FoundationPluginWarning

    class Valued:
        @hookimpl
        def foundation_register_model_backends(self, register: Registrar) -> None:
            register("numbers", {"not": "a backend"})

    with pytest.warns(FoundationPluginWarning, match="is not callable"):
        hub = start(installed=[Valued()], entry_points=False, env={"FOUNDATION_PLUGINS": ""})
    with hub:
        assert "numbers" not in hub.model_backends
        assert hub.plugins["Valued"].status == "failed"


_FAILS_ON_IMPORT = {
    "sys.exit": ("import sys\nsys.exit(3)\n", r"SystemExit\(3\)"),
    # any BaseException but Ctrl-C: a plugin's own, as pytest's Skipped is
    "BaseException": ("class Refused(BaseException):\n    pass\n\nraise Refused('no')\n", r"Refused\('no'\)"),
}


@pytest.mark.parametrize("kind", list(_FAILS_ON_IMPORT))
def test_a_lazy_reference_whose_import_exits_or_raises_is_a_plugin_error_not_an_exit(
    new_module: Callable[[str, str], str], kind: str
) -> None:
    """A plugin module calling sys.exit() on import fails alone, as at entry-point load."""
    source, raised = _FAILS_ON_IMPORT[kind]
    module = new_module(f"fixture_reg_{kind.replace('.', '_')}", source)
    reg: Registry[object] = Registry("model backend", factories=True)
    reg.add("quits", f"{module}:Backend", plugin="quitter", app=False)
    with pytest.raises(PluginError, match=rf"plugin 'quitter' failed: model backend 'quits'.*{raised}"):
        reg.get("quits")


def test_a_keyboard_interrupt_while_a_lazy_reference_imports_passes_through(
    new_module: Callable[[str, str], str],
) -> None:
    new_module("fixture_reg_interrupted", "raise KeyboardInterrupt\n")
    reg: Registry[object] = Registry("transport")
    reg.add("ctrl-c", "fixture_reg_interrupted:T", plugin="p", app=False)
    with pytest.raises(KeyboardInterrupt):
        reg.get("ctrl-c")
