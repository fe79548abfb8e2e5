"""A log call never raises: not for its values, not for a full disk or a closed stream, not while
another thread reconfigures logging; and reconfiguring never lets a line out unredacted."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog
from foundation_logging import LoggingSettings, configure_logging, get_logger
from foundation_logging._render import SafeConsole, plain_traceback
from hypothesis import given, settings
from hypothesis import strategies as st


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


def _awkward_values() -> dict[str, object]:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    deep: dict[str, object] = {}
    node = deep
    for _ in range(300):  # orjson refuses past 255 levels
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    return {
        "bad_repr": BadRepr(),
        "tuple_key": {(1, 2): 3},
        "object_key": {BadRepr(): 1},
        "cyclic": cyclic,
        "deep": deep,
        "listed": [BadRepr(), {("k",): [cyclic]}],
    }


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("output", ["file", "stderr"])
def test_values_that_break_renderers_never_make_a_log_call_raise(tmp_path, capsys, fmt, output):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format=fmt, output=str(path) if output == "file" else "stderr"))
    log = get_logger()
    for name, value in _awkward_values().items():
        log.info(name, v=value)
    text = path.read_text() if output == "file" else capsys.readouterr().err
    lines = text.splitlines()
    assert [line for line in lines if "Traceback" in line] == []
    if fmt == "json":
        parsed = {line["event"]: line["v"] for line in map(json.loads, lines)}
        assert parsed["bad_repr"] == "<BadRepr object (repr raised RuntimeError)>"
        assert parsed["tuple_key"] == {"(1, 2)": 3}
        assert parsed["cyclic"] == {"self": "<recursion: contains itself>"}
        assert "<nested deeper than 100 levels>" in json.dumps(parsed["deep"])
        assert parsed["listed"][0] == "<BadRepr object (repr raised RuntimeError)>"
    else:
        assert len(lines) >= 6
        assert "<BadRepr object (repr raised RuntimeError)>" in text


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_drops_lines_and_says_so_once(capsys):
    configure_logging(LoggingSettings(format="json", output="/dev/full"))
    get_logger().info("one")
    get_logger().info("two")
    err = capsys.readouterr().err
    assert err.count("foundation-logging: cannot write log lines to '/dev/full'") == 1
    assert "No space left on device" in err


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(32, "Broken pipe")


def test_a_failing_stream_drops_lines_and_says_so_once(monkeypatch, capsys):
    configure_logging(LoggingSettings(format="console", output="stdout"))
    monkeypatch.setattr(sys, "stdout", _BrokenStream())
    get_logger().info("one")
    logging.getLogger("lib").warning("two")  # the standard library's records use the same sink
    err = capsys.readouterr().err
    assert err.count("foundation-logging: cannot write log lines to stdout (BrokenPipeError") == 1


def test_reconfiguring_while_threads_log_never_leaks_a_secret_nor_raises(tmp_path, capfd):
    """The old pipeline was torn down (structlog's defaults: print to stdout, no redaction) before
    the new one was installed, and its file closed under the writers' feet."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    configure_logging(LoggingSettings(format="json", output=str(first)))
    errors: list[str] = []
    stop = threading.Event()
    cached = structlog.get_logger()
    cached.info("first")  # cached on first use: it follows each new pipeline in place

    def worker() -> None:
        while not stop.is_set():
            try:
                structlog.get_logger().info("login", password="hunter2")
                cached.info("login", password="hunter2")
            except BaseException as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the races are a few bytecodes wide
    for thread in threads:
        thread.start()
    try:
        for i in range(300):
            fmt = "json" if i % 3 else "console"
            configure_logging(LoggingSettings(format=fmt, output=str(second if i % 2 else first)))
            time.sleep(0.0005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err
    assert errors == []
    assert "hunter2" not in first.read_text() + second.read_text()
    assert first.read_text().count("[REDACTED]") + second.read_text().count("[REDACTED]") > 0


def test_a_line_logged_while_reconfiguring_goes_through_a_redacting_pipeline(tmp_path, monkeypatch, capfd):
    """What another thread logs at any moment of configure_logging (here: while it opens the new
    output) is redacted: never written by structlog's defaults, which print to stdout as is."""
    from foundation_logging import _setup

    first = tmp_path / "a.log"
    configure_logging(LoggingSettings(format="json", output=str(first)))
    open_sink = _setup.open_sink

    def open_while_another_thread_logs(output: str, **options: bool):  # type: ignore[no-untyped-def]
        structlog.get_logger().info("login", password="hunter2")
        sink = open_sink(output, **options)
        structlog.get_logger().info("login", password="hunter2")
        return sink

    monkeypatch.setattr(_setup, "open_sink", open_while_another_thread_logs)
    configure_logging(LoggingSettings(format="json", output=str(tmp_path / "b.log")))
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err + first.read_text()
    assert first.read_text().count('"password":"[REDACTED]"') == 2


def test_a_writer_holding_the_old_sink_never_raises_after_the_swap(tmp_path):
    """A logger that fetched the old file's write method just before the swap wrote to a closed
    file: ValueError (or EBADF) in that thread."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    old = configure_logging(LoggingSettings(format="json", output=str(first)))
    write = old.sink.info
    configure_logging(LoggingSettings(format="json", output=str(second)))
    write(b'{"event":"in flight"}\n')
    assert second.read_text() == '{"event":"in flight"}\n'


def test_a_line_reaching_a_replaced_sink_is_written_by_its_successor(tmp_path, capsys):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    old = configure_logging(LoggingSettings(format="json", output=str(first)))
    configure_logging(LoggingSettings(format="console", output=str(second)))
    old.sink.info(b'{"event":"late bytes"}\n')  # what a logger built just before the swap does
    old.sink.info("late text")
    assert second.read_text().splitlines() == ['{"event":"late bytes"}', "late text"]
    assert first.read_text() == "" and capsys.readouterr().err == ""


def test_reconfiguring_many_times_holds_no_replaced_sink_and_no_descriptor(tmp_path, capsys):
    """Each replaced sink held its successor, so a logger cached on first use (it holds the
    sink of its day) held every sink made since: about 0.8 KB more per reconfiguration, for
    ever. Its late lines still reach the newest sink; descriptors and root handlers stay put."""
    import gc
    import weakref

    cached = structlog.get_logger()
    configure_logging(LoggingSettings(format="json", output=str(tmp_path / "0.log")))
    cached.info("first")  # cached on first use: bound to the first sink from now on
    fds = len(os.listdir("/proc/self/fd"))
    handlers = list(logging.getLogger().handlers)
    sinks = []
    for i in range(200):
        output = "stderr" if i % 3 == 0 else str(tmp_path / f"{i % 2}.log")
        sinks.append(weakref.ref(configure_logging(LoggingSettings(format="json", output=output)).sink))
    gc.collect()
    assert [i for i, sink in enumerate(sinks) if sink() is not None] == [199]  # the one in use
    assert len(os.listdir("/proc/self/fd")) == fds
    assert len(logging.getLogger().handlers) == len(handlers)
    cached.info("late")  # through the first sink, to the newest
    newest = tmp_path / "1.log"  # that of the last configure_logging (i = 199)
    assert json.loads(newest.read_text().splitlines()[-1])["event"] == "late"
    assert "late" not in capsys.readouterr().err


def test_closing_a_runtime_that_was_replaced_leaves_the_new_one_in_place(tmp_path, read_lines):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    old = configure_logging(LoggingSettings(format="json", output=str(first)))
    configure_logging(LoggingSettings(format="json", output=str(second)))
    old.close()
    get_logger().info("still configured")
    assert [line["event"] for line in read_lines(second)] == ["still configured"]


def test_output_names_the_streams_in_any_case_and_expands_the_home_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    configure_logging(LoggingSettings(format="json", output="STDERR"))
    get_logger().info("to stderr")
    assert '"event":"to stderr"' in capsys.readouterr().err
    assert not (tmp_path / "STDERR").exists()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    configure_logging(LoggingSettings(format="json", output="~/logs/app.log"))
    get_logger().info("to home")
    assert "to home" in Path(tmp_path / "home" / "logs" / "app.log").read_text()
    assert not (tmp_path / "~").exists()


class ReprWithControls:
    def __repr__(self) -> str:
        return "Thing\n2026-01-01T00:00:00.000Z [critical ] forged by repr"


@pytest.mark.parametrize("output", ["file", "stderr"])
def test_the_console_format_writes_one_line_per_event_whatever_its_text_holds(tmp_path, capsys, output):
    """Log injection: a client's text with a newline forged a whole console line, and ESC drove
    the terminal. Every control character is escaped; a traceback keeps its line breaks."""
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="console", output=str(path) if output == "file" else "stderr"))
    forged = "\n2026-01-01T00:00:00.000Z [critical ] forged"
    log = get_logger()
    log.info("login" + forged, user="bob\r" + forged, color="\x1b[2J\x1b[31mred", sep="a\u2028b\x85c")
    log.info("repr", thing=ReprWithControls(), things=[ReprWithControls()], **{"key" + forged: 1})
    logging.getLogger("lib").warning("stdlib" + forged)
    try:
        raise ValueError("bad\x1b[2J")
    except ValueError:
        log.exception("failed")
    text = path.read_text() if output == "file" else capsys.readouterr().err
    lines = text.splitlines()
    assert not [line for line in lines if "forged" in line and not line.startswith(("20", "ValueError"))]
    assert sum("forged" in line for line in lines) == 3  # each on its own event's line
    assert "\x1b" not in text and "\r" not in text and "\u2028" not in text and "\x85" not in text
    assert "login\\n2026-01-01T00:00:00.000Z [critical ] forged" in lines[0]
    assert "color='\\x1b[2J\\x1b[31mred'" in lines[0] and "sep='a\\u2028b\\x85c'" in lines[0]
    assert "thing=Thing\\n2026" in lines[1] and "things=[Thing\\n2026" in lines[1]
    assert "key\\n2026" in lines[1]
    assert "stdlib\\n2026" in lines[2]
    assert lines[3].endswith("[error    ] failed") and lines[4] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad\\x1b[2J"


@settings(max_examples=300, deadline=None)
@given(
    event=st.text(),
    values=st.dictionaries(
        st.text(min_size=1),
        st.text() | st.integers() | st.lists(st.text(), max_size=3) | st.binary(max_size=8),
        max_size=4,
    ),
)
def test_a_console_line_is_one_line_without_control_characters(event, values):
    render = SafeConsole(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=plain_traceback))
    line = render(None, "info", {"event": event, **values, "level": "info", "timestamp": "t"})
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line), repr(line)


@pytest.mark.parametrize("key", ["exception", "stack"])
def test_a_call_site_exception_or_stack_key_cannot_forge_a_console_line(tmp_path, key):
    """structlog's console renderer writes these keys as they are, on lines of their own: a
    client's text passed as ``exception=str(exc)`` made a line that looked like another event's,
    and ``exception=""`` an empty one. They are written on the event's line, escaped."""
    path = tmp_path / "console.log"
    configure_logging(LoggingSettings(format="console", output=str(path)))
    log = get_logger()
    log.info("job failed", **{key: "2026-01-01T00:00:00.000Z [critical ] forged"})
    log.info("empty", **{key: ""})
    log.info("multi", **{key: "a\nb"})
    log.info("object", **{key: ValueError("v")})
    lines = path.read_text().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith(f"job failed {key}=2026-01-01T00:00:00.000Z [critical ] forged")
    assert lines[1].endswith(f"empty {key}=")
    assert lines[2].endswith(f"multi {key}='a\\nb'")
    assert lines[3].endswith(f"object {key}=ValueError('v')")
