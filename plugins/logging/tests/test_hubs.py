"""Several hubs at once: the logging in force is that of the newest running hub that configured
logging; a hub shutting down closes only its own, and gives the next one's back when its was in
force (as the core makes the hub started before the active one again)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog
from foundation_logging import LoggingSettings, _setup, get_logger, plugin

import foundation_core
from foundation_core import Config, hookimpl

_NO_ENTRY_POINTS = {"FOUNDATION_PLUGINS": ""}


class _Settings:
    """Stands in for the config plugin: the ``logging`` section is ``self.settings``."""

    def __init__(self, settings: LoggingSettings) -> None:
        self.settings = settings

    @hookimpl
    def foundation_load_config(self, sections: Any, files: Any, overrides: Any, strict: bool) -> Config:
        return Config({"logging": self.settings})


def _hub(settings: LoggingSettings | None, *, logging_plugin: bool = True) -> foundation_core.Hub:
    plugins: list[object] = [plugin] if logging_plugin else []
    if settings is not None:
        plugins.append(_Settings(settings))
    return foundation_core.start(plugins=plugins, entry_points=False, env=_NO_ENTRY_POINTS)


def _json(path: Path, level: str = "info", stdlib: bool = False) -> LoggingSettings:
    return LoggingSettings(format="json", output=str(path), level=level, stdlib=stdlib)


def _events(path: Path) -> list[str]:
    """The lines of a log file: a JSON line as its event (and pattern, for a Foundation event),
    a console line as it is."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        if text.startswith("{"):
            line = json.loads(text)
            lines.append(" ".join(str(line[k]) for k in ("event", "pattern") if k in line))
        else:
            lines.append(text)
    return lines


def _log_everywhere(cached: Any, tag: str) -> list[str]:
    """One line by each way there is to log: a logger cached earlier, a fresh one (and one
    below info), the standard library, and a Foundation event (logged by the active hub's
    plugin). Returns the events written at info."""
    cached.info(f"{tag} cached")
    get_logger().info(f"{tag} fresh")
    get_logger().debug(f"{tag} debug")
    logging.getLogger("lib").warning(f"{tag} stdlib")
    foundation_core.emit("rate_limited", name=tag, retry_after=1.0)
    return [f"{tag} cached", f"{tag} fresh", f"{tag} stdlib", f"rate_limit.refused {tag}"]


def _is_open(path: Path) -> bool:
    """Whether this process has a descriptor on ``path``."""
    fds = Path("/proc/self/fd")
    return any(_readlink(fd) == str(path) for fd in fds.iterdir())


def _readlink(fd: Path) -> str:
    try:
        return str(fd.readlink())
    except OSError:  # the descriptor listing itself, closed meanwhile
        return ""


def test_a_nested_hub_shutting_down_gives_the_outer_hub_its_logging_back(tmp_path, capsys):
    """The outer hub's lines went through structlog's defaults (stdout) or, for a cached
    logger, to stderr, once the inner hub had shut down; now they go to the outer's file again,
    at its level and in its format, and the inner's file gets nothing more."""
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    cached = structlog.get_logger()
    with _hub(_json(a_log, stdlib=True)) as outer:
        expected = _log_everywhere(cached, "A1")
        inner_settings = LoggingSettings(format="console", output=str(b_log), level="debug", stdlib=True)
        with _hub(inner_settings):
            _log_everywhere(cached, "B")
        expected += _log_everywhere(cached, "A2")
        assert foundation_core.active_hub() is outer
        assert not _is_open(b_log)
    assert _events(a_log) == expected  # A's format (JSON) and level (no debug line)
    b_lines = _events(b_log)  # B's format (console) and level (debug)
    wanted = ["B cached", "B fresh", "B debug", "B stdlib", "rate_limit.refused"]
    assert len(b_lines) == len(wanted)
    assert all(w in x and x[0] != "{" for w, x in zip(wanted, b_lines, strict=True))
    assert capsys.readouterr() == ("", "")


def test_an_outer_hub_shutting_down_first_leaves_the_inner_hubs_logging(tmp_path, capsys):
    """The outer hub's shutdown closed the inner's sink and put back structlog's defaults while
    the inner one still ran; it now closes only its own file."""
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    before = structlog.get_config()
    cached = structlog.get_logger()
    outer = _hub(_json(a_log, stdlib=True))
    inner = _hub(_json(b_log, level="debug", stdlib=True))
    _log_everywhere(cached, "B1")
    outer.shutdown()
    _log_everywhere(cached, "B2")
    handlers = [h for h in logging.getLogger().handlers if h.__class__.__name__ == "_SinkHandler"]
    assert len(handlers) == 1  # the inner's only
    inner.shutdown()
    assert _events(a_log) == []
    each = ("cached", "fresh", "debug", "stdlib")  # at debug
    expected = [x for t in ("B1", "B2") for x in (*(f"{t} {e}" for e in each), f"rate_limit.refused {t}")]
    assert _events(b_log) == expected
    assert structlog.get_config() == before  # the last one gone: what was there before
    assert not [h for h in logging.getLogger().handlers if h.__class__.__name__ == "_SinkHandler"]
    assert capsys.readouterr().out == ""


def test_the_newest_hub_that_configured_logging_is_the_one_in_force(tmp_path):
    """A hub without the logging plugin in the middle: when the newest shuts down, the logging
    of the hub before the middle one comes back, although the middle one is the active hub."""
    a_log, c_log = tmp_path / "a.log", tmp_path / "c.log"
    log = get_logger()
    with _hub(_json(a_log)), _hub(None, logging_plugin=False) as middle:
        with _hub(_json(c_log)):
            log.info("under C")
        assert foundation_core.active_hub() is middle
        log.info("under the middle hub")
    assert (_events(a_log), _events(c_log)) == (["under the middle hub"], ["under C"])


def test_an_older_running_hub_reconfigured_waits_until_the_newer_one_shuts_down(tmp_path):
    """Configuring logging anew in a hub that a newer running hub follows (its own logging in
    force) leaves the newer hub's in force; the older hub's new configuration comes in force
    once the newer one shuts down, and its first one is closed."""
    a_log, a2_log, b_log = tmp_path / "a.log", tmp_path / "a2.log", tmp_path / "b.log"
    log = get_logger()
    settings = _Settings(_json(a_log))
    with foundation_core.start(plugins=[plugin, settings], entry_points=False, env=_NO_ENTRY_POINTS) as outer:
        with _hub(_json(b_log)):
            settings.settings = _json(a2_log)
            outer.configure(overrides=["logging.output=a2.log"])  # new sources: configured again
            log.info("under B")
        log.info("under A, configured again")
    assert _events(a_log) == []
    assert (_events(a2_log), _events(b_log)) == (["under A, configured again"], ["under B"])


def test_configure_logging_outside_a_hub_comes_back_after_the_hub(tmp_path):
    """The application's own ``configure_logging`` was replaced for good by a hub's; it is in
    force again once the hub shuts down."""
    own, hub_log = tmp_path / "own.log", tmp_path / "hub.log"
    log = get_logger()
    runtime = _setup.configure_logging(_json(own))
    log.info("before the hub")
    with _hub(_json(hub_log)):
        log.info("under the hub")
    log.info("after the hub")
    assert _setup.current_runtime() is runtime
    runtime.close()
    assert (_events(own), _events(hub_log)) == (["before the hub", "after the hub"], ["under the hub"])


@pytest.mark.parametrize("order", ["inner first", "outer first"])
def test_each_hub_closes_its_own_file_when_it_shuts_down(tmp_path, order):
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    outer = _hub(_json(a_log))
    inner = _hub(_json(b_log))
    first, second = (inner, outer) if order == "inner first" else (outer, inner)
    first_log, second_log = (b_log, a_log) if first is inner else (a_log, b_log)
    assert _is_open(a_log) and _is_open(b_log)
    first.shutdown()
    assert not _is_open(first_log) and _is_open(second_log)
    second.shutdown()
    assert not _is_open(second_log)
    assert _setup.current_runtime() is None


def test_a_hub_freed_without_shutting_down_has_its_file_closed_once_another_logs(tmp_path):
    """Its configuration was in force; the next one closes it (not the garbage collector, with
    a ResourceWarning), as a later configuration always closed the one before."""
    import gc
    import warnings

    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    hub = foundation_core.Hub(env=_NO_ENTRY_POINTS)
    hub.register(plugin, name="logging", override=False)
    hub.register(_Settings(_json(a_log)))
    hub.configure()  # never started, so never shut down
    del hub
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _hub(_json(b_log)):
            gc.collect()
            assert not _is_open(a_log)
            get_logger().info("under B")
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert (_events(a_log), _events(b_log)) == ([], ["under B"])


def _configured(settings: LoggingSettings) -> foundation_core.Hub:
    """A hub configured now and started later (an application's, made before a library's)."""
    hub = foundation_core.Hub(env=_NO_ENTRY_POINTS)
    hub.register(plugin, name="logging", override=False)
    hub.register(_Settings(settings))
    hub.configure()
    return hub


def test_a_hub_configured_before_another_started_and_started_after_it_logs_its_own_way(tmp_path):
    """A hub configured before another hub started, and started after it, is the newest running
    hub (the active one), but the other's logging stayed in force: its lines and events went to
    the other hub's file. Now its own is put in force when it starts."""
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    log = get_logger()
    app = _configured(_json(a_log))
    with _hub(_json(b_log)) as library:
        app.startup()
        assert foundation_core.running_hubs() == (app, library)
        log.info("under the app")
        foundation_core.emit("rate_limited", name="app", retry_after=1.0)
        app.shutdown()
        log.info("under the library again")
    assert _events(a_log) == ["under the app", "rate_limit.refused app"]
    assert _events(b_log) == ["under the library again"]


def test_a_hub_configured_before_another_ran_logs_its_own_way_once_started(tmp_path, capsys):
    """The other hub's shutdown found no running hub to give the logging back to, and put back
    what was there before: the hub started then, the only one running, logged through
    structlog's defaults (on stdout), its own file open and empty."""
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    app = _configured(_json(a_log))
    with _hub(_json(b_log)):
        pass
    app.startup()
    get_logger().info("under the app")
    app.shutdown()
    assert (_events(a_log), _events(b_log)) == (["under the app"], [])
    assert capsys.readouterr().out == ""


class _Refuses:
    """A plugin that refuses every configuration."""

    @hookimpl
    def foundation_configure(self, config: Config, hub: Any) -> None:
        from foundation_core.errors import ConfigError, ConfigProblem

        raise ConfigError([ConfigProblem("toy.key", "refused on purpose", "default")])


@pytest.mark.parametrize("outer", [False, True])
def test_a_first_configuration_another_plugin_refuses_leaves_no_logging_in_force(tmp_path, outer):
    """Logging was configured before the refusal and stayed in force (root logger's handlers
    replaced, its file open) for a hub that had no configuration."""
    from foundation_core.errors import ConfigError

    root = logging.getLogger()
    outer_hub = _hub(_json(tmp_path / "outer.log")) if outer else None
    try:

        def state() -> tuple[Any, ...]:
            return (_setup.current_runtime(), list(root.handlers), root.level, structlog.is_configured())

        before = state()
        refused = tmp_path / "refused.log"
        hub = foundation_core.Hub(env=_NO_ENTRY_POINTS)
        for p in (_Refuses(), _Settings(_json(refused, stdlib=True)), plugin):  # (pluggy: the last first)
            hub.register(p)
        with pytest.raises(ConfigError, match="refused on purpose"):
            hub.configure()
        assert hub.config is None
        assert _setup.hub_runtime(hub) is None
        assert state() == before
        assert not _is_open(refused)
        get_logger().info("after the refusal")
        assert "after the refusal" not in _events(refused)
        if outer_hub is not None:
            assert _events(tmp_path / "outer.log")[-1] == "after the refusal"
    finally:
        if outer_hub is not None:
            outer_hub.shutdown()


class _ChecksAfterTheOthers:
    """A plugin that looks at a configuration once every other plugin took it (a wrapper, so
    registered after the logging plugin it is the outer one) and refuses it then."""

    @hookimpl(wrapper=True)
    def foundation_configure(self, config: Config, hub: Any) -> Any:
        from foundation_core.errors import ConfigError, ConfigProblem

        yield
        raise ConfigError([ConfigProblem("toy.key", "refused after the others took it", "default")])


@pytest.mark.parametrize("installed", [False, True])
def test_a_first_configuration_a_wrapper_refuses_after_the_others_leaves_no_logging_in_force(
    tmp_path, installed
):
    """The logging plugin closed its logging when the refusal passed through it; a wrapper
    registered after it ran around it, so its refusal came once the logging plugin had returned
    and the hub's logging stayed in force (root handlers replaced, its file open)."""
    from foundation_core.errors import ConfigError

    root = logging.getLogger()
    before = (_setup.current_runtime(), list(root.handlers), root.level, structlog.is_configured())
    refused = tmp_path / "refused.log"
    hub = foundation_core.Hub(env=_NO_ENTRY_POINTS)
    hub.register(plugin, "logging", override=not installed)  # installed plugins load first
    hub.register(_Settings(_json(refused, stdlib=True)))
    hub.register(_ChecksAfterTheOthers())
    with pytest.raises(ConfigError, match="refused after the others took it"):
        hub.configure()
    assert hub.config is None and _setup.hub_runtime(hub) is None
    assert (_setup.current_runtime(), list(root.handlers), root.level, structlog.is_configured()) == before
    assert not _is_open(refused)


def test_a_refusal_stays_the_error_when_closing_its_logging_fails(tmp_path, monkeypatch):
    """A close that raised while undoing a refused first configuration replaced the refusal."""
    from foundation_core.errors import ConfigError

    def close_fails(self: Any) -> None:
        close(self)
        raise OSError(28, "No space left on device")

    close = _setup.LoggingRuntime.close
    monkeypatch.setattr(_setup.LoggingRuntime, "close", close_fails)
    hub = foundation_core.Hub(env=_NO_ENTRY_POINTS)
    for p in (_Refuses(), _Settings(_json(tmp_path / "refused.log")), plugin):
        hub.register(p)
    with pytest.raises(ConfigError, match="refused on purpose") as info:
        hub.configure()
    assert info.value.__notes__ == [
        "closing the refused configuration's logging failed too: OSError(28, 'No space left on device')"
    ]
    assert _setup.hub_runtime(hub) is None
