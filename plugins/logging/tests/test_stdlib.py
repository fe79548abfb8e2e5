"""The standard library's logging goes through the same pipeline, format and redaction."""

from __future__ import annotations

import json
import logging

from foundation_logging import REDACTED, LoggingSettings, bound_context, configure_logging, get_logger


def test_stdlib_records_come_out_as_the_same_json_lines(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path)))
    get_logger().info("from structlog")
    with bound_context(request_id="r9"):
        logging.getLogger("thirdparty.http").warning("GET %s -> %d", "/x", 503, extra={"password": "p"})
    ours, theirs = read_lines(path)
    assert ours["event"] == "from structlog"
    assert theirs["event"] == "GET /x -> 503"
    assert theirs["level"] == "warning"
    assert theirs["logger"] == "thirdparty.http"
    assert theirs["request_id"] == "r9"
    assert theirs["password"] == REDACTED
    assert set(ours) >= {"timestamp", "level", "event"} and "timestamp" in theirs


def test_stdlib_records_below_the_level_are_dropped(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path), level="error"))
    logging.getLogger("lib").warning("dropped")
    logging.getLogger("lib").error("kept")
    assert [line["event"] for line in read_lines(path)] == ["kept"]


def test_stdlib_exceptions_carry_their_traceback(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path)))
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("lib").exception("division")
    [line] = read_lines(path)
    assert "ZeroDivisionError" in line["exception"]


def test_stdlib_routing_can_be_turned_off(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers)
    configure_logging(LoggingSettings(format="json", output=str(tmp_path / "a.log"), stdlib=False))
    assert root.handlers == before


def test_close_puts_back_the_root_handlers_and_level(tmp_path):
    root = logging.getLogger()
    marker = logging.NullHandler()
    root.handlers[:] = [marker]
    root.setLevel(logging.CRITICAL)
    runtime = configure_logging(LoggingSettings(format="json", output=str(tmp_path / "a.log")))
    assert len(root.handlers) == 2  # a NullHandler is not a console handler: kept
    runtime.close()
    assert (root.handlers, root.level) == ([marker], logging.CRITICAL)


def test_console_handlers_are_replaced_and_other_handlers_kept(tmp_path):
    import sys

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    elsewhere = logging.FileHandler(tmp_path / "other.log")
    root.handlers[:] = [console, elsewhere]
    try:
        configure_logging(LoggingSettings(format="json", output=str(tmp_path / "a.log")))
        assert console not in root.handlers
        assert elsewhere in root.handlers
        logging.getLogger("lib").warning("both")
        assert "both" in (tmp_path / "other.log").read_text()
    finally:
        elsewhere.close()


def test_records_still_reach_pytest_caplog(tmp_path, caplog):
    configure_logging(LoggingSettings(format="json", output=str(tmp_path / "a.log")))
    logging.getLogger("lib").warning("captured")
    assert "captured" in caplog.text


def test_a_record_another_handler_formatted_first_has_no_message_or_asctime_key(tmp_path):
    """A handler of the root logger kept beside ours (a file handler, pytest's capture) formats
    the record first, which sets ``message`` and ``asctime`` on it: they were written as keys of
    the line (the event twice, a second, local timestamp) as if they were the record's extra."""
    path = tmp_path / "app.log"
    other = logging.FileHandler(tmp_path / "other.log")
    other.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(other)
    try:
        for fmt in ("json", "console"):
            configure_logging(LoggingSettings(format=fmt, output=str(path)))
            logging.getLogger("lib").warning("hello %s", fmt, extra={"user": "ann"})
    finally:
        root.removeHandler(other)
        other.close()
    json_line, console_line = path.read_text().splitlines()
    line = json.loads(json_line)
    assert (line["event"], line["user"]) == ("hello json", "ann")
    assert "message" not in line and "asctime" not in line
    assert "user=ann" in console_line and "message=" not in console_line and "asctime=" not in console_line
    assert "hello json" in (tmp_path / "other.log").read_text()  # the other handler still gets it
