"""Hub lifecycle: configure, start-up order, shutdown in reverse, config contract, events."""

from __future__ import annotations

import attrs
import pytest

import foundation_core
from foundation_core import Config, hookimpl, start
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
