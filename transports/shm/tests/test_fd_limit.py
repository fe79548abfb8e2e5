"""A server maps one data segment per connected client, and each mapping holds a descriptor: it
raises its soft open-file limit to what its channels need, warns when the hard limit forbids, and
a segment it cannot map for want of descriptors is named as such in its log; it puts the limit
back when it stops."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys

import numpy as np
import pytest
from foundation_shm import ShmTransport, _server_dispatch
from foundation_shm._echo import EchoHandler
from foundation_shm._fd_limit import HEADROOM, claim_open_files
from foundation_shm._segments import Segment

from foundation_ml import InferenceRequest
from foundation_ml.errors import DeadlineExceeded

_SERVE_UNDER_A_LIMIT = """
import logging, resource, sys
soft, hard = int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
server = ShmTransport().serve(sys.argv[1], EchoHandler(), channels=int(sys.argv[4]))
print("limit", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
server.stop()
print("after", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _serve_under(name: str, soft: int, hard: int, channels: int) -> tuple[int, int, str]:
    """The soft limit while serving and after stop(), and the log."""
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_UNDER_A_LIMIT, name, str(soft), str(hard), str(channels)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    *log, serving, after = out.stdout.strip().splitlines()
    assert serving.startswith("limit ") and after.startswith("after "), out.stdout
    return int(serving.split()[1]), int(after.split()[1]), "\n".join(log)


def test_a_server_raises_its_soft_limit_to_what_its_channels_need(name: str) -> None:
    """With ``ulimit -n`` 64 and 500 channels, clients past about 60 found their requests
    unanswered (EMFILE mapping their segments) until their deadline."""
    limit, _, log = _serve_under(name, 64, 4096, 500)
    assert 500 + HEADROOM <= limit <= 4096
    assert "open files" not in log


def test_a_stopped_server_puts_the_soft_limit_back(name: str) -> None:
    """It stayed raised after stop(): child processes inherited it, and a descriptor past 1024
    is one ``select()`` cannot take."""
    _, after, _ = _serve_under(name, 64, 4096, 500)
    assert after == 64


def test_a_hard_limit_too_low_for_the_channels_is_warned_about_and_served_anyway(name: str) -> None:
    limit, after, log = _serve_under(name, 64, 100, 500)
    assert limit == 100 and after == 64
    assert f"shm {name}: 500 channels need up to" in log and "this process may open 100" in log


def test_a_soft_limit_is_never_lowered() -> None:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    claim = claim_open_files(1)
    try:
        assert claim.needed <= claim.limit and resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    finally:
        claim.release()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


_TWO_SERVERS = """
import logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 1100))
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
first = ShmTransport().serve(sys.argv[1] + "a", EchoHandler(), channels=500)
second = ShmTransport().serve(sys.argv[1] + "b", EchoHandler(), channels=500)
print("both", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
ShmTransport().serve(sys.argv[1] + "c", EchoHandler(), channels=100).stop()  # past the hard limit
second.stop()
first.stop()
print("alone")
ShmTransport().serve(sys.argv[1] + "d", EchoHandler(), channels=500).stop()
"""


def _run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_two_servers_in_one_process_get_descriptors_for_both(name: str) -> None:
    """The second of two 500-channel servers raised the limit to what its own channels need
    only: with 1000 clients connected, those past about 540 found their requests unanswered. A
    third server past the hard limit is warned about naming the others' channels; a stopped
    server's channels count no more (a fourth server alone is not warned about)."""
    both, third, alone, *fourth = _run(_TWO_SERVERS, name).splitlines()
    assert both.startswith("both ") and 1000 + HEADROOM <= int(both.split()[1]) <= 1100
    assert third.startswith(
        f"shm {name}c: 100 channels (with the 1000 of this process's other shm servers) need up to"
    )
    assert "this process may open 1100" in third
    assert alone == "alone" and not fourth


_BIG_AND_SMALL = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
def serve(tail, channels):
    return ShmTransport().serve(sys.argv[1] + tail, EchoHandler(), channels=channels)
def soft():
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
big, small = serve("a", 500), serve("b", 100)
"""


def _limits(name: str, then: str) -> list[int]:
    """The soft limits ``then`` prints, with a 500-channel and a 100-channel server running."""
    return [int(v) for v in _run(_BIG_AND_SMALL + then, name).split()]


def test_the_limit_comes_down_to_what_the_servers_still_running_need(name: str) -> None:
    big_stopped, none = _limits(name, "big.stop(); soft(); small.stop(); soft()")
    assert 100 + HEADROOM <= big_stopped < 500 and none == 64


def test_a_server_still_running_keeps_the_limit_it_needs(name: str) -> None:
    small_stopped, none = _limits(name, "small.stop(); soft(); big.stop(); soft()")
    assert small_stopped >= 500 + HEADROOM and none == 64


def test_a_limit_set_by_someone_else_while_serving_is_left_as_they_set_it(name: str) -> None:
    """Theirs is the limit from then on: a later server's raise comes back down to it."""
    after = "resource.setrlimit(resource.RLIMIT_NOFILE, (2000, 4096)); big.stop(); small.stop(); soft()"
    later = "serve('c', 3000).stop(); soft()"
    assert _limits(name, f"{after}; {later}") == [2000, 2000]
    lowered = "resource.setrlimit(resource.RLIMIT_NOFILE, (600, 4096)); small.stop(); big.stop(); soft()"
    assert _limits(name, lowered) == [600]


_OPEN_MEANWHILE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))
from foundation_shm import ShmTransport
from foundation_shm._echo import EchoHandler
server = ShmTransport().serve(sys.argv[1], EchoHandler(), channels=500)
kept = [open("/dev/null") for _ in range(200)]  # the process's own, opened while it served
server.stop()
more = [open("/dev/null") for _ in range(20)]
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_a_stopped_server_leaves_room_for_the_files_the_process_opened_meanwhile(name: str) -> None:
    """stop() put the soft limit back to 64 with 200 files of the process's own still open, so
    its next open() failed EMFILE; it now comes down no lower than the descriptors open then
    and ``HEADROOM``."""
    assert int(_run(_OPEN_MEANWHILE, name)) >= 200 + HEADROOM


def test_a_segment_not_mapped_for_want_of_descriptors_is_named_in_the_log(
    name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was logged as a bare ``OSError(24, 'Too many open files')``."""

    class NoDescriptors(Segment):
        @classmethod
        def open(cls, name: str, *, sole: bool = False, guard: bool = False) -> Segment:
            raise OSError(errno.EMFILE, "Too many open files")

    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        monkeypatch.setattr(_server_dispatch, "Segment", NoDescriptors)  # the server's maps only
        with ShmTransport().connect(name, timeout=0.5) as client:
            with pytest.raises(DeadlineExceeded):  # nowhere to answer: parked until the deadline
                client.infer(InferenceRequest("echo", {"x": np.arange(3.0)}))
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        "cannot map its data segment" in m and "Too many open files" in m and "raise ulimit -n" in m
        for m in lines
    ), lines
