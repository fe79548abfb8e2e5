"""``foundation serve`` and its stop signals: SIGHUP drains as SIGTERM does, a second signal ends
the drain at once and still releases every shared-memory object, a signal while the models load
ends the process cleanly, and a drain that gives up says how many requests it abandoned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from foundation_ml import InferenceClient
from foundation_ml._client import registered_hub
from foundation_ml._process import ServerProcess, shm_entries
from foundation_ml.errors import InferenceError

SLOW_MODELS = textwrap.dedent(
    """
    import os, pathlib, time
    import torch

    class Slow(torch.nn.Module):
        foundation_signature = {"inputs": {"x": "FP32[-1, 4]"}, "outputs": {"y": "FP32[-1, 4]"}}

        def forward(self, x):
            seconds = float(x[0, 0])
            if seconds >= 1:  # the warm-up's example inputs sleep less: only a test's request
                print(f"slow: the model sleeps {seconds:g} s", flush=True)
            if seconds > 0:
                time.sleep(seconds)
            return x * 2

    def build():
        return Slow()

    def build_slowly():
        pathlib.Path(os.environ["SLOW_LOADING"]).write_text("loading")
        time.sleep(60)
        return Slow()
    """
)


@pytest.fixture
def slow_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "slow_models.py").write_text(SLOW_MODELS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return tmp_path


def _infer_in_background(server: ServerProcess, name: str, seconds: float) -> list[object]:
    """Send one request whose model call sleeps ``seconds``; the list gets its outcome. Returns
    once the model runs it (the server says so)."""
    got: list[object] = []

    def call() -> None:
        try:
            with InferenceClient(name, transport="shm", hub=registered_hub(), timeout=30) as client:
                x = np.full((1, 4), seconds, np.float32)
                got.append(client.infer("slow", {"x": x}))
        except InferenceError as exc:
            got.append(exc)

    threading.Thread(target=call, daemon=True).start()
    _until(server, f"slow: the model sleeps {seconds:g} s")
    return got


def _until(server: ServerProcess, line: str, limit: float = 60.0) -> float:
    """Wait for ``line`` in the server's output; returns when it came (``time.monotonic()``)."""
    deadline = time.monotonic() + limit
    while line not in server.output:
        assert time.monotonic() < deadline, f"no {line!r} in {limit:g} s:\n{server.output}"
        time.sleep(0.01)
    return time.monotonic()


# The model sleeps long past the 5 s drain: the drain can only end by the signal, or by timing out.
# Which of the two ended it, the runtime's warning says (a bound on the time from the signal to
# the server's last line told them apart, and failed on a loaded machine).
_MODEL_S = 30.0
_HURRIED = "in-flight request(s): told to stop at once"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_ends_the_drain_and_still_releases_every_object(
    slow_models: Path, name: str, sig: signal.Signals
) -> None:
    with ServerProcess(["--transport", "shm", "--name", name, "--model", "slow=slow_models:build"]) as server:
        got = _infer_in_background(server, name, _MODEL_S)
        assert server.proc is not None
        server.proc.send_signal(sig)
        _until(server, "signal again to stop at once")
        server.proc.send_signal(sig)
        _until(server, "released the transport", 60)
        assert server.proc.wait(30) == 0, server.output  # a third signal would end it at once
    assert "draining 1 in-flight request(s) (signal again to stop at once)" in server.output
    assert "abandoned 1 in-flight request(s)" in server.output, server.output
    assert "stopped: drained" not in server.output
    assert _HURRIED in server.output and "drain timed out" not in server.output, server.output
    assert shm_entries(name) == [], server.output
    del got


@pytest.mark.slow
def test_sigquit_stops_at_once_abandoning_in_flight_and_still_releases_every_object(
    slow_models: Path, name: str
) -> None:
    """Its default (core dump) left every /dev/shm object of the server behind."""
    with ServerProcess(["--transport", "shm", "--name", name, "--model", "slow=slow_models:build"]) as server:
        got = _infer_in_background(server, name, _MODEL_S)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGQUIT)
        _until(server, "released the transport", 60)
        assert server.proc.wait(30) == 0, server.output  # a second SIGQUIT: the default, a core dump
    assert "abandoned 1 in-flight request(s)" in server.output, server.output
    assert "draining" not in server.output
    assert _HURRIED in server.output and "drain timed out" not in server.output, server.output
    assert shm_entries(name) == [], server.output
    del got


@pytest.mark.slow
def test_sighup_drains_and_releases_as_sigterm_does(name: str) -> None:
    server = ServerProcess(["--transport", "shm", "--name", name]).start()
    assert server.stop(signal.SIGHUP) == 0, server.output
    assert "stopped: drained in-flight requests and released the transport" in server.output
    assert shm_entries(name) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT])
def test_a_stop_signal_while_the_models_load_exits_128_plus_its_number_naming_it(
    slow_models: Path, name: str, sig: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = slow_models / "loading"
    monkeypatch.setenv("SLOW_LOADING", str(marker))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "foundation_core",
            "serve",
            "--name",
            name,
            "--model",
            "slow=slow_models:build_slowly",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, out + err
    assert f"foundation serve: stopped by {sig.name} while loading models (nothing was served)" in err
    assert "Traceback" not in err
    assert shm_entries(name) == []


# --- the metrics file ------------------------------------------------------------------------------


def test_a_metrics_file_that_is_a_directory_is_refused_naming_the_option(tmp_path: Path, name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "foundation_core", "serve", "--name", name, "--metrics-file", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"error: --metrics-file {tmp_path}: is a directory" in proc.stderr
    assert "loaded demo" not in proc.stdout


@pytest.mark.parametrize("where", ["dir", "missing_dir", "device"])
def test_serve_refuses_a_metrics_file_it_could_never_write_before_starting(
    tmp_path: Path, name: str, where: str
) -> None:
    """``runtime.serve(metrics_file=...)`` naming a directory, a device or a place in a missing
    directory served on, warning once ('could not write the metrics file ...') and never writing
    it, where ``foundation serve --metrics-file`` refuses it before loading anything. (A SIGTERM
    ends the serve the old code started, so that its failure does not hang.)"""
    from foundation_ml import FunctionModel, MLRuntime

    path, told = {
        "dir": (str(tmp_path), "is a directory (name a file in it)"),
        "missing_dir": (str(tmp_path / "gone" / "m.prom"), "cannot write it: No such file or directory"),
        "device": ("/dev/null", "not a regular file (a device, a FIFO or a socket)"),
    }[where]
    with MLRuntime(registered_hub()) as rt:
        rt.register_model(
            "m", FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})
        )
        stopper = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
        stopper.start()
        try:
            with pytest.raises(ValueError) as caught:
                rt.serve("inproc", name, metrics_file=path)
        finally:
            stopper.cancel()
        assert str(caught.value) == f"serve: metrics_file {path!r}: {told} (nothing was started)"
        assert rt.servers == []


@pytest.mark.slow
def test_a_users_tmp_file_beside_the_metrics_file_is_left_alone(tmp_path: Path, name: str) -> None:
    mine = tmp_path / "m.prom.tmp"
    mine.write_text("the user's own file")
    server = ServerProcess(["--transport", "shm", "--name", name, "--metrics-file", str(tmp_path / "m.prom")])
    server.start()
    assert server.stop() == 0, server.output
    assert mine.read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prom", "m.prom.tmp"]  # no temporary left


def _remove_while_written(where: Path) -> None:
    """Remove the directory of a metrics file the server rewrites every second: a write between
    the unlink and the rmdir (its temporary file, or the file renamed back) made the rmdir fail
    ENOTEMPTY now and then; empty it again until the rmdir wins."""
    deadline = time.monotonic() + 60
    while True:
        for entry in where.iterdir():
            entry.unlink(missing_ok=True)
        try:
            where.rmdir()
            return
        except OSError:  # written again meanwhile
            assert time.monotonic() < deadline, sorted(where.iterdir())


@pytest.mark.slow
def test_a_metrics_directory_removed_while_serving_warns_once_and_the_stop_stays_clean(
    tmp_path: Path, name: str
) -> None:
    where = tmp_path / "gone"
    where.mkdir()
    server = ServerProcess(["--transport", "shm", "--name", name, "--metrics-file", str(where / "m.prom")])
    server.start()
    _remove_while_written(where)
    time.sleep(3.5)  # three periodic writes fail, and the final one
    assert server.stop() == 0, server.output
    assert server.output.count("could not write the metrics file") == 1, server.output
    assert "stopped: drained in-flight requests" in server.output


def test_close_unloads_the_models_even_if_the_drained_callback_raises() -> None:
    from foundation_ml import FunctionModel, MLRuntime

    closed: list[str] = []

    class Model(FunctionModel):
        def close(self) -> None:
            closed.append("closed")

    rt = MLRuntime(registered_hub())
    rt.register_model("m", Model(lambda x: {"y": x}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"}))

    def drained() -> None:
        raise OSError("the metrics directory went away")

    with pytest.raises(OSError):
        rt.close(drained=drained)
    assert closed == ["closed"]


def test_serve_from_another_thread_is_refused_saying_what_to_do_and_starts_nothing(name: str) -> None:
    """``runtime.serve()`` in a worker thread failed with signal.signal's bare ValueError 'signal
    only works in main thread of the main interpreter', saying neither which call nor the way out."""
    from foundation_core.errors import FoundationError
    from foundation_ml import FunctionModel, MLRuntime

    with MLRuntime(registered_hub()) as rt:
        rt.register_model(
            "m", FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})
        )
        raised: list[BaseException] = []

        def serve() -> None:
            try:
                rt.serve("inproc", name)
            except BaseException as exc:
                raised.append(exc)

        worker = threading.Thread(target=serve)
        worker.start()
        worker.join(30)
        assert [type(e) for e in raised] == [FoundationError]
        assert str(raised[0]).startswith(
            f"serve('inproc', {name!r}) waits for SIGINT/SIGTERM, whose handlers only the main thread can set"
        )
        assert rt.servers == []


@pytest.mark.slow
def test_a_reader_of_serves_output_that_goes_away_is_no_error(name: str) -> None:
    """``foundation serve | grep -m1 ready``: the graceful stop still exits 0, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_core", "serve", "--transport", "shm", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ready:"):
            break
    proc.stdout.close()  # the reader goes away
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
