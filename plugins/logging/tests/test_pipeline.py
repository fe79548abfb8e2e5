"""The structlog pipeline: JSON lines, levels, timestamps, bound context, exceptions, console."""

from __future__ import annotations

import builtins
import logging
import re
from pathlib import Path

import pytest
import structlog
from foundation_logging import (
    LoggingSettings,
    bind_context,
    bound_context,
    configure_logging,
    get_context,
    get_logger,
    unbind_context,
)
from foundation_logging._processors import Stamp

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_file(tmp_path: Path, **kw: object) -> Path:
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path), **kw))  # type: ignore[arg-type]
    return path


def test_json_line_has_event_level_timestamp_and_bound_keys(tmp_path, read_lines):
    path = json_file(tmp_path)
    get_logger().bind(request_id="r1", model_id="m", batch=8).info("served", latency_ms=1.5)
    [line] = read_lines(path)
    assert line["event"] == "served"
    assert line["level"] == "info"
    assert ISO_MS.match(line["timestamp"])
    assert (line["request_id"], line["model_id"], line["batch"], line["latency_ms"]) == ("r1", "m", 8, 1.5)


def test_timestamp_is_utc_iso8601_with_milliseconds():
    stamp = Stamp(clock=lambda: 86_400 * 365 + 3.0421)
    assert stamp(None, "warn", {}) == {"level": "warning", "timestamp": "1971-01-01T00:00:03.042Z"}


def test_timestamp_cache_follows_the_clock_across_seconds():
    now = [10.5]
    stamp = Stamp(clock=lambda: now[0])
    first = stamp(None, "info", {})["timestamp"]
    now[0] = 11.25
    assert (first, stamp(None, "info", {})["timestamp"]) == (
        "1970-01-01T00:00:10.500Z",
        "1970-01-01T00:00:11.250Z",
    )


def test_lines_below_the_level_are_dropped(tmp_path, read_lines):
    path = json_file(tmp_path, level="WARNING")
    log = get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [line["event"] for line in read_lines(path)] == ["w", "e"]


def test_the_bound_logger_is_a_filtering_logger_cached_on_first_use(tmp_path):
    json_file(tmp_path)
    config = structlog.get_config()
    assert config["cache_logger_on_first_use"] is True
    filtering = structlog.make_filtering_bound_logger("info")
    cls = config["wrapper_class"]
    assert cls.debug is filtering.debug  # below the level: structlog's no-op
    assert (cls.is_enabled_for, cls.get_effective_level) == (
        filtering.is_enabled_for,
        filtering.get_effective_level,
    )


def test_a_cached_logger_follows_every_reconfiguration(tmp_path, read_lines):
    """A logger cached on first use kept the level, format and output of its first line's
    configuration: configuring again (debug, another file) did not reach it."""
    log = get_logger()
    configure_logging(LoggingSettings(format="console", output=str(tmp_path / "a.log"), level="error"))
    log.error("first")  # cached on first use
    path = tmp_path / "b.log"
    configure_logging(LoggingSettings(format="json", output=str(path), level="debug"))
    log.debug("second")
    assert [(x["event"], x["level"]) for x in read_lines(path)] == [("second", "debug")]
    configure_logging(LoggingSettings(format="json", output=str(path), level="warning"))
    log.info("below the new level")
    assert len(read_lines(path)) == 1


def test_reconfiguring_at_the_same_level_leaves_the_logger_class_as_it_is(tmp_path, monkeypatch):
    """Each assignment to the class drops its attribute cache, and from CPython 3.13 a class
    changed a thousand times is never cached again: only a new level changes it."""
    from foundation_logging import _bound
    from foundation_logging._bound import FoundationBoundLogger

    json_file(tmp_path, level="info")
    before = dict(vars(FoundationBoundLogger))
    assigned: list[str] = []

    def spy(obj: object, name: str, value: object) -> None:  # every assignment set_level makes
        assigned.append(name)
        builtins.setattr(obj, name, value)

    monkeypatch.setattr(_bound, "setattr", spy, raising=False)
    json_file(tmp_path, level="info")
    assert assigned == []  # (the values alone compare equal when re-assigned: count assignments)
    assert dict(vars(FoundationBoundLogger)) == before
    json_file(tmp_path, level="debug")
    assert "debug" in assigned and "info" not in assigned
    assert vars(FoundationBoundLogger)["debug"] is not before["debug"]
    assert vars(FoundationBoundLogger)["info"] is before["info"]


def test_structlog_capture_logs_sees_the_lines_of_a_cached_logger(tmp_path):
    """``structlog.testing.capture_logs`` changes the configured processor list in place; a
    logger cached before it is captured too, and logs to the file again afterwards."""
    from structlog.testing import capture_logs

    path = json_file(tmp_path)
    log = get_logger()
    log.info("before")
    with capture_logs() as captured:
        log.info("captured", k=1)
    log.info("after")
    assert captured == [{"event": "captured", "k": 1, "log_level": "info"}]
    assert [line.split('"event":"')[1].split('"')[0] for line in path.read_text().splitlines()] == [
        "before",
        "after",
    ]


def test_bound_context_applies_inside_the_block_only(tmp_path, read_lines):
    path = json_file(tmp_path)
    log = get_logger()
    with bound_context(request_id="abc", model_id="resnet"):
        log.info("inside")
        log.info("call site wins", request_id="override")
    log.info("outside")
    inside, override, outside = read_lines(path)
    assert (inside["request_id"], inside["model_id"]) == ("abc", "resnet")
    assert override["request_id"] == "override"
    assert "request_id" not in outside


def test_bind_and_unbind_context(tmp_path, read_lines):
    path = json_file(tmp_path)
    bind_context(plugin="retry", request_id="x")
    unbind_context("request_id")
    assert dict(get_context()) == {"plugin": "retry"}
    get_logger().info("e")
    assert read_lines(path)[0]["plugin"] == "retry"


def test_exception_is_rendered_as_a_traceback_string(tmp_path, read_lines):
    path = json_file(tmp_path)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger().exception("failed")
    [line] = read_lines(path)
    assert line["level"] == "error"
    assert "ValueError: boom" in line["exception"]


def _asks_for_the_stack(stdlib: bool) -> None:
    if stdlib:
        logging.getLogger("lib").warning("where am I", stack_info=True)
    else:
        get_logger().warning("where am I", stack_info=True)


@pytest.mark.parametrize("stdlib", [False, True], ids=["structlog", "stdlib"])
def test_stack_info_writes_the_callers_stack_under_stack(tmp_path, read_lines, stdlib):
    """structlog's ``stack_info=True`` (its StackInfoRenderer) wrote ``"stack_info": true`` and no
    stack; both loggers' stack, as the standard library formats it, is the ``stack`` key."""
    path = json_file(tmp_path)
    _asks_for_the_stack(stdlib)
    get_logger().info("no stack", stack_info=False)
    [line, plain] = read_lines(path)
    assert "stack_info" not in line and "stack_info" not in plain and "stack" not in plain
    stack = line["stack"]
    assert stack.startswith("Stack (most recent call last):\n")
    assert stack.splitlines()[-1].strip() == (
        'logging.getLogger("lib").warning("where am I", stack_info=True)'
        if stdlib
        else 'get_logger().warning("where am I", stack_info=True)'
    )  # the caller's line last: no frame of the logging machinery
    assert "foundation_logging" not in stack and "structlog" not in stack


@pytest.mark.parametrize("stdlib", [False, True], ids=["structlog", "stdlib"])
def test_stack_info_in_the_console_format_is_written_on_lines_of_its_own(tmp_path, stdlib):
    """As a traceback is; a ``stack`` given at the call site stays a value of the line."""
    path = tmp_path / "console.log"
    configure_logging(LoggingSettings(format="console", output=str(path)))
    _asks_for_the_stack(stdlib)
    get_logger().info("given", stack="a\nb")
    text = path.read_text()
    first, second = text.split("Stack (most recent call last):\n")
    assert "where am I" in first and "stack_info" not in first
    assert "_asks_for_the_stack" in second.splitlines()[-3]
    assert text.splitlines()[-1].endswith("stack='a\\nb'")


def test_values_orjson_cannot_encode_are_written_as_repr(tmp_path, read_lines):
    path = json_file(tmp_path)
    get_logger().info("e", where=Path("/x"), tags={"a"})
    [line] = read_lines(path)
    assert (line["where"], line["tags"]) == (repr(Path("/x")), ["a"])


@pytest.mark.parametrize("output", ["file", "stderr"])
def test_numpy_arrays_and_scalars_are_written_as_json_lists_and_numbers(tmp_path, read_lines, capsys, output):
    """As docs/logging.md says: not their repr ("array([0, 1, 2])", "np.int64(5)"), also for the
    arrays orjson does not write itself (a transposed or strided view, text dtype)."""
    np = pytest.importorskip("numpy")
    path = json_file(tmp_path) if output == "file" else None
    if path is None:
        configure_logging(LoggingSettings(format="json", output="stderr"))
    grid = np.arange(6).reshape(2, 3)
    get_logger().info(
        "e", scores=np.array([0.5, 1.5]), n=np.int64(5), x=np.float32(0.25), ok=np.bool_(True),
        transposed=grid.T, strided=np.arange(6)[::2], labels=np.array(["cat", "dog"]),
    )  # fmt: skip
    if path is not None:
        [line] = read_lines(path)
    else:
        import json

        line = json.loads(capsys.readouterr().err)
    assert (line["scores"], line["n"], line["x"], line["ok"]) == ([0.5, 1.5], 5, 0.25, True)
    assert (line["transposed"], line["strided"]) == ([[0, 3], [1, 4], [2, 5]], [0, 2, 4])
    assert line["labels"] == ["cat", "dog"]


@pytest.mark.parametrize("output", ["file", "stderr"])
def test_values_orjson_refuses_outright_never_make_a_log_call_raise(tmp_path, read_lines, capsys, output):
    """orjson raises for integers past 64 bits and lone surrogates without asking its fallback."""
    path = json_file(tmp_path) if output == "file" else None
    if path is None:
        configure_logging(LoggingSettings(format="json", output="stderr"))
    get_logger().info("e", n=2**70, path="caf\udce9", nested={"k": [2**65, "ok\ud800"]}, small=5)
    if path is not None:
        [line] = read_lines(path)
    else:
        import json

        line = json.loads(capsys.readouterr().err)
    assert (line["n"], line["path"], line["small"]) == (repr(2**70), "caf\\udce9", 5)
    assert line["nested"] == {"k": [repr(2**65), "ok\\ud800"]}


def test_console_format_writes_readable_lines(tmp_path):
    path = tmp_path / "console.log"
    configure_logging(LoggingSettings(format="console", output=str(path)))
    get_logger().info("hello world", user_id=7)
    text = path.read_text()
    assert "hello world" in text
    assert "user_id=7" in text
    assert "\x1b[" not in text  # no colours in a file


def test_stream_output_goes_to_stderr_as_json(capsys):
    configure_logging(LoggingSettings(format="json", output="stderr"))
    get_logger().info("to stderr", k=1)
    err = capsys.readouterr().err
    assert '"event":"to stderr"' in err
    assert err.endswith("\n")


def test_close_restores_structlog_and_sends_late_lines_to_stderr(tmp_path, capsys):
    before = structlog.get_config()
    path = tmp_path / "app.log"
    runtime = configure_logging(LoggingSettings(format="json", output=str(path)))
    log = get_logger()
    log.info("before close")  # caches the logger on first use
    runtime.close()
    log.info("after close")
    assert structlog.get_config() == before
    assert "after close" in capsys.readouterr().err
    assert "after close" not in path.read_text()


def test_reconfiguring_replaces_the_previous_pipeline(tmp_path, read_lines):
    first = tmp_path / "a.log"
    second = tmp_path / "b.log"
    configure_logging(LoggingSettings(format="json", output=str(first)))
    configure_logging(LoggingSettings(format="json", output=str(second)))
    get_logger().info("e")
    assert first.read_text() == ""
    assert len(read_lines(second)) == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("level", "loud", "logging.level must be one of"),
        ("format", "xml", "logging.format must be one of"),
        ("output", " ", "logging.output must be"),
        ("redact", ("ok", ""), "logging.redact must be"),
    ],
)
def test_settings_reject_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LoggingSettings(**{field: value})


def test_format_is_taken_in_any_case_as_level_is(tmp_path, read_lines):
    """``FOUNDATION_LOGGING__FORMAT=JSON`` was refused while ``LEVEL=DEBUG`` was taken."""
    assert LoggingSettings(format="JSON", level="DEBUG").format == "json"
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="Json", output=str(path)))
    get_logger().info("e", k=1)
    assert read_lines(path)[0]["k"] == 1


def test_a_big_numpy_array_is_written_as_its_summary_not_a_list_of_megabytes(tmp_path, read_lines):
    """Written as a list, a tensor logged by mistake (100k floats) made a line of ~2 MB."""
    np = pytest.importorskip("numpy")
    from foundation_logging._render import MAX_ARRAY_ITEMS

    path = json_file(tmp_path)
    get_logger().info("e", big=np.arange(100_000.0), edge=np.zeros(MAX_ARRAY_ITEMS))
    [line] = read_lines(path)
    assert line["big"].startswith("array([0.0000e+00,") and "..." in line["big"]
    assert len(line["big"]) < 1000
    assert line["edge"] == [0.0] * MAX_ARRAY_ITEMS
