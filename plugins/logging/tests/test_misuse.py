"""A log call that misuses the API (``%``-arguments that do not fit the event, a message whose
``str`` raises) still writes its line, saying what was wrong, and never raises into the caller."""

from __future__ import annotations

import asyncio
import logging

import pytest
from foundation_logging import LoggingSettings, configure_logging, get_logger


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("str boom")

    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


NOT_ENOUGH = "TypeError: not enough arguments for format string"
NOT_A_NUMBER = "TypeError: %d format: a real number is required, not str"
NOT_CONVERTED = "TypeError: not all arguments converted during string formatting"
MISFITS = [
    (("%s and %s", 1), "%s and %s", NOT_ENOUGH, "(1,)"),
    (("%d items", "many"), "%d items", NOT_A_NUMBER, "('many',)"),
    (("%(name)s", {"other": 1}), "%(name)s", "KeyError: 'name'", "({'other': 1},)"),
    (("no placeholder", 1), "no placeholder", NOT_CONVERTED, "(1,)"),
]


@pytest.mark.parametrize(("call", "event", "error", "args"), MISFITS)
def test_structlog_arguments_that_do_not_fit_the_event_still_write_the_line(
    tmp_path, read_lines, call, event, error, args
):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path)))
    log = get_logger()
    log.warning(*call, request="r1")
    log.log(logging.ERROR, *call)
    asyncio.run(log.ainfo(*call))
    lines = read_lines(path)
    assert [line["level"] for line in lines] == ["warning", "error", "info"]
    for line in lines:
        assert (line["event"], line["format_error"], line["format_args"]) == (event, error, args)
    assert lines[0]["request"] == "r1"


def test_structlog_arguments_that_fit_are_interpolated_as_before(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path), level="info"))
    log = get_logger()
    log.info("%s of %d", "one", 2)
    log.info("%(n)s", {"n": "mapped"})
    log.debug("%s %s", "below the level")  # a no-op, as before
    log.exception("%s", "in error")
    assert [line["event"] for line in read_lines(path)] == ["one of 2", "mapped", "in error"]


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize(
    ("msg", "args", "event", "error"),
    [
        ("%s and %s", (1,), "%s and %s", NOT_ENOUGH),
        ("%d items", ("many",), "%d items", NOT_A_NUMBER),
        (BadStr(), (), "<BadStr object (repr raised RuntimeError)>", "RuntimeError: str boom"),
    ],
)
def test_a_stdlib_record_whose_message_cannot_be_made_is_still_written(
    tmp_path, capsys, monkeypatch, fmt, msg, args, event, error
):
    path = tmp_path / "app.log"
    runtime = configure_logging(LoggingSettings(format=fmt, output=str(path)))
    lib = logging.getLogger("thirdparty")
    monkeypatch.setattr(lib, "propagate", False)  # pytest's own capture handler raises on it
    monkeypatch.setattr(lib, "handlers", [runtime.handler])
    lib.warning(msg, *args)
    lib.warning("next")
    text = path.read_text()
    assert "--- Logging error ---" not in capsys.readouterr().err
    first, second = text.splitlines()
    assert event in first and error in first and "next" in second
