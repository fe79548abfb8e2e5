"""Hub lifecycle: configure, start-up order, shutdown in reverse, config contract, events."""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import Any

import attrs
import pytest

import foundation_core
from foundation_core import Config, FoundationPluginWarning, hookimpl, start
from foundation_core.errors import ConfigError, FoundationError, PluginError


class Recorder:
    def __init__(self, name: str, log: list[str], fail_startup: bool = False) -> None:
        self.foundation_name = name
        self.log = log
        self.fail = fail_startup

    @hookimpl
    def foundation_configure(self, config: Config) -> None:
        self.log.append(f"{self.foundation_name}.configure")

    @hookimpl
    def foundation_startup(self, hub: foundation_core.Hub) -> None:
        self.log.append(f"{self.foundation_name}.startup")
        if self.fail:
            raise RuntimeError(f"{self.foundation_name} cannot start")

    @hookimpl
    def foundation_shutdown(self, hub: foundation_core.Hub) -> None:
        self.log.append(f"{self.foundation_name}.shutdown")


def test_shutdown_runs_in_reverse_startup_order() -> None:
    log: list[str] = []
    with start([Recorder("a", log), Recorder("b", log)], entry_points=False):
        pass
    starts = [e for e in log if e.endswith("startup")]
    stops = [e.replace("shutdown", "startup") for e in log if e.endswith("shutdown")]
    assert stops == list(reversed(starts))
    assert log.index("a.configure") < log.index("a.startup")


def test_a_plugin_with_two_startup_and_two_shutdown_hookimpls_has_each_shutdown_run_once() -> None:
    """A plugin may hold several hookimpls of one hook (``@hookimpl(specname=...)``), as pluggy
    allows: its shutdowns were kept one per plugin (the other never ran) and the plugin counted
    as started once per startup hookimpl (the one kept ran that many times)."""
    log: list[str] = []

    class Two:
        @hookimpl
        def foundation_startup(self) -> None:
            log.append("start cache")

        @hookimpl(specname="foundation_startup")
        def start_pool(self) -> None:
            log.append("start pool")

        @hookimpl
        def foundation_shutdown(self) -> None:
            log.append("stop cache")

        @hookimpl(specname="foundation_shutdown")
        def stop_pool(self) -> None:
            log.append("stop pool")

    with start([Two()], entry_points=False):
        assert sorted(log) == ["start cache", "start pool"]
    assert sorted(log[2:]) == ["stop cache", "stop pool"]


def test_app_startup_failure_propagates_after_shutting_down_the_started() -> None:
    log: list[str] = []
    # pluggy calls later registrations first: "late" starts first, then "bad" fails.
    with pytest.raises(RuntimeError, match="bad cannot start"):
        start([Recorder("bad", log, fail_startup=True), Recorder("late", log)], entry_points=False)
    assert log[-2:] == ["bad.startup", "late.shutdown"]
    assert "bad.shutdown" not in log


def test_shutdown_without_startup_does_nothing() -> None:
    log: list[str] = []
    hub = foundation_core.Hub(env={})
    hub.register(Recorder("a", log))
    hub.shutdown()
    assert log == []


@attrs.frozen
class Section:
    size: int = 4


class Sections:
    @hookimpl
    def foundation_config_sections(self, add: foundation_core.SectionAdder) -> None:
        add("demo", Section)


def test_default_config_is_frozen_and_records_sources() -> None:
    with start([Sections()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as hub:
        assert hub.config is not None
        assert hub.config["demo"] == Section() and hub.config.value("demo.size") == 4
        assert hub.config.sources["demo.size"] == "default"
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            hub.config.sections["demo"] = Section(5)  # type: ignore[index]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            hub.config.sections = {}  # type: ignore[misc]
        with pytest.raises(KeyError, match="no config section 'nope'"):
            hub.config["nope"]


def test_overrides_without_a_config_plugin_are_refused_clearly() -> None:
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(Sections())
    with pytest.raises(ConfigError, match="need the config plugin"):
        hub.configure(overrides=["demo.size=5"])


def test_section_registered_twice_names_both_plugins() -> None:
    class Other(Sections):
        foundation_name = "other"

    with pytest.raises(FoundationError, match="config section 'demo'") as exc_info:
        start([Sections(), Other()], entry_points=False)
    assert "'Sections'" in str(exc_info.value) and "'other'" in str(exc_info.value)


def test_events_reach_observers_and_observer_errors_do_not_break_the_source() -> None:
    seen: list[tuple[str, int]] = []

    class Observer:
        @hookimpl
        def foundation_on_retry(self, name: str, attempt: int) -> None:
            seen.append((name, attempt))

    class Broken:
        @hookimpl
        def foundation_on_retry(self, name: str) -> None:
            raise ValueError("observer bug")

    with start([Observer(), Broken()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}):
        with pytest.warns(UserWarning, match="observer bug"):
            foundation_core.emit("retry", name="r", attempt=2, delay=0.1, error=None, result=None)
    assert seen == [("r", 2)]
    foundation_core.emit("retry", name="r", attempt=3, delay=0.1, error=None, result=None)  # no hub: no-op
    assert seen == [("r", 2)]


def test_an_observers_error_is_warned_about_from_the_line_that_raised_it() -> None:
    """The warning was shown from pluggy's _callers.py (where stacklevel reached), not from the
    plugin: its author read a path inside pluggy as where the failure was."""

    class Broken:
        @hookimpl
        def foundation_on_retry(self, name: str) -> None:
            raise ValueError(f"observer bug for {name}")

    lines, first = inspect.getsourcelines(Broken.foundation_on_retry)
    raising = first + next(i for i, line in enumerate(lines) if "raise ValueError" in line)
    with start([Broken()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}):
        with pytest.warns(FoundationPluginWarning, match="observer bug for r") as caught:
            foundation_core.emit("retry", name="r", attempt=2, delay=0.1, error=None, result=None)
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, raising)]
    assert str(caught[0].message) == (
        "plugin 'Broken' raised in foundation_on_retry: ValueError('observer bug for r')"
    )


def test_registering_an_app_plugin_after_registration_is_refused() -> None:
    hub = start([], entry_points=False)
    with pytest.raises(FoundationError, match="before the registration hooks run"):
        hub.register(Sections())
    hub.shutdown()


def test_config_error_raised_by_an_installed_plugin_is_not_isolated() -> None:
    """A bad setting is the user's error: it must stop start-up, not disable the plugin."""

    class Strict:
        @hookimpl
        def foundation_configure(self, config: Config) -> None:
            raise ConfigError("logging.output: cannot open /nonexistent/x.log")

    with pytest.raises(ConfigError, match="cannot open /nonexistent"):
        start(installed=[Strict()], entry_points=False)


def test_configure_again_with_the_same_sources_calls_no_hook_again() -> None:
    log: list[str] = []
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(Recorder("a", log))
    first = hub.configure()
    assert hub.configure() is first and log == ["a.configure"]
    hub.configure(strict=True)  # other sources: built again, handed out again
    assert log == ["a.configure", "a.configure"]


def test_a_plugin_that_refuses_the_config_gets_it_again_next_time() -> None:
    class Refuses:
        calls = 0

        @hookimpl
        def foundation_configure(self, config: Config) -> None:
            Refuses.calls += 1
            raise ConfigError("no")

    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(Refuses())
    for _ in range(2):
        with pytest.raises(ConfigError):
            hub.configure()
    assert Refuses.calls == 2


def test_a_configuration_one_plugin_refuses_is_taken_back_from_those_that_took_it() -> None:
    """Nothing half-applied: the hub kept the refused configuration and the plugins that took it
    kept it, while the refusing plugin kept the previous one."""
    given: list[tuple[str, Config]] = []

    class Takes:
        @hookimpl
        def foundation_configure(self, config: Config) -> None:
            given.append(("takes", config))

    class RefusesTheSecond:
        calls = 0

        @hookimpl(tryfirst=False, trylast=True)  # called after Takes took it
        def foundation_configure(self, config: Config) -> None:
            RefusesTheSecond.calls += 1
            if RefusesTheSecond.calls == 2:
                raise ConfigError("logging.output: cannot open 'adir' for appending")

    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(RefusesTheSecond())
    hub.register(Takes())
    first = hub.configure()
    with pytest.raises(ConfigError, match="cannot open 'adir'"):
        hub.configure(strict=True)
    assert hub.config is first
    assert [config for _, config in given] == [first, given[1][1], first]
    assert given[1][1] is not first
    assert hub.configure() is first and len(given) == 3  # still the configuration of those sources


def test_a_first_configuration_one_plugin_refuses_leaves_the_hub_without_one() -> None:
    class Refuses:
        @hookimpl
        def foundation_configure(self, config: Config) -> None:
            raise ConfigError("no")

    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(Refuses())
    with pytest.raises(ConfigError):
        hub.configure()
    assert hub.config is None


class LazySections:
    foundation_name = "lazy"

    def __init__(self, ref: str) -> None:
        self.ref = ref

    @hookimpl
    def foundation_config_sections(self, add: foundation_core.SectionAdder) -> None:
        add("demo", self.ref)


def test_a_section_added_by_reference_is_imported_when_configuring() -> None:
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(LazySections(f"{__name__}:Section"))
    hub.run_registration()
    assert hub.sections.sections["demo"] == f"{__name__}:Section"  # not imported at registration
    assert hub.configure()["demo"] == Section()
    assert hub.sections.sections["demo"] is Section  # resolved once


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("no_such_module_here:Section", r"cannot be imported: ModuleNotFoundError"),
        (f"{__name__}:Recorder", r"is not an attrs class"),
    ],
)
def test_a_section_reference_that_does_not_resolve_names_the_plugin(ref: str, problem: str) -> None:
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": ""})
    hub.register(LazySections(ref))
    with pytest.raises(PluginError, match=f"plugin 'lazy' failed: config section 'demo': '{ref}' {problem}"):
        hub.configure()
    assert hub.config is None


def test_a_section_reference_without_a_colon_is_refused_at_registration() -> None:
    adder = foundation_core.SectionAdder()
    with pytest.raises(ValueError, match=r"'foundation_retry\.RetryPolicy' is not 'module:Class'"):
        adder("retry", "foundation_retry.RetryPolicy")


class Needy:
    foundation_name = "needy_obj"
    FOUNDATION_REQUIRES = ("nonexistent",)

    @hookimpl
    def foundation_register_patterns(self, register: foundation_core.Registrar) -> None:
        register("needy_pattern", lambda policy: lambda fn: fn)


def test_an_installed_object_whose_requirement_is_missing_is_reported_not_loaded() -> None:
    """``start(installed=[...])`` treats the objects as installed plugins: FOUNDATION_REQUIRES too."""
    with (
        pytest.warns(foundation_core.FoundationPluginWarning, match="it needs plugin 'nonexistent'"),
        start(installed=[Needy()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as hub,
    ):
        assert hub.plugins["needy_obj"].status == "failed"
        assert "needy_pattern" not in hub.patterns


def test_a_missing_requirement_says_to_install_it_not_to_enable_it() -> None:
    """'which is not installed; enable 'nonexistent'' told the user to enable what is not there."""
    with (
        pytest.warns(foundation_core.FoundationPluginWarning),
        start(installed=[Needy()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as hub,
    ):
        error = hub.plugins["needy_obj"].error or ""
    assert "which is not installed; install 'nonexistent' or disable 'needy_obj'" in error
    assert "enable 'nonexistent'" not in error


def test_a_missing_requirement_close_to_an_installed_plugins_name_suggests_it() -> None:
    """``FOUNDATION_REQUIRES = ["retyr"]`` said only "install 'retyr'", a name nothing has."""

    class Typo:
        foundation_name = "typo"
        FOUNDATION_REQUIRES = ("Circuit-Braker",)

    class Breaker:
        foundation_name = "circuit_breaker"

    with (
        pytest.warns(foundation_core.FoundationPluginWarning),
        start(installed=[Breaker(), Typo()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as hub,
    ):
        error = hub.plugins["typo"].error or ""
    assert (
        "it needs plugin 'Circuit-Braker', which is not installed (did you mean 'circuit_breaker'?)" in error
    )


class _Installed:
    @hookimpl
    def foundation_register_patterns(self, register: object) -> None:
        register("greet", lambda policy: "plugin")  # type: ignore[operator]


def test_a_plugin_with_one_invalid_hookimpl_keeps_none_of_its_hooks() -> None:
    class Partial:  # dir() order: the valid hook is added before pluggy meets the invalid one
        @hookimpl
        def foundation_config_sections(self, add: object) -> None:
            add("partial", Section)  # type: ignore[operator]

        @hookimpl
        def foundation_register_patterns(self, registr: object) -> None:
            raise AssertionError("never called")

    with pytest.warns(UserWarning, match="'registr'"):
        hub = start(installed=[Partial()], entry_points=False, env={"FOUNDATION_PLUGINS": ""})
    assert hub.plugins["Partial"].status == "failed"
    assert "\n" not in (hub.plugins["Partial"].error or "")
    assert "partial" not in (hub.config or {}) and not hub.pm.get_plugin("Partial")


def test_an_installed_wrapper_registers_as_itself_and_its_error_isolates_only_it() -> None:
    class Tracer:
        @hookimpl(wrapper=True)
        def foundation_register_patterns(self, register: object) -> object:
            result = yield
            register("traced", lambda policy: "traced")  # type: ignore[operator]
            return result

    class Buggy:
        @hookimpl(wrapper=True)
        def foundation_register_patterns(self, register: object) -> object:
            yield
            raise RuntimeError("wrapper bug")

    with pytest.warns(UserWarning, match="wrapper bug"):
        hub = start(installed=[_Installed(), Tracer(), Buggy()], entry_points=False)
    assert hub.patterns.entry("traced").plugin == "Tracer" and not hub.patterns.entry("traced").app
    assert hub.plugins["Tracer"].registered["patterns"] == ["traced"]
    assert hub.plugins["Buggy"].status == "failed" and hub.patterns.names() == ["greet", "traced"]


def test_a_plugin_failing_after_registration_no_longer_hides_what_it_shadowed() -> None:
    """Its registrations are rolled back, so the one it hid wins again: `foundation plugins`
    listed that one as still shadowed by it, and the failed plugin as still registering it."""

    class Greedy:
        @hookimpl
        def foundation_register_patterns(self, register: object) -> None:
            register("greet", lambda policy: "greedy", replace=True)  # type: ignore[operator]

        @hookimpl
        def foundation_configure(self, config: object, hub: object) -> None:
            raise RuntimeError("configure bug")

    with pytest.warns(UserWarning, match="configure bug"):
        hub = start(installed=[_Installed(), Greedy()], entry_points=False)
    with hub:
        assert hub.plugins["Greedy"].status == "failed"
        assert hub.patterns.get("greet")(None) == "plugin"
        installed = hub.plugins["_Installed"].as_dict()
        assert installed["registered"]["patterns"] == ["greet"]
        assert installed["shadowed"]["patterns"] == {}
        assert hub.plugins["Greedy"].as_dict()["registered"]["patterns"] == []


def test_an_application_override_wins_whatever_the_call_order() -> None:
    class AppLast:
        @hookimpl(trylast=True)
        def foundation_register_patterns(self, register: object) -> None:
            register("greet", lambda policy: "app")  # type: ignore[operator]

    class Greedy:
        @hookimpl(trylast=True)
        def foundation_register_patterns(self, register: object) -> None:
            register("greet", lambda policy: "greedy", replace=True)  # type: ignore[operator]

    with start(plugins=[AppLast()], installed=[_Installed(), Greedy()], entry_points=False) as hub:
        assert hub.patterns.get("greet")(None) == "app"
        assert sorted(hub.patterns.entry("greet").shadowed) == ["Greedy", "_Installed"]


def test_an_application_section_overrides_a_plugins_without_failing_it() -> None:
    class Plugin(Sections):
        foundation_name = "plug"

        @hookimpl
        def foundation_register_patterns(self, register: object) -> None:
            register("plugged", lambda policy: None)  # type: ignore[operator]

    class AppSection:
        @hookimpl(trylast=True)
        def foundation_config_sections(self, add: object) -> None:
            add("demo", Section)  # type: ignore[operator]

    with start(plugins=[AppSection()], installed=[Plugin()], entry_points=False) as hub:
        assert hub.plugins["plug"].status == "loaded" and "plugged" in hub.patterns
        assert hub.sections.owners["demo"] == "AppSection"


def test_requirements_are_transitive_and_rechecked_after_a_hook_failure() -> None:
    class B:
        FOUNDATION_REQUIRES = ("missing",)

    class A:
        FOUNDATION_REQUIRES = ("B",)

    class D:
        @hookimpl
        def foundation_register_patterns(self, register: object) -> None:
            raise RuntimeError("D broken")

    class C:
        FOUNDATION_REQUIRES = ("D",)

        @hookimpl(trylast=True)
        def foundation_register_patterns(self, register: object) -> None:
            register("c", lambda policy: None)  # type: ignore[operator]

    class E:
        FOUNDATION_REQUIRES = "config"

    with warnings.catch_warnings():  # five failures, each warned: asserted below instead
        warnings.simplefilter("ignore")
        hub = start(installed=[A(), B(), C(), D(), E()], entry_points=False)
    status = {n: (i.status, i.error or "") for n, i in hub.plugins.items()}
    assert status["A"][0] == status["C"][0] == "failed" and "c" not in hub.patterns
    assert "needs plugin 'B', which failed" in status["A"][1]
    assert "needs plugin 'D', which failed" in status["C"][1]
    assert "FOUNDATION_REQUIRES must be a list of plugin names, not 'config'" in status["E"][1]


def test_startup_twice_starts_once_and_a_shutdown_wrapper_runs_around_shutdown() -> None:
    log: list[str] = []

    class Around:
        @hookimpl(wrapper=True)
        def foundation_shutdown(self, hub: foundation_core.Hub) -> object:
            log.append("around.before")
            result = yield
            log.append("around.after")
            return result

    hub = start([Recorder("r", log), Around()], entry_points=False)
    hub.startup()
    hub.shutdown()
    assert log == ["r.configure", "r.startup", "around.before", "r.shutdown", "around.after"]


def test_a_config_loader_returning_something_else_is_named() -> None:
    class BadLoader:
        @hookimpl
        def foundation_load_config(self, sections: object, files: object, overrides: object) -> object:
            return {"demo": "not a section"}

    wrong = r"plugin 'BadLoader'.*returned dict, not a foundation_core\.Config"
    with pytest.raises(PluginError, match=wrong):
        start([BadLoader()], entry_points=False)


def test_the_hub_started_before_is_active_again_when_a_later_one_shuts_down() -> None:
    from foundation_core._events import active_hub

    with start([], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as first:
        with start([], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as second:
            assert active_hub() is second
        assert active_hub() is first
    assert active_hub() not in (first, second)


def test_config_value_names_the_path_it_could_not_follow() -> None:
    with start([Sections()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as hub:
        assert hub.config is not None
        assert hub.config.value("demo.size") == 4
        with pytest.raises(KeyError, match=r"no config value 'demo\.nope': demo has no 'nope'"):
            hub.config.value("demo.nope")
        with pytest.raises(KeyError, match=r"no config value 'nada\.x': no section 'nada'"):
            hub.config.value("nada.x")


def test_hubs_started_in_two_threads_at_once_are_both_kept_as_started() -> None:
    """Thread A's start rebuilds the list of started hubs; thread B starting its hub meanwhile
    (here: while A reads the list) must not be lost when A writes the list back."""
    import threading

    from foundation_core import _events
    from foundation_core._hub import Hub

    first, second = Hub(env={"FOUNDATION_PLUGINS": ""}), Hub(env={"FOUNDATION_PLUGINS": ""})
    other = threading.Thread(target=_events.activate, args=(second,))

    class InterruptingRef:
        """In the list of started hubs, a reference to a hub that is gone; reading it while A
        rebuilds the list lets thread B start its hub (B waits for A if A holds a lock)."""

        def __call__(self) -> None:
            if not other.is_alive() and other.ident is None:
                other.start()
                other.join(0.2)  # without a lock, B finishes here; with one, it waits for A
            return None

    _events._started.append(InterruptingRef())  # type: ignore[arg-type]
    try:
        _events.activate(first)
        other.join()
        started = [r() for r in _events._started]
        assert first in started and second in started
        assert _events.active_hub() in (first, second)
    finally:
        _events.deactivate(first)
        _events.deactivate(second)
    assert _events.active_hub() is None


def test_hubs_started_and_shut_down_in_a_loop_leave_nothing_behind() -> None:
    """A process that starts and shuts down hubs again and again (a test suite, a worker per
    job): threads, descriptors, exit and signal handlers, the hubs remembered as started and the
    hubs themselves (freed) come back to where they were."""
    import atexit
    import gc
    import os
    import signal
    import threading
    import weakref

    from foundation_core import _events

    def state() -> tuple[object, ...]:
        signals = tuple(signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
        threads = sorted(t.name for t in threading.enumerate())
        return threads, len(os.listdir("/proc/self/fd")), atexit._ncallbacks(), signals, len(_events._started)

    log: list[str] = []
    # garbage of earlier tests (a Popen left by a timed-out test holds two pipes) freed now, not
    # by the collection below, where its descriptors closing would read as this loop's doing
    gc.collect()
    before = state()
    hubs = []
    for _ in range(50):
        hub = start([Recorder("a", log), Sections()], entry_points=False, env={"FOUNDATION_PLUGINS": ""})
        hub.shutdown()
        hub.startup()  # a hub started again after its shutdown registers nothing twice
        assert len(hub.pm.get_plugins()) == 2
        hub.shutdown()
        hubs.append(weakref.ref(hub))
        del hub
    gc.collect()
    assert state() == before
    assert [h for h in hubs if h() is not None] == []
    assert log.count("a.startup") == 100 and log.count("a.shutdown") == 100


class _Failing:
    """An installed plugin (guarded, isolated) whose start-up raises."""

    foundation_name = "failing"

    @hookimpl
    def foundation_startup(self, hub: foundation_core.Hub) -> None:
        raise RuntimeError("failing cannot start")


class _Wrapping:
    """An installed plugin with a wrapper hookimpl (its own kind of guard)."""

    foundation_name = "wrapping"

    @hookimpl(wrapper=True)
    def foundation_register_patterns(self, register: object) -> object:
        return (yield)


def _made(how: str) -> foundation_core.Hub:
    if how == "never started":
        return foundation_core.Hub(env={})
    installed: list[object] = [_Wrapping()] + ([_Failing()] if how == "a plugin failed" else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", foundation_core.FoundationPluginWarning)
        hub = start([Recorder("a", [])], installed=installed, entry_points=False, env={})
    hub.shutdown()
    return hub


@pytest.mark.parametrize("how", ["never started", "started and shut down", "a plugin failed"])
def test_a_hub_is_freed_by_reference_counting_alone(how: str) -> None:
    """The registries held the hub (a bound method as their hint) and every guard around a
    plugin's hookimpl held it too, while the hub holds both: each hub was a reference cycle,
    kept (with its plugins, registries and configuration) until the garbage collector ran.
    pluggy's PluginManager is a cycle of its own (its hook callers hold its bound method), which
    the hub no longer belongs to."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        hub = _made(how)
        ref = weakref.ref(hub)
        del hub
        assert ref() is None
    finally:
        gc.enable()


def test_a_guard_outliving_its_hub_raises_the_plugins_error_rather_than_isolating_it() -> None:
    """A hook called through the plugin manager after its hub was freed: no hub to isolate the
    plugin in, so the plugin's own error is raised (not an AttributeError of the guard)."""
    hub = foundation_core.Hub(env={})
    hub.register(_Failing(), override=False)
    pm = hub.pm
    del hub
    with pytest.raises(RuntimeError, match="failing cannot start"):
        pm.hook.foundation_startup(hub=None)


def test_a_name_not_registered_is_told_which_plugins_are_not_active_and_why() -> None:
    from foundation_core._discovery import PluginInfo
    from foundation_core.errors import NotRegisteredError

    hub = foundation_core.Hub(env={"FOUNDATION_DISABLE_PLUGINS": "off"})
    hub.plugins["off"] = PluginInfo(name="off", source="entry-point", status="disabled")
    hub.register(_Failing(), override=False)
    hub.run_registration()
    with pytest.warns(foundation_core.FoundationPluginWarning):
        hub.startup()
    with pytest.raises(NotRegisteredError) as info:
        hub.patterns.get("missing")
    hint = str(info.value).split("(registered: none)")[1]
    assert hint.startswith(
        "; plugins not active: off (disabled by FOUNDATION_DISABLE_PLUGINS), failing (failed: "
    )
    assert "failing cannot start" in hint
    hub.shutdown()


def test_an_interrupt_in_a_plugins_shutdown_still_shuts_down_the_rest_then_is_raised() -> None:
    """A ``foundation_shutdown`` raising KeyboardInterrupt (Ctrl-C while it released something)
    skipped the plugins after it and the shutdown wrapper's end, and left the hub the active one
    (``emit`` and ``resilient()`` went on using it). Now every plugin gets its turn, the hub is
    no longer active, and then the interrupt is raised (before any ordinary error)."""
    from foundation_core import _events
    from foundation_core._events import active_hub

    log: list[str] = []

    class Interrupted(Recorder):
        @hookimpl
        def foundation_shutdown(self, hub: foundation_core.Hub) -> None:
            log.append(f"{self.foundation_name}.shutdown")
            raise KeyboardInterrupt

    class Failing(Recorder):
        @hookimpl
        def foundation_shutdown(self, hub: foundation_core.Hub) -> None:
            log.append(f"{self.foundation_name}.shutdown")
            raise RuntimeError("failing cannot stop")

    class Around:
        @hookimpl(wrapper=True)
        def foundation_shutdown(self, hub: foundation_core.Hub) -> object:
            result = yield
            log.append("around.after")
            return result

    empty = {"FOUNDATION_PLUGINS": ""}
    with start([], entry_points=False, env=empty) as outer:
        # pluggy calls later registrations first: "last" starts first, so shuts down last
        plugins = [Recorder("first", log), Interrupted("ctrl_c", log), Failing("failing", log)]
        inner = start([*plugins, Recorder("last", log), Around()], entry_points=False, env=empty)
        assert active_hub() is inner
        try:
            with pytest.raises(KeyboardInterrupt) as info:
                inner.shutdown()
        finally:  # before the fix, the interrupted hub stayed active for good
            _events.deactivate(inner)
        assert [e for e in log if e.endswith(".shutdown") or e.startswith("around")] == [
            "first.shutdown",
            "ctrl_c.shutdown",
            "failing.shutdown",
            "last.shutdown",
            "around.after",
        ]
        assert info.value.__notes__ == ["shutting down also raised RuntimeError('failing cannot stop')"]
        assert active_hub() is outer
        inner.shutdown()  # shut down already: nothing runs again
        assert log.count("first.shutdown") == 1


def test_an_interrupted_startup_whose_cleanup_fails_still_raises_the_interrupt() -> None:
    """Ctrl-C during start-up shuts down the plugins started before; an application object's
    ``foundation_shutdown`` failing then replaced the KeyboardInterrupt by its own error (the
    program went on as after an ordinary error). The interrupt is raised, the error noted."""
    from foundation_core._events import active_hub

    log: list[str] = []

    class Interrupted(Recorder):
        @hookimpl
        def foundation_startup(self, hub: foundation_core.Hub) -> None:
            raise KeyboardInterrupt

    class Failing(Recorder):
        @hookimpl
        def foundation_shutdown(self, hub: foundation_core.Hub) -> None:
            log.append(f"{self.foundation_name}.shutdown")
            raise RuntimeError("failing cannot stop")

    empty = {"FOUNDATION_PLUGINS": ""}
    # pluggy calls later registrations first: "failing" starts, then "ctrl_c" is interrupted
    with pytest.raises(KeyboardInterrupt) as info:
        start([Interrupted("ctrl_c", log), Failing("failing", log)], entry_points=False, env=empty)
    assert "failing.shutdown" in log
    assert info.value.__notes__ == [
        "shutting down the plugins started before it raised too: RuntimeError('failing cannot stop')"
    ]
    assert active_hub() is None


def test_running_hubs_are_newest_first_and_foundation_configure_is_given_its_hub() -> None:
    """What a plugin holding process-wide state per hub needs (the logging plugin does): which
    hub a configuration belongs to, and in ``foundation_shutdown`` which hubs still run."""
    from foundation_core import running_hubs

    seen: list[tuple[str, object]] = []

    class PerHub:
        @hookimpl
        def foundation_configure(self, config: Config, hub: foundation_core.Hub) -> None:
            seen.append(("configure", hub))

        @hookimpl
        def foundation_shutdown(self, hub: foundation_core.Hub) -> None:
            seen.append(("shutdown", running_hubs()))

    empty = {"FOUNDATION_PLUGINS": ""}
    assert running_hubs() == ()
    with start([PerHub()], entry_points=False, env=empty) as first:
        with start([PerHub()], entry_points=False, env=empty) as second:
            assert running_hubs() == (second, first)
        assert running_hubs() == (first,)
    assert running_hubs() == ()
    assert seen == [
        ("configure", first),
        ("configure", second),
        ("shutdown", (second, first)),  # a hub shutting down is running until it is done
        ("shutdown", (first,)),
    ]


def test_an_installed_plugins_hook_calling_sys_exit_isolates_it_rather_than_ending_the_process() -> None:
    """A hook of an installed plugin calling sys.exit() ended start() (and the process) with its
    status, where raising any Exception isolates the plugin and the others carry on, and where
    sys.exit() at import fails the plugin alone."""

    class Quits:
        @hookimpl
        def foundation_register_patterns(self, register: Any) -> None:
            sys.exit(3)

    class Fine:
        @hookimpl
        def foundation_register_patterns(self, register: Any) -> None:
            register("fine", lambda policy: lambda fn: fn)

    with pytest.warns(
        FoundationPluginWarning, match=r"plugin 'Quits' failed in hook foundation_register_patterns"
    ):
        hub = start(installed=[Quits(), Fine()], entry_points=False)
    with hub:
        assert hub.plugins["Quits"].status == "failed"
        assert "SystemExit(3)" in (hub.plugins["Quits"].error or "")
        assert "fine" in hub.patterns


def test_an_application_objects_hook_calling_sys_exit_is_the_applications_to_raise() -> None:
    """An application's own object is not isolated (its errors are the application's): its
    sys.exit() passes, as its exceptions do."""

    class Quits:
        @hookimpl
        def foundation_register_patterns(self, register: Any) -> None:
            sys.exit(3)

    with pytest.raises(SystemExit):
        start(plugins=[Quits()], entry_points=False)


def test_an_application_observer_calling_sys_exit_exits_where_a_plugins_is_warned_about() -> None:
    """An application's observer calling sys.exit() had its exit swallowed into a warning once
    a plugin's SystemExit was isolated (the observer branch came before the application's), where
    an application object's sys.exit() passes; an installed plugin's observer is warned about."""

    class AppQuits:
        @hookimpl
        def foundation_on_retry(self, name: str) -> None:
            sys.exit(4)

    class PluginQuits:
        @hookimpl
        def foundation_on_retry(self, name: str) -> None:
            sys.exit(5)

    with start(installed=[PluginQuits()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}):
        with pytest.warns(FoundationPluginWarning, match=r"raised in foundation_on_retry: SystemExit\(5\)"):
            foundation_core.emit("retry", name="r", attempt=2, delay=0.1, error=None, result=None)
    with start([AppQuits()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}):
        with pytest.raises(SystemExit) as exc_info:
            foundation_core.emit("retry", name="r", attempt=2, delay=0.1, error=None, result=None)
    assert exc_info.value.code == 4
