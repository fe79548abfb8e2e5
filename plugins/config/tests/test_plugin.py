"""The plugin: cheap to import, found through its entry point, and feeding other plugins' sections."""

from __future__ import annotations

import json
import subprocess
import sys

import foundation_core


def test_importing_the_plugin_does_not_import_dynaconf_or_cattrs():
    code = (
        "import sys, foundation_config.plugin\n"
        "loaded = [m for m in ('dynaconf', 'cattrs', 'structlog') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_logging_plugin_is_configured_from_all_sources(tmp_path, write, monkeypatch):
    """Cross-plugin: the logging plugin's section comes from a file, the environment and --set."""
    log_file = tmp_path / "events.log"
    write("settings.toml", "[logging]\nformat = 'console'\nlevel = 'error'\n")
    monkeypatch.setenv("FOUNDATION_LOGGING__FORMAT", "json")
    hub = foundation_core.start(
        overrides=[f"logging.output={log_file}", "logging.level=warning"],
        env={"FOUNDATION_PLUGINS": "config,logging"},
    )
    with hub:
        assert hub.config is not None
        assert hub.config.sources["logging.level"] == "--set"
        foundation_core.emit("retry", name="fetch", attempt=1, delay=0.1, error=OSError("x"), result=None)
    [line] = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert (line["event"], line["level"], line["pattern"]) == ("retry.scheduled", "warning", "fetch")


def test_an_unexpected_error_while_building_is_a_config_error_not_the_defaults(write, monkeypatch):
    """The hub isolates a plugin that raises, and would carry on with every section's defaults:
    the user's files, secrets and environment silently ignored."""
    import pytest
    from foundation_config import _loader

    from foundation_core.errors import ConfigError

    write("settings.toml", "[logging]\nlevel = 'error'\n")

    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(_loader, "load_config", broken)
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": "config,logging"})
    hub.load_entry_points()
    with pytest.raises(ConfigError, match="the configuration could not be built: RecursionError: maximum"):
        hub.configure()
    assert hub.config is None
    assert hub.plugins["config"].status != "failed"


def test_a_logging_output_that_cannot_be_opened_leaves_the_previous_configuration_in_place(tmp_path, write):
    """Reconfiguring with an output that is a directory: the hub kept the refused configuration
    (and handed it to every plugin before the logging plugin) while logging kept the old file."""
    import pytest
    from foundation_logging._setup import current_runtime

    from foundation_core.errors import ConfigError

    (tmp_path / "adir").mkdir()
    write("good.toml", f"[logging]\nformat = 'json'\noutput = '{tmp_path / 'good.log'}'\n")
    write("bad.toml", f"[logging]\nlevel = 'error'\noutput = '{tmp_path / 'adir'}'\n")
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": "config,logging"})
    hub.load_entry_points()
    first = hub.configure(["good.toml"])
    try:
        with pytest.raises(ConfigError, match=r"logging\.output: cannot open .* Is a directory"):
            hub.configure(["bad.toml"])
        assert hub.config is first
        assert hub.config["logging"].level == "info"
        runtime = current_runtime()
        assert runtime is not None and runtime.settings == first["logging"]
    finally:
        runtime = current_runtime()
        if runtime is not None:
            runtime.close()


def test_reloading_the_configuration_many_times_holds_no_file_and_no_handler(tmp_path, write):
    """A long-running process reloading its configuration (good files, files refused, a file
    switching the log between two outputs): descriptors, the root logger's handlers and the
    logging sinks alive stay as they were, with a logger cached on first use (which held every
    sink made since its own through their successors)."""
    import gc
    import logging
    import os
    import weakref

    import pytest
    import structlog
    from foundation_logging._setup import current_runtime

    from foundation_core.errors import ConfigError

    write("a.toml", f"[logging]\nformat = 'json'\noutput = '{tmp_path / 'a.log'}'\n")
    write("b.toml", f"[logging]\nformat = 'console'\nlevel = 'warning'\noutput = '{tmp_path / 'b.log'}'\n")
    write("bad.toml", "[logging]\nlevel = 'loud'\n")
    write("broken.toml", "[logging\nlevel = \n")
    hub = foundation_core.Hub(env={"FOUNDATION_PLUGINS": "config,logging"})
    hub.load_entry_points()
    try:
        hub.configure(["a.toml"])
        cached = structlog.get_logger()
        cached.info("first")  # cached: bound to the sink of a.log's first configuration
        gc.collect()  # what earlier tests left to the collector closes its descriptors now, not in the loop
        fds, handlers = len(os.listdir("/proc/self/fd")), len(logging.getLogger().handlers)
        sinks = []
        for i in range(100):
            hub.configure(["a.toml" if i % 2 else "b.toml"], [f"logging.redact=['k{i}']"])
            sinks.append(weakref.ref(current_runtime().sink))  # type: ignore[union-attr]
            for refused in ("bad.toml", "broken.toml"):
                with pytest.raises(ConfigError):
                    hub.configure([refused])
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) == fds
        assert len(logging.getLogger().handlers) == handlers
        assert sum(sink() is not None for sink in sinks) == 1  # the one in use
        cached.info("late")
        assert json.loads((tmp_path / "a.log").read_text().splitlines()[-1])["event"] == "late"
    finally:
        runtime = current_runtime()
        if runtime is not None:
            runtime.close()
