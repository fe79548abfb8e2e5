"""A data segment's posix_fallocate interrupted by signals (EINTR) is made again a bounded number
of times in a row, as the C, Go and Rust clients do (spec 10.1 step 6): then the claim fails
OVERLOADED, nothing left. CPython's own ``os.posix_fallocate`` made it again without bound."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from foundation_shm import ShmTransport, _segments
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import objects_of

from foundation_ml import InferenceRequest
from foundation_ml.errors import Overloaded

# an LD_PRELOAD shim: libc's posix_fallocate fails EINTR its first $FDN_EINTR_CALLS calls, as
# signals faster than the allocation do on older kernels (this one may not interrupt it at all)
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/types.h>
static long calls;
static int pass(int fd, off_t offset, off_t len, const char *name) {
    const char *limit = getenv("FDN_EINTR_CALLS");
    if (limit && calls++ < atol(limit)) return EINTR;
    int (*real)(int, off_t, off_t) = (int (*)(int, off_t, off_t))dlsym(RTLD_NEXT, name);
    return real(fd, offset, len);
}
int posix_fallocate(int fd, off_t offset, off_t len) { return pass(fd, offset, len, "posix_fallocate"); }
int posix_fallocate64(int fd, off_t offset, off_t len) { return pass(fd, offset, len, "posix_fallocate64"); }
"""


def _echo_once(name: str) -> None:
    with ShmTransport().connect(name, timeout=10, channels=1) as client:
        client.infer(InferenceRequest("echo", {"x": np.arange(2.0)}))


def _data_segments(name: str) -> list[str]:
    return [o for o in objects_of(name) if "-d" in o]


def test_a_claim_interrupted_100_times_in_a_row_is_overloaded_and_leaves_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        calls: list[int] = []

        def interrupted(fd: int, offset: int, size: int) -> int:
            calls.append(size)
            return errno.EINTR

        monkeypatch.setattr(_segments, "_fallocate", interrupted)
        with pytest.raises(
            Overloaded,
            match=rf"channel 0: .* /fdn-{name}-d0-.* in /dev/shm: posix_fallocate: Interrupted system call: "
            "100 times in a row, it may pass later",
        ):
            _echo_once(name)
        assert len(calls) == _segments.FALLOCATE_TRIES == 100
        assert _data_segments(name) == []
        monkeypatch.undo()
        _echo_once(name)  # the next claim allocates
    finally:
        server.stop()


def test_an_allocation_interrupted_99_times_in_a_row_is_made(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        real, calls = _segments._fallocate, [0]

        def interrupted(fd: int, offset: int, size: int) -> int:
            calls[0] += 1
            return errno.EINTR if calls[0] < _segments.FALLOCATE_TRIES else real(fd, offset, size)

        monkeypatch.setattr(_segments, "_fallocate", interrupted)
        _echo_once(name)
        assert calls[0] == 100
    finally:
        server.stop()


def test_the_real_call_interrupted_by_libc_is_bounded_where_cpythons_loop_was_not(
    name: str, tmp_path: Path
) -> None:
    """Through libc (an LD_PRELOAD shim failing EINTR 100000 times): the claim fails OVERLOADED
    after 100; with ``os.posix_fallocate`` (CPython retries EINTR itself) it got through them
    all and connected."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the posix_fallocate shim")
    shim = tmp_path / "eintr.so"
    (tmp_path / "eintr.c").write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "eintr.c"), "-ldl"], check=True)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from foundation_shm import ShmTransport
        from foundation_ml import InferenceRequest
        from foundation_ml.errors import Overloaded
        try:
            with ShmTransport().connect({name!r}, timeout=10, channels=1) as c:
                c.infer(InferenceRequest("echo", {{"x": np.arange(2.0)}}))
            print("connected")
        except Overloaded as exc:
            print("overloaded", exc)
        """
    )
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        env = {**os.environ, "LD_PRELOAD": str(shim), "FDN_EINTR_CALLS": "100000"}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("overloaded"), out.stdout
        assert "posix_fallocate: Interrupted system call: 100 times in a row, it may pass later" in out.stdout
        assert _data_segments(name) == []
    finally:
        server.stop()
