"""The runtime over the shm transport: outputs equal the direct PyTorch call (and inproc's),
batching across client processes returns each its own rows, shutdown drains and leaves nothing
in /dev/shm. Skipped only where no ``shm`` transport is registered (foundation-shm not installed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import foundation_core
from foundation_core import Hub
from foundation_ml import FunctionModel, InferenceClient, MLRuntime
from foundation_ml._process import ServerProcess, shm_entries

torch = pytest.importorskip("torch")

DEMO = "foundation_torch.demo:build_demo"


@pytest.fixture
def demo_runtime(shm_hub: Hub, name: str) -> Iterator[MLRuntime]:
    rt = MLRuntime(shm_hub)
    rt.register_model("demo", DEMO)
    yield rt
    rt.close()


def direct(x: np.ndarray) -> np.ndarray:
    from foundation_torch.demo import build_demo

    with torch.inference_mode():
        return build_demo()(torch.from_numpy(x)).numpy()


def x_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 784)).astype(np.float32)


def test_shm_and_inproc_give_the_direct_outputs(demo_runtime: MLRuntime, shm_hub: Hub, name: str) -> None:
    demo_runtime.start("shm", name)
    demo_runtime.start("inproc", name)
    x = x_rows(5)
    with (
        InferenceClient(name, transport="shm", hub=shm_hub) as shm,
        InferenceClient(name, transport="inproc", hub=shm_hub) as inproc,
    ):
        via_shm, via_inproc = shm.infer("demo", {"x": x})["y"], inproc.infer("demo", {"x": x})["y"]
    np.testing.assert_array_equal(via_shm, direct(x))
    np.testing.assert_array_equal(via_inproc, direct(x))


def test_errors_cross_shm_typed(demo_runtime: MLRuntime, shm_hub: Hub, name: str) -> None:
    from foundation_ml.errors import InvalidInput, ModelNotFound

    demo_runtime.start("shm", name)
    with InferenceClient(name, transport="shm", hub=shm_hub) as client:
        with pytest.raises(ModelNotFound, match="serving: demo"):
            client.infer("nope", {"x": x_rows(1)})
        assert client.stats()["server"]["transports"]["shm"]["channels"] > 0  # the transport's own
        with pytest.raises(InvalidInput, match=r"expected inputs: x: FP32\[-1, 784\]"):
            client.infer("demo", {"x": np.zeros((1, 3), np.float32)})
        with pytest.raises(InvalidInput, match="input x: numpy dtype object has no protocol datatype"):
            client.infer("demo", {"x": np.array([[None] * 784])})  # refused before it is sent
        np.testing.assert_array_equal(client.infer("demo", {"x": x_rows(1)})["y"], direct(x_rows(1)))


def test_close_releases_every_shm_object(demo_runtime: MLRuntime, name: str) -> None:
    demo_runtime.start("shm", name)
    assert shm_entries(name), "the server should have created its segment"
    demo_runtime.close()
    assert shm_entries(name) == []


@pytest.mark.slow
def test_cli_serve_infer_stats_then_sigterm_leaves_nothing(shm_hub: Hub, name: str, tmp_path: Path) -> None:
    with ServerProcess(["--transport", "shm", "--name", name]) as server:
        run = [sys.executable, "-m", "foundation_core"]
        infer = subprocess.run(
            [*run, "infer", "--name", name, "--json"], capture_output=True, text=True, timeout=120
        )
        assert infer.returncode == 0, infer.stderr
        doc = json.loads(infer.stdout)
        example = x_rows(1)  # `foundation infer` sends the example input of the signature (seed 0)
        np.testing.assert_array_equal(np.asarray(doc["outputs"]["y"]["data"], np.float32), direct(example))
        stats = subprocess.run([*run, "stats", name, "--json"], capture_output=True, text=True, timeout=120)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["models"]["demo"]["requests"] == 1
        x = x_rows(2, seed=7)
        np.savez(tmp_path / "in.npz", x=x)
        (tmp_path / "in.json").write_text(json.dumps({"x": x.tolist()}))
        for path in ("in.npz", "in.json"):
            cmd = [*run, "infer", "--name", name, "--input", str(tmp_path / path), "--json"]
            got = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert got.returncode == 0, got.stderr
            y = np.asarray(json.loads(got.stdout)["outputs"]["y"]["data"], np.float32)
            np.testing.assert_array_equal(y, direct(x))
        bad = subprocess.run(
            [*run, "infer", "--name", name, "--model", "nope"], capture_output=True, text=True
        )
        assert bad.returncode == 1 and "ModelNotFound" in bad.stderr
        table = subprocess.run([*run, "stats", name], capture_output=True, text=True, timeout=120).stdout
        assert "demo" in table and "p99 µs" in table
        assert server.stop(signal.SIGTERM) == 0, server.output
    assert shm_entries(name) == []


def _caller(name: str, seed: int, out: dict[int, bool], hub: Hub) -> None:
    with InferenceClient(name, transport="shm", hub=hub) as client:
        ok = True
        for j in range(30):
            x = x_rows(1 + j % 3, seed * 100 + j)
            # stacked rows may take another BLAS path: equal to float32 rounding, not bit-exact;
            # another caller's rows would differ by O(1)
            ok &= bool(np.allclose(client.infer("demo", {"x": x})["y"], direct(x), rtol=1e-5, atol=1e-6))
        out[seed] = ok


@pytest.mark.slow
def test_batched_server_returns_each_caller_its_own_rows(shm_hub: Hub, name: str) -> None:
    args = ["--transport", "shm", "--name", name, "--max-batch-size", "8", "--max-wait-us", "2000"]
    with ServerProcess(args) as server:
        out: dict[int, bool] = {}
        threads = [threading.Thread(target=_caller, args=(name, k, out, shm_hub)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with InferenceClient(name, transport="shm", hub=shm_hub) as client:
            stats = client.stats()["models"]["demo"]
        assert server.stop() == 0
    assert out == {0: True, 1: True, 2: True, 3: True}
    assert stats["requests"] == 120 and stats["errors"] == 0
    assert stats["batching"]["enabled"] is True
    assert shm_entries(name) == []


_LOOP_CLIENT = """
import sys, time, numpy as np
from foundation_ml import InferenceClient
ok = bad = 0
rng = np.random.default_rng(int(sys.argv[2]))
with InferenceClient(sys.argv[1], timeout=10) as client:
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        x = rng.standard_normal((1, 8)).astype(np.float32)
        if np.array_equal(client.infer("double", {"x": x})["y"], x * 2):
            ok += 1
        else:
            bad += 1
print(ok, bad)
"""


@pytest.mark.slow
def test_a_batched_server_under_four_client_processes_answers_every_request_with_its_own_rows(
    shm_hub: Hub, name: str
) -> None:
    """Closed loops from 4 processes for 2 s against a batching server, whose answers come from
    the serving thread (full batches, flush) and from the batcher thread (late ones): the steady
    state runs the C lanes on both sides. Every request is answered, with its own rows."""

    rt = MLRuntime(shm_hub)
    model = FunctionModel(lambda x: x * 2, inputs={"x": "FP32[-1, 8]"}, outputs={"y": "FP32[-1, 8]"})
    rt.register_model("double", model, max_batch_size=4, max_wait_us=200)
    rt.start("shm", name)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _LOOP_CLIENT, name, str(k), "2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(4)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        stats = rt.stats()["models"]["double"]
    finally:
        rt.close()
    for (out, err), p in zip(results, procs, strict=True):
        assert p.returncode == 0, err[-2000:]
        ok, bad = map(int, out.split())
        assert ok > 100 and bad == 0
    answered = sum(int(out.split()[0]) for out, _ in results)
    assert stats["requests"] == answered and stats["errors"] == 0
    assert stats["mean_batch_size"] > 1
    assert shm_entries(name) == []


@pytest.mark.slow
def test_sigterm_answers_a_queued_request_before_exiting(shm_hub: Hub, name: str) -> None:
    """A request waiting for its batch to fill (10 s) is run at once by the drain, answered, then exit 0."""
    args = ["--transport", "shm", "--name", name, "--max-batch-size", "8", "--max-wait-us", "10000000"]
    with ServerProcess(args) as server:
        got: list[object] = []
        x = x_rows(2)

        def call() -> None:
            with InferenceClient(name, transport="shm", hub=shm_hub, timeout=60) as client:
                try:
                    got.append(client.infer("demo", {"x": x})["y"])
                except Exception as exc:
                    got.append(exc)

        t = threading.Thread(target=call)
        t.start()
        with InferenceClient(name, transport="shm", hub=shm_hub) as watcher:
            give_up = time.monotonic() + 60  # a bound for a broken server, not a timing
            while watcher.stats()["models"]["demo"]["queue_depth"] != 1:
                assert time.monotonic() < give_up, "the request never reached the batcher's queue"
                time.sleep(0.001)
        assert server.stop(signal.SIGTERM) == 0, server.output
        t.join(60)
    assert len(got) == 1 and isinstance(got[0], np.ndarray), got
    np.testing.assert_allclose(got[0], direct(x), rtol=1e-5, atol=1e-6)
    assert shm_entries(name) == []


@pytest.mark.slow
def test_demo_command_runs_end_to_end(shm_hub: Hub) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "foundation_core", "demo", "--calls", "50"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "same as calling the PyTorch module directly in this process: True" in proc.stdout
    assert "server exited with status 0; /dev/shm entries left: none" in proc.stdout
    assert "latency over 50 calls" in proc.stdout


def _mode_and_channels(name: str) -> tuple[int, int]:
    """The permission bits of the server's control segment, and the channel count it publishes."""
    from foundation_shm import _layout as L

    path = Path("/dev/shm") / L.control_name(name).lstrip("/")
    raw = path.read_bytes()
    return path.stat().st_mode & 0o777, int.from_bytes(raw[L.RegionField.CHANNEL_COUNT :][:4], "little")


def test_the_shm_config_section_sets_the_servers_and_the_clients_options(shm_hub: Hub, name: str) -> None:

    settings = ["shm.mode=0660", "shm.channels=3", "shm.client_spin_us=0"]
    with foundation_core.start(overrides=settings) as hub, MLRuntime(hub) as rt:
        rt.register_model(
            "double",
            FunctionModel(lambda x: {"y": x * 2}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"}),
        )
        rt.start("shm", name)
        assert _mode_and_channels(name) == (0o660, 3)
        with InferenceClient(name, transport="shm", hub=hub) as client:
            assert client._client.spin_ns == 0  # type: ignore[attr-defined]
            np.testing.assert_array_equal(client.infer("double", {"x": np.ones(2, np.float32)})["y"], [2, 2])
        with InferenceClient(name, transport="shm", hub=hub, spin_us=7) as client:  # code wins
            assert client._client.spin_ns == 7000  # type: ignore[attr-defined]
    with foundation_core.start(overrides=settings) as hub, MLRuntime(hub) as rt:
        rt.register_model(
            "double",
            FunctionModel(lambda x: {"y": x * 2}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"}),
        )
        rt.start("shm", name, mode=0o600)  # options in code win over the config section
        assert _mode_and_channels(name) == (0o600, 3)


def test_the_configured_client_timeout_bounds_an_inference_client_s_calls(shm_hub: Hub, name: str) -> None:
    """[shm] client_timeout was ignored: InferenceClient passed its own 30 s to every call."""
    with MLRuntime(shm_hub) as rt:
        rt.register_model(
            "m", FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})
        )
        rt.start("shm", name)
        with foundation_core.start(overrides=["shm.client_timeout=2.5"]) as hub:
            with InferenceClient(name, hub=hub) as client:
                assert client.timeout == 2.5
            with InferenceClient(name, hub=hub, timeout=4.0) as client:  # code wins
                assert client.timeout == 4.0
            with InferenceClient(name, hub=hub, timeout=None) as client:  # no deadline
                assert client.timeout is None
        with InferenceClient(name, hub=shm_hub) as client:  # nothing configured: 30 s
            assert client.timeout == 30.0
            assert client.infer("m", {"x": np.ones(2, np.float32)})["y"].tolist() == [1.0, 1.0]


def test_a_bare_hub_gives_no_configured_options(shm_hub: Hub) -> None:
    from foundation_ml import configured_options

    assert shm_hub.config is None
    assert configured_options(shm_hub, "shm", "serve") == {}
    with foundation_core.start() as hub:
        assert configured_options(hub, "shm", "connect") == {"channels": 4, "spin_us": 250, "timeout": None}
        assert configured_options(hub, "inproc", "serve") == {}  # no section named after it


@pytest.mark.slow
def test_foundation_serve_takes_the_shm_section_from_the_environment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOUNDATION_SHM__MODE", "0660")
    monkeypatch.setenv("FOUNDATION_SHM__CHANNELS", "2")
    with ServerProcess(["--transport", "shm", "--name", name]) as server:
        assert _mode_and_channels(name) == (0o660, 2)
        assert server.stop(signal.SIGTERM) == 0, server.output
    monkeypatch.setenv("FOUNDATION_SHM__SPIN_US", "-1")
    bad = subprocess.run(
        [sys.executable, "-m", "foundation_core", "serve", "--name", name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "shm.spin_us: spin_us must be an integer 0..1_000_000 µs, not -1" in bad.stderr
    assert shm_entries(name) == []


@pytest.mark.slow
def test_an_ainfer_cancelled_while_its_request_is_with_the_server_leaves_the_client_usable(
    shm_hub: Hub, name: str
) -> None:
    """A task cancelled while its request waits in the server's batch (as ``wait_for`` cancels
    at its timeout, or a failing sibling in a ``TaskGroup``) abandons the answer: the next calls
    on the same client, which fill that batch, each get their own rows, the abandoned answer
    reaches nobody, and the server answers every request."""
    import asyncio

    args = ["--transport", "shm", "--name", name, "--max-batch-size", "4", "--max-wait-us", "10000000"]
    with ServerProcess(args) as server:
        with InferenceClient(name, transport="shm", hub=shm_hub, timeout=60) as client:

            def queued() -> int:
                return int(client.stats()["models"]["demo"]["queue_depth"])

            async def main() -> list[dict[str, np.ndarray]]:
                abandoned = asyncio.ensure_future(client.ainfer("demo", {"x": x_rows(1, seed=100)}))
                while queued() != 1:  # the request is with the server, waiting for its batch
                    await asyncio.sleep(0.001)
                abandoned.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await abandoned

                async def fail_once_queued() -> None:
                    while queued() != 2:
                        await asyncio.sleep(0.001)
                    raise RuntimeError("a sibling failed")

                async def group_failing() -> None:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(client.ainfer("demo", {"x": x_rows(1, seed=101)}))
                        group.create_task(fail_once_queued())

                with pytest.raises(ExceptionGroup):
                    await group_failing()
                outs = []
                for ks in (range(2), range(2, 6), range(6, 10)):  # each fills a batch of 4 (the
                    # first with the two abandoned requests): none waits out max_wait_us
                    outs += await asyncio.gather(*(client.ainfer("demo", {"x": x_rows(1, k)}) for k in ks))
                return outs

            outs = asyncio.run(main())
            for k, out in enumerate(outs):
                np.testing.assert_allclose(out["y"], direct(x_rows(1, k)), rtol=1e-5, atol=1e-6)
            stats = client.stats()["models"]["demo"]
        assert server.stop() == 0, server.output
    assert stats["requests"] == 12 and stats["errors"] == 0
    assert shm_entries(name) == []


@pytest.mark.slow
def test_leaving_async_with_fails_the_ainfer_calls_in_flight_and_gives_every_channel_back(
    shm_hub: Hub, name: str
) -> None:
    """``async with InferenceClient(...)`` (there was none, nor ``aclose()``): leaving it while
    requests wait in the server's batch fails their calls ``ServerUnavailable`` at once (not at
    the batch's 10 s), ends ``ainfer``'s threads and gives the client's channels back (its data
    segments are gone from /dev/shm); the server goes on serving other clients."""
    import asyncio
    import threading

    from foundation_ml.errors import ServerUnavailable

    args = ["--transport", "shm", "--name", name, "--max-batch-size", "4", "--max-wait-us", "10000000"]
    with ServerProcess(args) as server:
        servers_own = shm_entries(name)

        async def main() -> tuple[list[object], list[str]]:
            async with InferenceClient(name, transport="shm", hub=shm_hub, timeout=60) as client:
                calls = [asyncio.ensure_future(client.ainfer("demo", {"x": x_rows(1, k)})) for k in range(3)]
                while client.stats()["models"]["demo"]["queue_depth"] != 3:  # all with the server
                    await asyncio.sleep(0.001)
                assert shm_entries(name) != servers_own  # the client's data segments
            # left: the block is over, and so are the calls
            assert [t for t in threading.enumerate() if t.name.startswith(f"foundation-ainfer-{name}")] == []
            return await asyncio.gather(*calls, return_exceptions=True), shm_entries(name)

        results, entries = asyncio.run(main())
        assert all(isinstance(r, ServerUnavailable) for r in results), results
        assert entries == servers_own
        with InferenceClient(name, transport="shm", hub=shm_hub, timeout=60) as other:
            np.testing.assert_allclose(  # the fourth of the batch: it runs the abandoned three
                other.infer("demo", {"x": x_rows(1, 5)})["y"], direct(x_rows(1, 5)), rtol=1e-5, atol=1e-6
            )
        assert server.stop() == 0, server.output
    assert shm_entries(name) == []


_FORGETS_CLOSE = """
import sys
import numpy as np
from foundation_ml import FunctionModel, InferenceClient, MLRuntime

runtime = MLRuntime()
runtime.register_model(
    "double", FunctionModel(lambda x: x * 2, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"})
)
runtime.start(transport="shm", name=sys.argv[1])
with InferenceClient(sys.argv[1]) as client:
    assert client.infer("double", {"x": np.ones(2, np.float32)})["y"].tolist() == [2.0, 2.0]
print("served", flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the script's own bug")
if sys.argv[2] == "fork":  # a child's exit runs its atexit handlers: not on the parent's server
    import os

    child = os.fork()
    if child == 0:
        sys.exit(0)
    assert os.waitpid(child, 0)[1] == 0
    with InferenceClient(sys.argv[1]) as client:
        assert client.infer("double", {"x": np.ones(2, np.float32)})["y"].tolist() == [2.0, 2.0]
"""


@pytest.mark.parametrize("ending", ["end", "raise", "fork"])
def test_a_script_that_never_closes_its_runtime_leaves_nothing_in_dev_shm(
    shm_hub: Hub, name: str, ending: str
) -> None:
    """A script that started a shm server and ended, or failed, without runtime.close() left its
    control segment, lock file and semaphores in /dev/shm (37 objects) until a server of that
    name started again or `foundation shm clean` ran; open runtimes are now closed at exit, each by
    the process that made it (a forked child's exit leaves the parent's server serving)."""
    proc = subprocess.run(
        [sys.executable, "-c", _FORGETS_CLOSE, name, ending], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout == "served\n", proc.stderr
    assert proc.returncode == (1 if ending == "raise" else 0), proc.stderr
    assert shm_entries(name) == []


_CTRL_C_AT_EXIT = """
import os
import signal
import sys
import threading

import numpy as np
from foundation_ml import FunctionModel, InferenceClient, MLRuntime
from foundation_shm._server import ShmServer

signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whoever started us
stop = ShmServer.stop


def stop_and_say(self, drain_timeout=5.0):  # the exit's close drains: the cue for a second Ctrl-C
    os.write(1, b"draining\\n")  # one write: print() writes the text and the newline apart
    stop(self, drain_timeout)


ShmServer.stop = stop_and_say


def stuck(x):
    os.write(1, b"running\\n")  # the two models' lines, one write each: never interleaved
    threading.Event().wait(60)
    return x * 2


def call(name):
    with InferenceClient(name, timeout=60) as client:
        try:
            client.infer("stuck", {"x": np.ones(2, np.float32)})
        except Exception:
            pass


runtimes = []  # never closed: the exit closes them
for name in sys.argv[1:]:
    runtime = MLRuntime(max_batch_size=2, max_wait_us=0)  # stuck in its batcher, not its loop
    runtime.register_model(
        "stuck", FunctionModel(stuck, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"}), warmup=False
    )
    runtime.start(transport="shm", name=name)
    runtimes.append(runtime)
    threading.Thread(target=call, args=(name,), daemon=True).start()
threading.Event().wait()  # until Ctrl-C
"""


def test_a_second_ctrl_c_at_exit_ends_the_drain_and_still_releases_every_runtime(
    shm_hub: Hub, name: str
) -> None:
    """A script ended by Ctrl-C with requests in flight drains them at exit, in the runtimes'
    close(); a second Ctrl-C raised KeyboardInterrupt inside the first runtime's close, which ended
    the exit's closing there: the other runtime's objects stayed in /dev/shm and the first's models
    were never unloaded (and Python printed 'Exception ignored in atexit callback'). It now ends
    the drains at once (hurry(), as a second signal does for serve()) and everything is released."""
    names = [name + "a", name + "b"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_AT_EXIT, *names],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in names]  # each runtime's request in its model
        assert lines == ["running\n"] * len(names), proc.communicate(timeout=60)
        proc.send_signal(signal.SIGINT)  # the script ends: its runtimes are closed, draining
        assert proc.stdout.readline() == "draining\n", proc.communicate(timeout=60)
        proc.send_signal(signal.SIGINT)  # enough waiting
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Exception ignored in atexit callback" not in err, err
    assert "told to stop at once" in err, err  # each abandoned its request
    assert proc.returncode == -signal.SIGINT, err  # ended by its (first) Ctrl-C, as before
    assert shm_entries(name) == [], err


_EXITS_IN_CLOSE = """
import sys
from foundation_ml import FunctionModel, MLRuntime


class ExitsInClose(FunctionModel):
    def close(self):
        sys.exit(3)


for name in sys.argv[1:]:  # never closed: the exit closes them
    runtime = MLRuntime()
    runtime.register_model(
        "m", ExitsInClose(lambda x: x, inputs={"x": "FP32[-1]"}, outputs={"y": "FP32[-1]"}), warmup=False
    )
    runtime.start(transport="shm", name=name)
print("served", flush=True)
"""


def test_a_model_whose_close_exits_at_exit_leaves_the_other_runtimes_closed_too(
    shm_hub: Hub, name: str
) -> None:
    """The exit hook caught only Exception: the SystemExit of one runtime's model close() ended it
    there, and the runtimes after it stayed in /dev/shm."""
    names = [name + "a", name + "b"]
    proc = subprocess.run(
        [sys.executable, "-c", _EXITS_IN_CLOSE, *names], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout == "served\n", proc.stderr
    assert proc.stderr.count("closing a runtime at interpreter exit failed: SystemExit(3)") == 2, proc.stderr
    assert shm_entries(name) == [], proc.stderr
