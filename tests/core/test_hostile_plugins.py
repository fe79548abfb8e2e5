"""What a plugin's author can get wrong in its distribution is reported by name, never silently
loaded as a plugin that does nothing, and the other plugins still load.

The distributions here are written as pip writes them (a ``.dist-info`` with ``METADATA`` and
``entry_points.txt`` beside the package) into a directory put on ``sys.path``, so that entry points
setuptools would refuse to build (a malformed value) can be tested too.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pluggy import PluginValidationError

from foundation_core import FoundationPluginWarning, Hub, hookimpl, running_hubs, start
from foundation_core.errors import PluginError, PluginLoadError

from .conftest import on_sys_path

HOOKED = """
    from foundation_core import hookimpl

    @hookimpl
    def foundation_register_patterns(register):
        register({name!r}, lambda policy: lambda fn: fn)
"""


def write_dist(site: Path, dist: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """Install distribution ``dist`` into ``site`` as pip would: its files and a dist-info."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    eps = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[foundation]\n{eps}")
    for rel, text in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A directory on ``sys.path`` for this test only, for distributions of ``hostile_*`` modules."""
    path = tmp_path / "site"
    path.mkdir()
    with on_sys_path(path, "hostile_"):
        yield path


def _load(only: str, **env: str) -> tuple[Hub, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FoundationPluginWarning)
        hub = Hub(env={"FOUNDATION_PLUGINS": only, **env})
        hub.load_entry_points()
        hub.run_registration()
    return hub, [str(w.message) for w in caught]


@pytest.mark.parametrize("value", ["hostile_pkg badly!!", "hostile_pkg:a:b", ""])
def test_a_malformed_entry_point_value_is_named_as_such(site: Path, value: str) -> None:
    write_dist(site, "hostile-bad", {"bad": value}, {})
    hub, _ = _load("bad")
    error = hub.plugins["bad"].error or ""
    assert f"entry point value {value!r} is not 'module' or 'module:attribute'" in error
    assert "attribute that does not exist" not in error and "NoneType" not in error


def test_two_distributions_with_one_plugin_name_are_both_named_and_the_first_kept(site: Path) -> None:
    write_dist(site, "hostile-one", {"twin": "hostile_one"}, {"hostile_one.py": HOOKED.format(name="one")})
    write_dist(site, "hostile-two", {"Twin": "hostile_two"}, {"hostile_two.py": HOOKED.format(name="two")})
    hub, warned = _load("twin")
    [loaded] = [i for i in hub.plugins.values() if i.status == "loaded"]
    assert len([n for n in hub.plugins if n.lower() == "twin"]) == 1
    kept = loaded.distribution
    [other] = {"hostile-one", "hostile-two"} - {kept}
    [message] = [w for w in warned if "has the name of plugin" in w]
    assert f"(distribution {other!r}) has the name of plugin" in message
    assert f"of distribution {kept!r}" in message and "uninstall one of the two" in message
    assert sorted(hub.patterns) == [kept.rpartition("-")[2]]  # only the kept one's registrations


def test_two_distributions_with_one_plugin_name_are_fatal_in_strict_mode(site: Path) -> None:
    write_dist(site, "hostile-one", {"twin": "hostile_one"}, {"hostile_one.py": HOOKED.format(name="one")})
    write_dist(site, "hostile-two", {"twin": "hostile_two"}, {"hostile_two.py": HOOKED.format(name="two")})
    hub = Hub(env={"FOUNDATION_PLUGINS": "twin", "FOUNDATION_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginLoadError, match="uninstall one of the two"):
        hub.load_entry_points()


def test_a_requirement_is_met_by_a_plugin_named_with_other_case_or_dashes(site: Path) -> None:
    needy = "FOUNDATION_REQUIRES = ['Hostile-Base']\n" + textwrap.dedent(HOOKED.format(name="needy"))
    write_dist(site, "hostile-base", {"hostile_base": "hostile_base"}, {"hostile_base.py": ""})
    write_dist(site, "hostile-needy", {"needy": "hostile_needy"}, {"hostile_needy.py": needy})
    hub, _ = _load("hostile_base,needy")
    assert hub.plugins["needy"].status == "loaded", hub.plugins["needy"].error
    assert "needy" in hub.patterns
    hub, _ = _load("needy")  # and reported as not selected, not "not installed", when it is not
    assert "'Hostile-Base', which is not listed in FOUNDATION_PLUGINS" in (hub.plugins["needy"].error or "")


def test_an_entry_point_naming_a_hookimpl_or_a_value_fails_naming_what_to_name(site: Path) -> None:
    source = textwrap.dedent(HOOKED.format(name="obj")) + "\nVALUE = 42\n\ndef helper():\n    pass\n"
    files = {"hostile_obj.py": source}
    eps = {
        "hook": "hostile_obj:foundation_register_patterns",
        "value": "hostile_obj:VALUE",
        "func": "hostile_obj:helper",
    }
    write_dist(site, "hostile-obj", eps, files)
    hub, _ = _load("hook,value,func")
    assert {i.status for n, i in hub.plugins.items() if n in eps} == {"failed"}
    assert "names the hookimpl 'foundation_register_patterns' itself, not a plugin" in (
        hub.plugins["hook"].error or ""
    )
    assert "('hostile_obj')" in (hub.plugins["hook"].error or "")
    assert "names 42, not a module or class of hookimpls" in (hub.plugins["value"].error or "")
    assert "names a function, not a module or class of hookimpls" in (hub.plugins["func"].error or "")
    assert len(hub.patterns) == 0


def test_a_hook_function_not_marked_hookimpl_fails_the_plugin_by_name(site: Path) -> None:
    source = """
        from foundation_core import hookimpl

        def foundation_register_patterns(register):  # the author forgot @hookimpl
            register("forgot", lambda policy: lambda fn: fn)

        @hookimpl
        def foundation_register_transports(register):
            register("forgot-t", "hostile_forgot:T")
    """
    write_dist(site, "hostile-forgot", {"forgot": "hostile_forgot"}, {"hostile_forgot.py": source})
    hub, warned = _load("forgot")
    info = hub.plugins["forgot"]
    assert info.status == "failed"
    assert "'foundation_register_patterns' is not marked @hookimpl" in (info.error or "")
    assert "forgot-t" not in hub.transports  # none of its hookimpls registered
    assert any("[distribution hostile-forgot 1.0]" in w for w in warned)  # the warning names it


def test_an_application_object_with_an_unmarked_hook_function_is_refused() -> None:
    class App:
        def foundation_startup(self, hub: Hub) -> None:
            raise AssertionError("never called")

    hub = Hub(env={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raised, not also warned about as isolated
        with pytest.raises(PluginError, match="is not marked @hookimpl"):
            hub.register(App())
    assert hub.pm.get_plugin("App") is None


def test_an_application_object_with_a_wrong_hook_argument_raises_once_saying_so() -> None:
    """Its error propagates from start(); it was also warned about as a plugin "the other
    plugins carry on" without, and the raised message said "plugin 'App' failed: " twice."""

    class App:
        @hookimpl
        def foundation_on_retry(self, pattern: str, attempt: int) -> None:  # the spec says name
            raise AssertionError("never called")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PluginError) as info:
            start([App()], entry_points=False)
    message = str(info.value)
    assert message.startswith("plugin 'App' failed: ") and message.count("failed:") == 1
    assert "{'pattern'} are declared in the hookimpl but can not be found in the hookspec" in message
    assert isinstance(info.value.__cause__, PluginValidationError)  # pluggy's, chained
    assert running_hubs() == ()


def test_a_hookimpl_argument_its_hook_lacks_is_named_with_the_hooks_arguments() -> None:
    """pluggy's message named only the argument it could not find, not those the hook has: an
    author who wrote ``attempts`` for ``attempt`` was not shown the name to use."""

    class App:
        @hookimpl
        def foundation_on_retry(self, name: str, attempts: int) -> None:
            raise AssertionError("never called")

    plugin = types.ModuleType("my_plugin")  # a module's hookimpl: no self to skip

    @hookimpl
    def foundation_on_circuit_change(name: str, when: float) -> None:
        raise AssertionError("never called")

    plugin.foundation_on_circuit_change = foundation_on_circuit_change  # type: ignore[attr-defined]

    with pytest.raises(PluginError) as info:
        start([App()], entry_points=False)
    message = str(info.value)
    assert "{'attempts'} are declared in the hookimpl" in message  # pluggy's, kept
    assert (
        "hook 'foundation_on_retry' has no argument 'attempts' (did you mean 'attempt'?): its "
        "arguments are (name, attempt, delay, error, result)"
    ) in message
    assert "'self'" not in message and "'name'" not in message
    with pytest.warns(FoundationPluginWarning), start(installed=[plugin], entry_points=False) as hub:
        assert hub.plugins["my_plugin"].status == "failed"
        error = hub.plugins["my_plugin"].error or ""
    assert "hook 'foundation_on_circuit_change' has no argument 'when': its arguments are (name, " in error
    assert "no argument 'name'" not in error


def test_an_application_object_refused_by_register_leaves_nothing_and_can_be_mended() -> None:
    """``hub.register(app)`` raising for a bad hookimpl kept ``app`` in ``hub.plugins`` as
    failed, so registering the mended object under the same name said "already registered"."""

    class Broken:
        @hookimpl
        def foundation_on_retry(self, pattern: str) -> None:  # the spec says name
            raise AssertionError("never called")

    seen: list[str] = []

    class Mended:
        @hookimpl
        def foundation_on_retry(self, name: str) -> None:
            seen.append(name)

    hub = Hub(env={})
    with pytest.raises(PluginLoadError, match="'pattern'"):
        hub.register(Broken(), name="app")
    assert "app" not in hub.plugins and hub.pm.get_plugin("app") is None
    assert hub.register(Mended(), name="app") == "app"
    assert hub.plugins["app"].status == "app"
    hub.pm.hook.foundation_on_retry(name="p", attempt=1, delay=0.0, error=None, result=None)
    assert seen == ["p"]


def test_two_entry_points_naming_one_module_fail_the_second_in_one_line(site: Path) -> None:
    files = {"hostile_same.py": HOOKED.format(name="same")}
    write_dist(site, "hostile-same", {"same-a": "hostile_same", "same-b": "hostile_same"}, files)
    hub, _ = _load("same-a,same-b")
    assert hub.plugins["same-a"].status == "loaded"
    error = hub.plugins["same-b"].error or ""
    assert "its object is already plugin 'same-a'" in error
    assert "\n" not in error and "Plugin already registered" not in error  # not pluggy's dump


def _cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FOUNDATION_", "PYTHONIO"))}
    full["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "foundation_core", *args],
        env={**full, **env},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_a_name_stdout_cannot_encode_is_printed_escaped(site: Path) -> None:
    write_dist(site, "hostile-uni", {"caf\u00e9": "hostile_uni"}, {"hostile_uni.py": ""})
    result = _cli(site, "plugins", PYTHONIOENCODING="ascii", FOUNDATION_PLUGINS="caf\u00e9")
    assert result.returncode == 0, result.stderr
    assert "caf\\xe9  [loaded]  hostile-uni 1.0" in result.stdout
    assert "Traceback" not in result.stderr


def test_an_interrupt_while_a_plugin_imports_exits_130_without_a_traceback(site: Path) -> None:
    files = {"hostile_slow.py": "raise KeyboardInterrupt  # as Ctrl-C during a slow import\n"}
    write_dist(site, "hostile-slow", {"slow": "hostile_slow"}, files)
    result = _cli(site, "plugins", FOUNDATION_PLUGINS="slow")
    assert result.returncode == 130
    assert result.stderr == "" and result.stdout == ""


def test_an_entry_point_naming_the_module_of_a_plugin_class_fails_naming_the_class(site: Path) -> None:
    """docs/transports.md had ``queue = "my_transport.plugin"`` for a plugin written as a class:
    the module loaded with no hooks, was listed ``[loaded]``, and ``foundation serve --transport
    queue`` said only that no transport named queue was registered."""
    source = """
        from foundation_core import hookimpl


        class QueuePlugin:
            @hookimpl
            def foundation_register_patterns(self, register):
                register("queued", lambda policy: lambda fn: fn)
    """
    write_dist(
        site,
        "hostile-cls",
        {"cls": "hostile_cls", "named": "hostile_cls:QueuePlugin"},
        {"hostile_cls.py": source},
    )
    hub, _ = _load("cls")
    assert hub.plugins["cls"].status == "failed"
    assert (
        "entry point 'hostile_cls' names a module with no hookimpls of its own; its class 'QueuePlugin' "
        "holds them: name the class ('hostile_cls:QueuePlugin')"
    ) in (hub.plugins["cls"].error or "")
    hub, _ = _load("named")  # naming the class loads it
    assert hub.plugins["named"].status == "loaded", hub.plugins["named"].error
    assert "queued" in hub.patterns


def test_a_module_whose_hookimpls_use_specname_is_not_refused_for_a_class_beside_them(site: Path) -> None:
    """A module's hookimpl may carry another name (``@hookimpl(specname=...)``), as pluggy
    allows; a class beside it with hookimpls of its own (another plugin the module offers) must
    not make the module look hookless and fail a plugin that works."""
    source = """
        from foundation_core import hookimpl


        @hookimpl(specname="foundation_register_patterns")
        def patterns(register):
            register("renamed", lambda policy: lambda fn: fn)


        class Extra:
            @hookimpl
            def foundation_register_patterns(self, register):
                register("extra", lambda policy: lambda fn: fn)
    """
    write_dist(site, "hostile-spec", {"spec": "hostile_spec"}, {"hostile_spec.py": source})
    hub, _ = _load("spec")
    assert hub.plugins["spec"].status == "loaded", hub.plugins["spec"].error
    assert "renamed" in hub.patterns and "extra" not in hub.patterns


def _refused_installed_and_as_an_app(plugin: Callable[[], object], why: str) -> None:
    """A plugin object ``plugin()`` is refused with a message matching ``why``: installed
    (``override=False``), it is failed and isolated with a warning, none of its hookimpls kept;
    an application's own raises ``PluginLoadError`` from ``start``."""
    hub = Hub(env={})
    with pytest.warns(FoundationPluginWarning, match=why):
        name = hub.register(plugin(), override=False)
    assert hub.plugins[name].status == "failed"
    assert hub.pm.get_plugin(name) is None
    with pytest.raises(PluginLoadError, match=why):
        start([plugin()], entry_points=False)


def test_a_hookimpl_taking_a_catch_all_is_refused_naming_the_hook_arguments() -> None:
    """pluggy passes a hook's arguments by name: ``**event`` stays empty, so an observer written
    that way was called with nothing, and said nothing. Installed, it is isolated; an
    application's raises."""

    class Observer:
        @hookimpl
        def foundation_on_retry(self, **event: object) -> None:
            raise AssertionError("never called")

    why = (
        r"'foundation_on_retry' takes \*\*event, which pluggy never fills .*"
        r"of \(name, attempt, delay, error, result\)"
    )
    _refused_installed_and_as_an_app(Observer, why)


def test_a_hookimpl_named_otherwise_taking_a_catch_all_is_refused_too() -> None:
    """pluggy finds a hookimpl by its mark, under any name (``specname=``): one written
    ``@hookimpl(specname="foundation_on_retry") def observe(self, **event)`` loaded and was
    called with an empty event, as the check looked only at attributes named after a hook."""

    class Observer:
        @hookimpl(specname="foundation_on_retry")
        def observe(self, **event: object) -> None:
            raise AssertionError("never called")

    why = (
        r"'observe' \(hook 'foundation_on_retry'\) takes \*\*event, which pluggy never fills .*"
        r"of \(name, attempt, delay, error, result\)"
    )
    _refused_installed_and_as_an_app(Observer, why)


@pytest.mark.parametrize("form", ["default", "keyword-only"])
def test_a_hook_argument_given_a_default_or_made_keyword_only_is_refused(form: str) -> None:
    """pluggy fills only plain parameters without a default: ``foundation_on_retry(self, name,
    attempt=-1)`` loaded and read -1 at every retry, whatever attempt the event carried (and a
    keyword-only one kept its default too)."""
    seen: list[object] = []

    class Observer:
        if form == "default":

            @hookimpl
            def foundation_on_retry(self, name: str, attempt: int = -1) -> None:
                seen.append(attempt)

        else:

            @hookimpl
            def foundation_on_retry(self, name: str, *, attempt: int = -1) -> None:
                seen.append(attempt)

    hub = Hub(env={})
    with pytest.warns(
        FoundationPluginWarning,
        match=r"'foundation_on_retry' gives attempt a default or makes it keyword-only, so pluggy never",
    ):
        hub.register(Observer(), override=False)
    assert hub.plugins["Observer"].status == "failed"
    hub.pm.hook.foundation_on_retry(name="n", attempt=3, delay=0.1, error=None, result=None)
    assert seen == []  # not called with attempt=-1


def test_a_marked_hookimpl_that_is_no_function_is_refused() -> None:
    """pluggy takes only functions and methods for hookimpls: a plugin whose
    ``foundation_startup = hookimpl(functools.partial(start, "cache"))`` loaded, listed no hooks
    and never started, without a word."""
    started: list[str] = []

    def begin(what: str, hub: Hub) -> None:
        started.append(what)

    class Partial:
        foundation_startup = hookimpl(functools.partial(begin, "cache"))

    why = (
        r"'foundation_startup' is marked @hookimpl but is a partial, not a function or method, "
        r"so pluggy never calls it"
    )
    _refused_installed_and_as_an_app(Partial, why)
    assert started == []


def test_hookimpls_in_every_form_pluggy_calls_are_not_refused() -> None:
    """The checks of a hookimpl's parameters read them as pluggy does: a staticmethod, a
    classmethod, a method with ``self`` (positional-only too), a wrapper, a ``specname=`` and a
    ``functools.wraps`` decorated one each load and are called with the hub."""
    seen: list[str] = []

    def traced(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    class Static:
        @staticmethod
        @hookimpl
        def foundation_startup(hub: Hub) -> None:
            seen.append("static")

    class Class:
        @classmethod
        @hookimpl
        def foundation_startup(cls, hub: Hub) -> None:
            seen.append("class")

    class Named:
        @hookimpl(specname="foundation_startup")
        def begin(self, hub: Hub, /) -> None:
            seen.append("specname")

    class Wrapper:
        @hookimpl(wrapper=True)
        def foundation_startup(self, hub: Hub) -> Any:
            seen.append("wrapper")
            return (yield)

    class Traced:
        @hookimpl
        @traced
        def foundation_startup(self, hub: Hub) -> None:
            seen.append("wraps")

    with start([Static(), Class(), Named(), Wrapper(), Traced()], entry_points=False) as hub:
        assert {info.status for info in hub.plugins.values()} == {"app"}
    assert sorted(seen) == ["class", "specname", "static", "wrapper", "wraps"]


def test_plugins_lists_what_a_plugin_registered_that_another_registration_shadows(site: Path) -> None:
    """A plugin registering the core's command ``plugins`` (or a name another plugin took with
    replace=True) was listed with the name nowhere: its author could not tell it was hidden."""
    source = """
        from foundation_core import hookimpl


        @hookimpl
        def foundation_register_commands(cli):
            cli.add_command("plugins", lambda args, hub: 0, help="mine")
            cli.add_command("shadow-hello", lambda args, hub: 0, help="mine too")


        @hookimpl
        def foundation_register_patterns(register):
            register("echo", lambda policy: lambda fn: fn)
    """
    winner = """
        from foundation_core import hookimpl


        @hookimpl
        def foundation_register_patterns(register):
            register("echo", lambda policy: lambda fn: fn, replace=True)
    """
    write_dist(site, "hostile-shadow", {"shadow": "hostile_shadow"}, {"hostile_shadow.py": source})
    write_dist(site, "hostile-winner", {"winner": "hostile_winner"}, {"hostile_winner.py": winner})
    listed = _cli(site, "plugins", FOUNDATION_PLUGINS="shadow,winner")
    assert listed.returncode == 0, listed.stderr
    block = listed.stdout.partition("shadow  [loaded]")[2].partition("\nwinner")[0]
    assert "    commands: shadow-hello\n" in block
    assert "    commands shadowed: plugins (by foundation)\n" in block
    assert "    patterns shadowed: echo (by winner)" in block
    doc = json.loads(_cli(site, "plugins", "--json", FOUNDATION_PLUGINS="shadow,winner").stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert by_name["shadow"]["shadowed"] == {
        "commands": {"plugins": "foundation"},
        "config_sections": {},
        "model_backends": {},
        "patterns": {"echo": "winner"},
        "transports": {},
    }
    assert by_name["winner"]["registered"]["patterns"] == ["echo"]
    assert all(not names for names in by_name["winner"]["shadowed"].values())


def test_a_failing_plugin_is_warned_about_from_its_own_line(site: Path) -> None:
    """The warning came from the core's guard (``_isolation.py``: ``_isolate(hub_ref, ...)``),
    or from the core's loader for a module that failed to import: the plugin's author was shown
    a line of the core as where the plugin failed."""
    hooked = """
        from foundation_core import hookimpl


        @hookimpl
        def foundation_register_patterns(register):
            register("first", lambda policy: lambda fn: fn)
            raise RuntimeError("registration bug")
    """
    files = {"hostile_hooked.py": hooked, "hostile_importing.py": "X = 1\nraise ImportError('import bug')\n"}
    write_dist(site, "hostile-lines", {"hooked": "hostile_hooked", "importing": "hostile_importing"}, files)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FoundationPluginWarning)
        hub = Hub(env={"FOUNDATION_PLUGINS": "hooked,importing"})
        hub.load_entry_points()
        hub.run_registration()
    where = {str(w.message).split("'")[1]: (Path(w.filename).name, w.lineno) for w in caught}
    assert where == {"hooked": ("hostile_hooked.py", 8), "importing": ("hostile_importing.py", 2)}
    assert hub.plugins["hooked"].status == hub.plugins["importing"].status == "failed"
