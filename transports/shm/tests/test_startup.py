"""What a server or a client checks as it starts: the machine (x86-64 only, spec 7.1), and the hot
path (one warning per process when the pure-Python path runs without ``FDN_SHM_PURE`` asking for
it); ``foundation shm ls`` says which path runs; ``FDN_SHM_REQUIRE_C=1`` fails a build without it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from foundation_shm import ShmTransport, _accel
from foundation_shm._client import ShmClient
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import objects_of, remove_objects
from foundation_shm._server import ShmServer

from foundation_core._cli import main
from foundation_ml import InferenceRequest
from foundation_ml.errors import InternalError

PURE = os.environ.get("FDN_SHM_PURE", "").lower() in ("1", "true", "yes")
SHM_DIR = Path(__file__).resolve().parents[1]
NOTICE = "running the pure-Python hot path"


def _env(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FDN_SHM_PURE", "FDN_SHM_REQUIRE_C")}
    if pure:
        env["FDN_SHM_PURE"] = "1"
    return env


# --- the machine --------------------------------------------------------------------------------


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "riscv64", "i686", ""])
def test_a_server_or_client_on_a_machine_that_is_not_x86_64_refuses_to_start(
    name: str, machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    want = f"x86-64 only, and this machine is {machine or 'unknown'!r}"
    for start in (
        lambda: ShmServer(name, EchoHandler()),
        lambda: ShmTransport().serve(name, EchoHandler(), channels=1),
        lambda: ShmClient(name),
        lambda: ShmTransport().connect(name),
    ):
        with pytest.raises(InternalError, match=want) as caught:
            start()
        assert "total store order" in str(caught.value) and "C hot path does not make it safe" in str(
            caught.value
        )
    assert objects_of(name) == []  # refused before anything was made


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_a_server_and_client_on_x86_64_start(
    name: str, machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    server = ShmServer(name, EchoHandler(), channels=1)
    try:
        with ShmClient(name, channels=1) as client:
            x = np.arange(3, dtype=np.int32)
            np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
    finally:
        server.stop()
    assert objects_of(name) == []


@pytest.mark.parametrize("which", [1, 2])
def test_a_start_whose_serving_threads_cannot_start_leaves_nothing_behind(
    name: str, which: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread to be had (``can't start new thread``) for the serving loop (1) or the heartbeat
    (2): the start fails, and its objects, its open-file claim and its lock went with it (they
    stayed: /dev/shm kept the name's segments and semaphores, and the claim its channels)."""
    import threading

    from foundation_shm import _fd_limit

    started = {"n": 0}
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith(f"shm-{name}"):
            started["n"] += 1
            if started["n"] == which:
                raise RuntimeError("can't start new thread")
        real_start(self)

    claims = dict(_fd_limit._claims)
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        ShmServer(name, EchoHandler(), channels=2)
    monkeypatch.undo()
    assert [o for o in objects_of(name) if not o.endswith(".lock")] == []
    assert _fd_limit._claims == claims
    server = ShmServer(name, EchoHandler(), channels=1)  # the lock was let go
    try:
        with ShmClient(name, channels=1) as client:
            x = np.arange(3, dtype=np.int32)
            np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
    finally:
        server.stop()
    assert objects_of(name) == []


# --- the warning --------------------------------------------------------------------------------

_START = r"""
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
if sys.argv[2] == "missing":
    sys.modules["foundation_shm._hot"] = None  # as where it was not built: its import fails
import numpy as np
from foundation_shm import ShmTransport, _accel
from foundation_shm._echo import EchoHandler
from foundation_ml import InferenceRequest

name = sys.argv[1]
server = ShmTransport().serve(name, EchoHandler(), channels=2)
server2 = ShmTransport().serve(name + "b", EchoHandler(), channels=1)
try:
    for _ in range(2):
        with ShmTransport().connect(name, channels=1) as client:
            client.infer(InferenceRequest("echo", {"x": np.zeros(2)}))
finally:
    server2.stop()
    server.stop()
print(_accel.implementation(), flush=True)
"""


@pytest.mark.parametrize(
    ("case", "want_impl", "warnings"), [("missing", "python", 1), ("forced", "python", 0), ("built", "c", 0)]
)
def test_the_pure_path_warns_once_per_process_unless_it_was_asked_for(
    name: str, case: str, want_impl: str, warnings: int
) -> None:
    if case == "built" and not _built():
        pytest.skip("foundation_shm._hot was not built")
    try:
        out = subprocess.run(
            [sys.executable, "-c", _START, name, case],
            env=_env(pure=case == "forced"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        left = objects_of(name) + objects_of(name + "b")
        remove_objects(name)
        remove_objects(name + "b")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [want_impl]
    lines = [line for line in out.stderr.splitlines() if NOTICE in line]
    assert len(lines) == warnings, out.stderr  # two servers and two clients: still one
    if warnings:
        (line,) = lines
        assert line.startswith("WARNING foundation_shm shm: running the pure-Python hot path")
        assert "foundation_shm._hot did not load: import of foundation_shm._hot halted" in line
        assert _accel.REBUILD in line and _accel.REBUILD_CHECKOUT in line
        assert _accel.REBUILD == (
            "pip install --no-cache-dir --force-reinstall --no-deps --no-binary foundation-shm foundation-shm"
        )
    assert not left, f"left in /dev/shm: {left}"


def _built() -> bool:
    return (
        subprocess.run(
            [sys.executable, "-c", "import foundation_shm._hot"], env=_env(False), capture_output=True
        ).returncode
        == 0
    )


# --- foundation shm ls ----------------------------------------------------------------------------


def test_ls_says_which_hot_path_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shm", "ls"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("hot path: python (FDN_SHM_PURE=1)" if PURE else "hot path: c")
    assert main(["shm", "ls", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hot_path"] == {
        "implementation": "python" if PURE else "c",
        "why_python": "FDN_SHM_PURE=1" if PURE else "",
        "machine": platform.machine(),
        "supported": True,
    }


def test_ls_says_why_the_pure_path_runs_and_whether_the_machine_may_run_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_accel, "hot", None)
    monkeypatch.setattr(_accel, "FORCED", False)
    monkeypatch.setattr(
        _accel, "_why", "foundation_shm._hot did not load: No module named 'foundation_shm._hot'"
    )
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert main(["shm", "ls"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "hot path: python (foundation_shm._hot did not load: No module named 'foundation_shm._hot'; rebuild: "
        f"{_accel.REBUILD}); unsupported machine 'aarch64': servers and clients refuse to start"
    )
    assert main(["shm", "ls", "--json"]) == 0
    hot_path = json.loads(capsys.readouterr().out)["hot_path"]
    assert hot_path["implementation"] == "python" and hot_path["supported"] is False
    assert hot_path["machine"] == "aarch64"


# --- FDN_SHM_REQUIRE_C ----------------------------------------------------------------------------


def _build_without_a_compiler(
    tmp_path: Path, require: str | None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``pip wheel`` of a copy of transports/shm with ``CC=/bin/false`` (the checkout's own build
    and its installed extension are left alone)."""
    src = tmp_path / "src"
    shutil.copytree(
        SHM_DIR,
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "*.so", "__pycache__", "tests", ".*"),
    )
    env = _env(False)
    env["CC"] = "/bin/false"
    if require is not None:
        env["FDN_SHM_REQUIRE_C"] = require
    out = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run(
        [*cmd, "--disable-pip-version-check", "-w", str(out), str(src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, out


@pytest.mark.slow
def test_require_c_makes_a_failed_build_an_error(tmp_path: Path) -> None:
    done, out = _build_without_a_compiler(tmp_path, "1")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "error: foundation_shm: foundation_shm._hot was not built" in text
    assert "FDN_SHM_REQUIRE_C=1 requires it" in text
    assert not out.exists() or not list(out.glob("*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("require", [None, "0"])
def test_without_require_c_a_failed_build_falls_back_to_pure_python(
    tmp_path: Path, require: str | None
) -> None:
    done, out = _build_without_a_compiler(tmp_path, require)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "foundation_shm._hot was not built" in done.stdout + done.stderr
    assert "using pure Python (slower; it warns at run time)" in done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "foundation_shm/_accel.py" in names
    assert not [n for n in names if n.startswith("foundation_shm/_hot") and n.endswith(".so")]
