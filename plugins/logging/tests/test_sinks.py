"""File outputs and log rotation: with ``reopen`` a file output follows its path when logrotate
renames or deletes the file; without it (the default) it keeps writing to the file it opened."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from foundation_logging import LoggingSettings, configure_logging, get_logger, plugin

from foundation_core import Config, Hub
from foundation_core._cli import main
from foundation_core.errors import ConfigError


def _events(path: Path, read_lines) -> list[str]:
    return [line["event"] for line in read_lines(path)] if path.exists() else []


def test_with_reopen_a_renamed_file_is_followed_by_a_new_one(tmp_path, read_lines):
    path, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    configure_logging(LoggingSettings(format="json", output=str(path), reopen=True))
    log = get_logger()
    log.info("before")
    os.rename(path, rotated)  # what logrotate does (then creates the file, or leaves it to us)
    log.info("after")
    logging.getLogger("lib").warning("stdlib after")  # the standard library's records too
    assert _events(rotated, read_lines) == ["before"]
    assert _events(path, read_lines) == ["after", "stdlib after"]


def test_with_reopen_a_file_created_by_logrotate_is_written_to(tmp_path, read_lines):
    """logrotate's create mode: rename, then create an empty file with the configured mode."""
    path, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    configure_logging(LoggingSettings(format="json", output=str(path), reopen=True))
    get_logger().info("before")
    os.rename(path, rotated)
    path.touch(mode=0o640)
    created = path.stat().st_ino
    get_logger().info("after")
    assert path.stat().st_ino == created
    assert _events(rotated, read_lines) == ["before"] and _events(path, read_lines) == ["after"]


def test_with_reopen_a_deleted_file_is_created_again(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path), reopen=True))
    get_logger().info("lost with the file")
    path.unlink()
    get_logger().info("after")
    assert _events(path, read_lines) == ["after"]


def test_without_reopen_lines_go_on_to_the_renamed_file(tmp_path, read_lines):
    """The default: one descriptor, no stat per line; rotate with copytruncate."""
    assert LoggingSettings().reopen is False
    path, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    configure_logging(LoggingSettings(format="json", output=str(path)))
    get_logger().info("before")
    os.rename(path, rotated)
    get_logger().info("after")
    assert _events(rotated, read_lines) == ["before", "after"] and not path.exists()


def test_a_path_that_cannot_be_reopened_keeps_the_old_file_and_says_so_once(tmp_path, read_lines, capsys):
    path, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    configure_logging(LoggingSettings(format="json", output=str(path), reopen=True))
    get_logger().info("one")
    os.rename(path, rotated)
    path.mkdir()  # the path now names something no line can be appended to
    get_logger().info("two")
    get_logger().info("three")
    assert _events(rotated, read_lines) == ["one", "two", "three"]
    err = capsys.readouterr().err
    assert err.count(f"cannot write log lines to {str(path)!r} (reopening it after rotation)") == 1
    path.rmdir()
    get_logger().info("four")  # the path is free again: followed
    assert _events(path, read_lines) == ["four"]


def test_a_failed_reopen_does_not_hide_a_later_failed_write(tmp_path, capsys):
    """One flag said both once: after a reopen failure, a full disk went unsaid."""
    from foundation_logging import _sinks

    path, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    configure_logging(LoggingSettings(format="json", output=str(path), reopen=True))
    get_logger().info("one")
    os.rename(path, rotated)
    path.mkdir()
    get_logger().info("two")  # cannot reopen: said
    path.rmdir()
    get_logger().info("three")  # reopened
    assert "(reopening it after rotation)" in capsys.readouterr().err
    [sink] = [s for s in _sinks._LOCKED if getattr(s, "path", None) == str(path)]

    def full(line: bytes) -> int:
        raise OSError(28, "No space left on device")

    sink._raw = full
    get_logger().info("four")
    get_logger().info("five")
    err = capsys.readouterr().err
    assert err.count(f"cannot write log lines to {str(path)!r} (OSError: ") == 1, err
    assert "No space left on device" in err


def test_a_relative_path_stays_where_it_was_opened_after_a_chdir(tmp_path, monkeypatch, read_lines):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    configure_logging(LoggingSettings(format="json", output="app.log", reopen=True))
    get_logger().info("here")
    monkeypatch.chdir(tmp_path / "elsewhere")
    get_logger().info("still here")
    assert _events(tmp_path / "app.log", read_lines) == ["here", "still here"]
    assert not (tmp_path / "elsewhere" / "app.log").exists()


def test_rotating_while_threads_log_loses_and_tears_no_line(tmp_path, read_lines):
    path = tmp_path / "app.log"
    configure_logging(LoggingSettings(format="json", output=str(path), reopen=True))
    threads, per_thread, rotations = 4, 300, 20
    written = [threading.Event() for _ in range(threads)]

    def work(n: int) -> None:
        log = get_logger().bind(thread=n)
        for i in range(per_thread):
            log.info("line", i=i)
            if i == per_thread // 2:
                written[n].set()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for r in range(rotations):
        if path.exists():  # renamed after a line was logged into it, or not created yet
            os.rename(path, tmp_path / f"app.log.{r}")
        if r == 0:
            for event in written:
                event.wait(30)
    for w in workers:
        w.join()
    seen = sorted(
        (line["thread"], line["i"])
        for f in tmp_path.glob("app.log*")
        for line in read_lines(f)  # a torn line would fail to parse
    )
    assert seen == sorted((n, i) for n in range(threads) for i in range(per_thread))


def test_reopen_is_a_config_key_of_the_logging_section(tmp_path, read_lines):
    path = tmp_path / "app.log"
    config = Config({"logging": LoggingSettings(format="json", output=str(path), reopen=True)})
    plugin._configure(config, Hub(env={}))
    get_logger().info("before")
    os.rename(path, tmp_path / "app.log.1")
    get_logger().info("after")
    assert _events(path, read_lines) == ["after"]


def test_an_output_with_a_nul_character_is_a_config_error(tmp_path, capsys):
    """open() raised ValueError('embedded null byte'): the plugin was isolated with a warning
    and the process ran with logging not configured at all."""
    with pytest.raises(ValueError, match=r"logging\.output must not contain a NUL character"):
        LoggingSettings(output="app\x00.log")
    settings = tmp_path / "settings.toml"
    settings.write_text('[logging]\noutput = "app\\u0000.log"\n')
    status = main(["--config", str(settings), "breakers"])
    err = capsys.readouterr().err
    assert status != 0 and "logging.output must not contain a NUL character" in err
    assert "failed in hook" not in err


def test_an_output_under_a_file_says_which_part_is_not_a_directory(tmp_path):
    """makedirs said 'File exists' of a path that does not exist."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    bad = Config({"logging": LoggingSettings(output=str(blocker / "app.log"))}, {"logging.output": "--set"})
    with pytest.raises(ConfigError) as info:
        plugin._configure(bad, Hub(env={}))
    [problem] = info.value.problems
    assert (
        problem.message
        == f"cannot open {str(blocker / 'app.log')!r} for appending: {blocker} is not a directory"
    )


def _in_child(body) -> int:
    """Run ``body`` in a forked child; its exit status (a child that hangs is ended by SIGALRM,
    a guard against a deadlock only, far past what the body takes)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            signal.alarm(60)
            body()
            code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _held_by_a_thread(sink, line: bytes):
    """Start a thread writing ``line`` through ``sink`` and stop it inside the write (the sink's
    lock held); returns the thread and the event that lets it go on."""
    entered, release = threading.Event(), threading.Event()

    def blocked(*args) -> None:
        entered.set()
        release.wait()

    thread = threading.Thread(target=sink.msg, args=(line,))
    return thread, entered, release, blocked


def test_a_child_forked_while_a_thread_writes_a_line_can_log(tmp_path):
    """A thread of the parent holding a sink's lock at os.fork() (writing a line: reopen, or a
    stream) left it held for ever in the child, whose first line then hung."""
    from foundation_logging._sinks import FileSink, StreamSink

    path = tmp_path / "app.log"
    file_sink = FileSink(str(path), reopen=True)
    real = file_sink._raw
    thread, entered, release, blocked = _held_by_a_thread(file_sink, b"parent\n")
    file_sink._raw = blocked
    thread.start()
    try:
        assert entered.wait(30)

        def child() -> None:
            file_sink._raw = real
            file_sink.msg(b"child\n")

        assert _in_child(child) == 0
    finally:
        release.set()
        thread.join()
    assert path.read_bytes() == b"child\n"

    class Blocking:
        def write(self, text: str) -> None:
            entered.set()
            release.wait()

        def flush(self) -> None:
            pass

    entered.clear()
    release.clear()
    stream_sink = StreamSink("stdout")
    saved = sys.stdout
    sys.stdout = Blocking()  # type: ignore[assignment]
    thread = threading.Thread(target=stream_sink.msg, args=("parent",))
    thread.start()
    try:
        assert entered.wait(30)

        def stream_child() -> None:
            fd = os.open(tmp_path / "child.out", os.O_WRONLY | os.O_CREAT)
            sys.stdout = open(fd, "w")  # noqa: SIM115 - the child exits at once
            stream_sink.msg("child")
            sys.stdout.flush()

        assert _in_child(stream_child) == 0
    finally:
        release.set()
        thread.join()
        sys.stdout = saved
    assert (tmp_path / "child.out").read_text() == "child\n"


def test_a_signal_handler_that_logs_while_a_line_is_written_does_not_hang(tmp_path):
    """A signal handler runs in the thread it interrupts: one that logs, run while that thread
    was inside a reopening sink's write (its lock held), waited for the lock for ever."""
    from foundation_logging._sinks import FileSink

    path = tmp_path / "app.log"

    def child() -> None:
        sink = FileSink(str(path), reopen=True)
        real = sink._raw
        signal.signal(signal.SIGUSR1, lambda *_: sink.msg(b"handler\n"))

        def interrupted(line: bytes) -> None:
            sink._raw = real
            os.kill(os.getpid(), signal.SIGUSR1)  # its handler runs before this returns
            real(line)

        sink._raw = interrupted
        sink.msg(b"line\n")

    assert _in_child(child) == 0
    assert sorted(path.read_bytes().splitlines()) == [b"handler", b"line"]
