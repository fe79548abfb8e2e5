"""The C hot path (``_hot.c``) built with AddressSanitizer and UndefinedBehaviorSanitizer, then
held to the tests that drive it hardest: an out-of-bounds read or write of a request or response
area, a use after unmap, or undefined behaviour (a misaligned or overflowing access) aborts the
run, where a plain build may pass with the error landing in memory it owns.

The sanitized build goes to a temporary copy of the package, put first on ``PYTHONPATH`` of a
child pytest (and of the servers it starts), with the sanitizers' runtimes preloaded into the
Python that loads it. ``clients/tests`` does the same for the C client (``make test-sanitize``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PKG = Path(__file__).resolve().parents[1]  # transports/shm
# the tests that exercise the C lanes: the extension's own, the fast path, many clients, codec
# round trips and the vectors, failures (crashed peers, truncated segments), hostile requests (a
# hypothesis fuzz of headers and sizes), 100 MB tensors, the loan API's areas
SUITE = (
    "test_accel.py",
    "test_fastpath.py",
    "test_transport.py",
    "test_codec.py",
    "test_vectors.py",
    "test_failures.py",
    "test_errors.py",
    "test_large.py",
    "test_loan.py",
)
SAN = "-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"


def _runtime(cc: str, lib: str) -> str | None:
    """The path of the compiler's sanitizer runtime ``lib`` (libasan.so), or None."""
    out = subprocess.run([cc, f"-print-file-name={lib}"], capture_output=True, text=True, check=False)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a Python that imports the sanitized ``foundation_shm``."""
    if os.environ.get("FDN_SHM_PURE"):
        pytest.skip("FDN_SHM_PURE=1: this run tests the pure-Python path, not the C one")
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("no gcc: the C hot path is not built here (the pure path runs)")
    libs = [_runtime(cc, lib) for lib in ("libasan.so", "libubsan.so")]
    if None in libs:
        pytest.fail(f"gcc lacks a sanitizer runtime ({libs}): apt-get install libasan8 libubsan1")
    root = tmp_path_factory.mktemp("sanitized")
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(PKG / name, root / name)
    shutil.copytree(
        PKG / "foundation_shm", root / "foundation_shm", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    env = {**os.environ, "CFLAGS": SAN, "LDFLAGS": "-fsanitize=address,undefined", "FDN_SHM_REQUIRE_C": "1"}
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, f"the sanitized build failed:\n{build.stdout}{build.stderr}"
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "LD_PRELOAD": " ".join(str(lib) for lib in libs),
        # CPython's own allocations are never freed at exit: leaks are not what this looks for.
        # SIGBUS stays the kernel's: test_failures truncates mapped segments on purpose (a peer
        # that dies of it, a server whose guard catches it), which ASan would report as its own.
        # Reports go to files (pid-suffixed): pytest's capture and the servers' pipes would lose
        # a report written just before the process aborts.
        "ASAN_OPTIONS": f"detect_leaks=0:abort_on_error=1:handle_sigbus=0:log_path={root / 'report'}",
        "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=1:log_path={root / 'report'}",
        "SANITIZED_ROOT": str(root),
    }


def test_the_sanitized_build_is_the_one_imported(sanitized: dict[str, str]) -> None:
    """Else the suite below would test the plain build and prove nothing."""
    code = (
        "from foundation_shm import _accel; print(_accel.hot.__file__ if _accel.hot else _accel.why_pure())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=sanitized, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(sanitized["SANITIZED_ROOT"]), out.stdout


def test_the_hot_path_suite_passes_under_asan_and_ubsan(sanitized: dict[str, str]) -> None:
    tests = [str(PKG / "tests" / name) for name in SUITE]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *tests],
        env=sanitized,
        cwd=PKG.parents[1],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    root = Path(sanitized["SANITIZED_ROOT"])
    reports = "".join(p.read_text(errors="replace") for p in sorted(root.glob("report.*")))
    assert proc.returncode == 0 and not reports, (
        f"under ASan and UBSan:\n{reports[:8000]}\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
    )
