"""The plugin: declares its section, configures from it, logs Foundation's events, stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from foundation_logging import LoggingSettings, plugin

import foundation_core
from foundation_core import Config, hookimpl


class _FixedConfig:
    """An application plugin standing in for the config plugin: logging goes to a file as JSON
    (or as ``settings`` say)."""

    def __init__(self, path: Path, settings: LoggingSettings | None = None) -> None:
        self.settings = settings or LoggingSettings(format="json", output=str(path), level="debug")

    @hookimpl
    def foundation_load_config(self, sections: Any, files: Any, overrides: Any, strict: bool) -> Config:
        return Config({"logging": self.settings})


def _start(tmp_path: Path) -> tuple[foundation_core.Hub, Path]:
    path = tmp_path / "events.log"
    hub = foundation_core.start(plugins=[plugin, _FixedConfig(path)], entry_points=False)
    return hub, path


def test_declares_the_logging_section_with_defaults():
    with foundation_core.start(plugins=[plugin], entry_points=False) as hub:
        assert hub.config is not None
        assert hub.config["logging"] == LoggingSettings()


def test_events_become_structured_lines(tmp_path, read_lines):
    hub, path = _start(tmp_path)
    with hub:
        foundation_core.emit("retry", name="fetch", attempt=2, delay=0.5, error=OSError("reset"), result=None)
        foundation_core.emit(
            "circuit_change", name="db", old_state="closed", new_state="open", failure_rate=0.6, calls=20
        )
        foundation_core.emit("rate_limited", name="api", retry_after=0.25)
        foundation_core.emit("server_start", name="srv", transport="shm", models=("resnet",))
        foundation_core.emit("server_stop", name="srv", transport="shm", reason="shutdown")
        hub.pm.hook.foundation_on_plugin_error(
            plugin="broken", hook="foundation_startup", error=KeyError("x")
        )
    retry, circuit, limited, started, stopped, error = read_lines(path)
    assert retry | {"timestamp": None} == {
        "event": "retry.scheduled",
        "level": "warning",
        "pattern": "fetch",
        "attempt": 2,
        "delay": 0.5,
        "error_type": "OSError",
        "error": "reset",
        "timestamp": None,
    }
    assert (circuit["event"], circuit["level"], circuit["new_state"]) == (
        "circuit.changed",
        "warning",
        "open",
    )
    assert (limited["event"], limited["retry_after"]) == ("rate_limit.refused", 0.25)
    assert (started["event"], started["models"], started["transport"]) == (
        "server.started",
        ["resnet"],
        "shm",
    )
    assert (stopped["event"], stopped["reason"]) == ("server.stopped", "shutdown")
    assert (error["event"], error["level"], error["plugin"], error["hook"]) == (
        "plugin.error",
        "error",
        "broken",
        "foundation_startup",
    )


def test_shutdown_restores_logging(tmp_path):
    import structlog

    before = structlog.get_config()
    hub, _ = _start(tmp_path)
    assert structlog.get_config() != before
    hub.shutdown()
    assert structlog.get_config() == before


@pytest.mark.parametrize("bound", [False, True], ids=["proxy", "bound"])
@pytest.mark.parametrize("getter", ["structlog", "foundation_logging"])
def test_a_logger_cached_under_one_hub_writes_where_the_next_hub_logs(tmp_path, capsys, getter, bound):
    """structlog caches a logger on first use: a module's ``log = structlog.get_logger()`` first
    used under hub A kept A's level, format and output, so once A was shut down its lines went
    to stderr (in A's format, A's level), also while hub B logged to a file. It now follows the
    hub that logs now, and a logger bound under A (``log.bind(...)``) too."""
    import structlog
    from foundation_logging import get_logger

    module_level = structlog.get_logger() if getter == "structlog" else get_logger()
    first = LoggingSettings(format="console", output="stderr", level="warning")
    with foundation_core.start(plugins=[plugin, _FixedConfig(tmp_path, first)], entry_points=False):
        log = module_level.bind(k=1) if bound else module_level
        log.warning("under A")  # the proxy is cached on first use
    assert "under A" in capsys.readouterr().err
    path = tmp_path / "b.log"
    second = LoggingSettings(format="json", output=str(path), level="debug", redact=("pin",))
    with foundation_core.start(plugins=[plugin, _FixedConfig(tmp_path, second)], entry_points=False):
        log.info("under B", pin="1234")
        log.debug("below A's level")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [("under B", "info"), ("below A's level", "debug")]
    assert lines[0]["pin"] == "[REDACTED]"  # B's redaction, not A's
    assert all(x.get("k") == (1 if bound else None) for x in lines)
    assert capsys.readouterr().err == ""


def test_importing_the_plugin_does_not_import_structlog_or_orjson():
    code = (
        "import sys, foundation_logging.plugin\n"
        "loaded = [m for m in ('structlog', 'orjson') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_output_that_cannot_be_opened_is_reported_with_its_key_and_source(tmp_path):
    import pytest

    from foundation_core.errors import ConfigError

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    bad = Config(
        {"logging": LoggingSettings(format="json", output=str(blocker / "app.log"))},
        {"logging.output": "settings.toml:logging.output"},
    )
    with pytest.raises(ConfigError) as info:
        plugin._configure(bad, foundation_core.Hub(env={}))
    [problem] = info.value.problems
    assert (problem.path, problem.source) == ("logging.output", "settings.toml:logging.output")
    assert problem.message.startswith(f"cannot open {str(blocker / 'app.log')!r} for appending")


def test_an_output_that_is_a_fifo_nothing_reads_is_an_error_not_a_hang(tmp_path):
    """Opening it for appending blocked start-up for ever, waiting for a reader."""
    import os
    import threading

    import pytest

    from foundation_core.errors import ConfigError

    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    bad = Config({"logging": LoggingSettings(output=str(fifo))}, {"logging.output": "--set"})
    outcome: list[BaseException] = []

    def configure() -> None:
        try:
            plugin._configure(bad, foundation_core.Hub(env={}))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=configure, daemon=True)
    worker.start()
    worker.join(60)  # it returns at once unless it blocks; a loaded machine may be slow to run it
    if worker.is_alive():  # unblock it: open a reader
        with open(fifo, "rb"):
            worker.join(5)
        pytest.fail("configuring an output that is a FIFO without a reader blocked")
    [error] = outcome
    assert isinstance(error, ConfigError)
    [problem] = error.problems
    assert (problem.path, problem.source) == ("logging.output", "--set")
    assert problem.message == f"cannot open {str(fifo)!r} for appending: a FIFO that nothing reads"


def test_an_event_before_logging_is_configured_writes_nothing_to_stdout(capsys):
    """structlog's default would print it on stdout, into a command's --json output."""
    import structlog
    from foundation_logging import _events

    structlog.reset_defaults()
    _events.plugin_error("broken", None, RuntimeError("boom"))
    assert capsys.readouterr().out == ""


def test_an_event_after_a_hub_with_logging_shut_down_writes_nothing_to_stdout(capsys):
    """Shutting down restored structlog's defaults with ``structlog.configure``, which left it
    "configured": a plugin failing in the next hub, before that hub configured logging, was
    printed by structlog's defaults on stdout (into a command's --json output)."""
    import warnings

    import structlog

    class Broken:
        foundation_name = "broken"

        @hookimpl
        def foundation_register_patterns(self, register: Any) -> None:
            raise RuntimeError("boom")

    structlog.reset_defaults()
    with foundation_core.start(plugins=[plugin], entry_points=False):
        pass
    assert not structlog.is_configured()
    hub = foundation_core.Hub(env={})
    hub.register(plugin, name="logging", override=False)
    hub.register(Broken(), override=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hub.run_registration()
    assert [str(w.message).split(" (at ")[0] for w in caught] == [
        "plugin 'broken' failed in hook foundation_register_patterns: RuntimeError('boom')"
    ]
    assert capsys.readouterr().out == ""


def test_an_error_whose_str_raises_still_gets_its_event_line(tmp_path, read_lines):
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str boom")

    hub, path = _start(tmp_path)
    with hub:
        foundation_core.emit("retry", name="fetch", attempt=1, delay=0.1, error=Weird(), result=None)
    [line] = [x for x in read_lines(path) if x["event"] == "retry.scheduled"]
    assert (line["error_type"], line["error"]) == ("Weird", "<str() raised RuntimeError>")
