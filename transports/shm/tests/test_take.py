"""``SlowTake`` (``_take``): what a take keeps from one look to the next. Its waits for a hung
server are bounded per take, not per look: the bound for a server's beat is set at the first wait
and kept (``until``), and the bound for a server that stays hung restarts only once it beats again
(``hung_end``). The pool and the server here are stand-ins: only the words those steps read."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from foundation_shm._take import SlowTake

from foundation_ml.errors import ServerUnavailable


class _Server:
    """A connection whose server is hung while ``hung`` is set; its waits for a beat recorded."""

    def __init__(self) -> None:
        self.hung_now = True
        self.closing = False
        self.waits: list[float] = []

    def hung(self) -> str | None:
        return "shm server 'm' (pid 1) is hung" if self.hung_now else None

    def wait_beating(self, wait: float, limit: str) -> None:
        self.waits.append(wait)


def _pool(connect_timeout: float) -> SimpleNamespace:
    return SimpleNamespace(
        _cond=threading.Condition(),
        _conn=None,
        connect_timeout=connect_timeout,
        _wait=lambda deadline_ns: connect_timeout,
        _limit=lambda wait: f"within connect_timeout ({connect_timeout:g} s)",
    )


def test_a_takes_wait_for_a_hung_servers_beat_is_bounded_from_its_first_wait_not_each_look() -> None:
    """A take looks again after each wait for a beat (the pool may have changed, a reconnect may
    follow): its next wait is what is left of the first one's ``connect_timeout``, not a new one,
    or a take that kept being woken (a connection dropped under it) waited without end."""
    pool, server = _pool(connect_timeout=600.0), _Server()
    take = SlowTake(pool, 0, None)  # type: ignore[arg-type]
    with pool._cond:
        t0 = time.monotonic()
        assert not take._beating(server)  # type: ignore[arg-type]
        took = time.monotonic() - t0  # (what this thread was kept from running comes out of it)
        time.sleep(0.2)
        assert not take._beating(server)  # type: ignore[arg-type]
    first, second = server.waits
    assert 600.0 - took - 0.001 <= first <= 600.0
    assert second <= first - 0.15


def test_a_server_that_beats_again_between_two_hangs_gets_its_whole_connect_timeout_again() -> None:
    """A take waiting for a channel still with a hung server gives up once the server has stayed
    hung for ``connect_timeout``; a beat in between ends that hang: the next one is given its own
    ``connect_timeout``, not what was left of the first."""
    pool, server = _pool(connect_timeout=0.5), _Server()
    pending = SimpleNamespace(conn=server, index=0)
    take = SlowTake(pool, 0, None)  # type: ignore[arg-type]
    take._give_up_if_hung(pending)  # type: ignore[arg-type]  # hung: its bound starts now
    time.sleep(0.6)  # past that bound
    server.hung_now = False
    take._give_up_if_hung(pending)  # type: ignore[arg-type]  # it beat: that hang is over
    server.hung_now = True
    take._give_up_if_hung(pending)  # type: ignore[arg-type]  # hung again: a new bound, no failure
    time.sleep(0.6)
    with pytest.raises(
        ServerUnavailable, match=r"is hung \(.*within connect_timeout \(0.5 s\)\): the previous"
    ):
        take._give_up_if_hung(pending)  # type: ignore[arg-type]
