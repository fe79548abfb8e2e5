"""A channel's rejected requests are logged at most ``burst`` at once and ``per_second`` after."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from foundation_shm import ShmTransport, _vector_messages
from foundation_shm._echo import EchoHandler
from foundation_shm._log_throttle import LogFold, LogThrottle
from hypothesis import given
from hypothesis import strategies as st

from foundation_ml.errors import BadMagic


@given(
    burst=st.integers(1, 20),
    rate=st.floats(0.1, 50),
    steps=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 2)), max_size=200),
)
def test_never_more_than_the_burst_plus_the_rate_and_every_line_is_counted(
    burst: int, rate: float, steps: list[tuple[int, float]]
) -> None:
    throttle, now = LogThrottle(burst, rate), 0.0
    logged: dict[int, int] = {}
    held: dict[int, int] = {}
    calls: dict[int, int] = {}
    for key, dt in steps:
        now += dt
        ok, before = throttle.take(key, now)
        calls[key] = calls.get(key, 0) + 1
        logged[key] = logged.get(key, 0) + ok
        held[key] = held.get(key, 0) + before
        assert logged[key] <= burst + rate * now + 1e-9
    for key in calls:  # each call is logged, or held back and counted by a later logged one
        ok, before = throttle.take(key, now + 1e6)
        assert ok and logged[key] + held[key] + before == calls[key]


def test_a_quiet_key_gets_its_burst_back_and_a_forgotten_one_starts_full() -> None:
    throttle = LogThrottle(burst=2, per_second=1.0)
    assert [throttle.take(0, 0.0)[0] for _ in range(4)] == [True, True, False, False]
    assert throttle.take(0, 1.0) == (True, 2)  # one token back after 1 s; two were held back
    assert throttle.take(1, 1.0) == (True, 0)  # another key has its own bucket
    throttle.forget(0)
    assert [throttle.take(0, 1.0)[0] for _ in range(3)] == [True, True, False]


def test_a_fold_logs_the_first_then_one_summary_a_window_and_closes_when_quiet() -> None:
    """Routine repeats (channels given back) are summed up: a 600-line soak is a line a minute."""
    fold = LogFold(window_s=60.0)
    assert fold.take(0.0) is True  # the first: in full
    assert [fold.take(t) for t in (1.0, 2.0, 59.0)] == [False, False, False]
    assert fold.due(59.9) == (0, 0.0)  # its window has not passed
    assert fold.due(60.0) == (3, 60.0)  # one summary: 3 held over the window
    assert fold.take(61.0) is False  # still busy: the next window folds too
    assert fold.due(119.0) == (0, 0.0) and fold.due(120.0) == (1, 60.0)
    assert fold.due(180.0) == (0, 60.0)  # a quiet window: nothing to say, and it closes
    assert fold.take(500.0) is True  # so the next is logged in full again
    assert fold.take(501.0) is False
    assert fold.due(502.0, final=True) == (1, 2.0)  # at stop: at once, none left unsaid
    assert fold.take(503.0) is True


def test_a_window_that_passed_with_none_held_logs_the_next_in_full_before_any_due() -> None:
    fold = LogFold(window_s=10.0)
    assert fold.take(0.0) is True
    assert fold.take(10.0) is True  # nothing held in the window: no summary owed, so in full


@given(
    window=st.floats(0.1, 100),
    steps=st.lists(st.tuples(st.booleans(), st.floats(0, 50)), max_size=200),
)
def test_every_line_of_a_fold_is_logged_or_summed_up_and_lines_are_a_window_apart(
    window: float, steps: list[tuple[bool, float]]
) -> None:
    """Each line is logged in full or counted by exactly one summary; no two lines logged (in
    full or summaries) are closer than the window: a flood of any rate is a line a window."""
    fold, now, calls, counted = LogFold(window), 0.0, 0, 0
    said: list[float] = []
    for beat, dt in steps:
        now += dt
        if beat:  # the heartbeat asks whether a summary is due
            held, _ = fold.due(now)
            counted += held
            if held:
                said.append(now)
        else:
            calls += 1
            if fold.take(now):
                counted += 1
                said.append(now)
    held, _ = fold.due(now, final=True)
    assert counted + held == calls
    assert all(b - a >= window for a, b in itertools.pairwise(said))


def _most_logged(seconds: float) -> int:
    """The most lines one channel may log in ``seconds``: the burst of 10, then one a second
    (bounded by the run's own length, not a guess of it: a loaded machine takes longer; and
    never all 50, which is what an unthrottled server logs)."""
    return min(49, 10 + math.floor(seconds) + 1)


def test_a_client_sending_garbage_cannot_flood_the_servers_log(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """8000 bad requests wrote 8400 lines; the client chooses what they say."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    began = time.monotonic()
    try:
        with ShmTransport().connect(name, timeout=5) as client:
            ch = client._take(0)
            try:
                area = bytearray(_vector_messages._request({"x": np.arange(3.0)}, request_id=5))
                area[0] ^= 0xFF  # bad magic
                for _ in range(50):
                    ch.wkey = None
                    ch.req[: len(area)] = area
                    with pytest.raises(BadMagic):
                        client._exchange(ch, 5, "echo", time.monotonic_ns() + 2 * 10**9, retry=False)
            finally:
                client._give(ch)
    finally:
        server.stop()
    took = time.monotonic() - began
    lines = [r.getMessage() for r in caplog.records if "rejected request" in r.getMessage()]
    assert 10 <= len(lines) <= _most_logged(took), (len(lines), took)


class _SteadyClock(LogThrottle):
    """A throttle whose clock moves 0.1 s for each line asked about, however long the run takes
    on this machine: what it lets through is the same on a loaded one."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        super().__init__()
        self._at = 0.0

    def take(self, key: int, now: float | None = None) -> tuple[bool, int]:
        self._at += 0.1
        return super().take(key, self._at)


def test_a_client_making_the_handler_raise_cannot_flood_the_servers_log(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request that made the handler raise logged a whole traceback: 50 calls, 50 of them.
    Every call is still answered HandlerError; the log says how many were not shown."""
    from foundation_ml import InferenceRequest
    from foundation_ml.errors import HandlerError

    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    server._raised_log = _SteadyClock()  # 50 requests, 5 s of its clock: the burst and 4 more
    try:
        with ShmTransport().connect(name, timeout=5) as client:
            for _ in range(50):
                with pytest.raises(HandlerError):
                    client.infer(InferenceRequest("fail", {"x": np.arange(3.0)}))
    finally:
        server.stop()
    lines = [r for r in caplog.records if "handler raised" in r.getMessage()]
    assert len(lines) == 14, [r.getMessage() for r in lines]
    assert all(r.exc_info for r in lines)  # the ones logged keep their traceback
    assert [r.getMessage().partition(" (")[2] for r in lines[9:]] == [
        "",
        "1 more on this channel not logged)",
        *["9 more on this channel not logged)"] * 3,
    ]


def test_a_handler_answering_what_cannot_be_sent_cannot_flood_the_servers_log(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A response the server cannot encode (an output name past 63 bytes) was logged once per
    answer: 50 calls, 50 warnings. Each call is still answered HandlerError naming why."""
    from foundation_ml import InferenceRequest, InferenceResponse
    from foundation_ml.errors import HandlerError

    def unsendable(request: InferenceRequest, respond: object) -> None:
        respond(InferenceResponse(request.id, request.model, {"y" * 80: np.zeros(2)}))  # type: ignore[operator]

    server = ShmTransport().serve(name, unsendable, channels=2)
    server._answers._handler_log = _SteadyClock()  # 50 answers, 5 s of its clock
    try:
        with ShmTransport().connect(name, timeout=5) as client:
            for _ in range(50):
                with pytest.raises(HandlerError, match="the handler's response cannot be sent"):
                    client.infer(InferenceRequest("m", {"x": np.arange(3.0)}))
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if "cannot encode the response" in r.getMessage()]
    assert len(lines) == 14, lines
    assert lines[-1].endswith("(9 more on this channel not logged)")
