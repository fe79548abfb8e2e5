"""Token bucket: burst then rate, waiting within max_wait, fail fast otherwise; sync and async alike."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from foundation_conformance import check_conformance
from foundation_rate_limit import RateLimitPolicy, TokenBucket, rate_limit_factory
from hypothesis import given, settings
from hypothesis import strategies as st

import foundation_core
from foundation_core import VirtualClock, hookimpl
from foundation_core._clock import deadline_var
from foundation_core.errors import PolicyError, RateLimited


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("rate", 0), ("burst", 0), ("burst", 2.5), ("max_wait", -1), ("name", None), ("name", "")],
)
def test_invalid_values_name_the_parameter(parameter: str, value: object) -> None:
    with pytest.raises(PolicyError) as info:
        RateLimitPolicy(**{parameter: value})  # type: ignore[arg-type]
    assert info.value.parameter == parameter


@given(
    st.floats(0.1, 1000),
    st.integers(1, 100),
    st.floats(-100, 100),
    st.floats(0, 1000),
)
def test_refill_never_exceeds_burst_and_never_loses_tokens(
    rate: float, burst: int, tokens: float, elapsed: float
) -> None:
    policy = RateLimitPolicy(rate=rate, burst=burst)
    after = policy.refill(min(tokens, burst), elapsed)
    assert after <= burst
    assert after >= min(tokens, burst)


def test_async_callers_wait_their_turn() -> None:
    clock = VirtualClock()
    limited = rate_limit_factory(RateLimitPolicy(rate=10, burst=1, max_wait=None), clock=clock)

    @limited
    async def call(i: int) -> int:
        return i

    async def main() -> list[int]:
        return [await call(i) for i in range(4)]

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_threads_never_get_more_than_burst_at_once() -> None:
    clock = VirtualClock()  # frozen time: only the burst is available
    limited = rate_limit_factory(RateLimitPolicy(rate=1, burst=50), clock=clock)(lambda: 1)
    admitted, refused = [], []

    def hammer() -> None:
        for _ in range(100):
            try:
                admitted.append(limited())
            except RateLimited:
                refused.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(refused)) == (50, 350)


def test_refusal_fires_the_rate_limited_hook() -> None:
    seen: list[tuple[str, float]] = []

    class Observer:
        @hookimpl
        def foundation_on_rate_limited(self, name: str, retry_after: float) -> None:
            seen.append((name, retry_after))

    with foundation_core.start(plugins=[Observer()], entry_points=False):
        limited = rate_limit_factory(RateLimitPolicy(name="api", rate=2, burst=1), clock=VirtualClock())(
            lambda: 1
        )
        limited()
        with pytest.raises(RateLimited):
            limited()
    assert seen == [("api", 0.5)]


def test_bucket_reports_available_tokens() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(RateLimitPolicy(rate=4, burst=2), clock)
    bucket.reserve()
    assert bucket.tokens == pytest.approx(1.0)
    clock.advance(0.125)
    assert bucket.tokens == pytest.approx(1.5)


def test_builtin_rate_limit_passes_the_conformance_suite() -> None:
    assert check_conformance("rate_limit").passed


class AsyncClient:
    """An HTTP-client-style callable: an object whose ``__call__`` is ``async def``."""

    async def __call__(self, i: int) -> int:
        return i


@pytest.mark.parametrize("partial", [False, True], ids=["object", "partial"])
def test_an_async_callable_object_waits_without_blocking_the_loop(partial: bool) -> None:
    """Wrapped as sync, its wait would be a blocking ``sleep`` on the event loop's thread, and
    layers above (a timeout) would see a sync function."""
    clock = VirtualClock()
    limited = rate_limit_factory(RateLimitPolicy(rate=10, burst=1, max_wait=None), clock=clock)
    protected = limited(functools.partial(AsyncClient(), 7) if partial else AsyncClient())
    assert inspect.iscoroutinefunction(protected)

    async def main() -> list[int]:
        return [await (protected() if partial else protected(7)) for _ in range(3)]

    assert asyncio.run(main()) == [7, 7, 7]
    assert clock.sleeps == pytest.approx([0.1, 0.1])


def rows() -> Iterator[int]:
    yield 1


async def stream() -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    "generator", [rows, stream, functools.partial(rows)], ids=["sync", "async", "partial"]
)
def test_a_generator_function_is_refused_when_decorated(generator: Any) -> None:
    """Its call only creates the generator; the work and its errors come while it is iterated,
    outside the wrapper, so the pattern would protect nothing."""
    with pytest.raises(
        TypeError, match=r"^rate_limit cannot protect .*generator function.*consumes it"
    ) as info:
        rate_limit_factory(RateLimitPolicy(), clock=VirtualClock())(generator)
    assert getattr(generator, "__name__", "rows") in str(info.value)  # a partial shows its function


class FrozenClock:
    """Time stands still; a wait never ends: ``asleep`` awaits until cancelled, ``sleep`` is
    interrupted (as by Ctrl-C)."""

    virtual = True

    def now(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt

    async def asleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


def test_a_cancelled_waiter_gives_its_token_back() -> None:
    """It reserved the token when its wait was granted; kept, the next caller would wait for
    a token nobody used."""
    limited = rate_limit_factory(RateLimitPolicy(rate=10, burst=1, max_wait=5), clock=FrozenClock())

    @limited
    async def call() -> str:
        return "ok"

    async def main() -> None:
        await call()  # takes the only token
        waiter = asyncio.create_task(call())  # reserves the next one, then waits for it
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())
    assert call.bucket.tokens == pytest.approx(0.0)


def test_an_interrupted_sync_waiter_gives_its_token_back() -> None:
    protected = rate_limit_factory(RateLimitPolicy(rate=10, burst=1, max_wait=5), clock=FrozenClock())(
        lambda: "ok"
    )
    assert protected() == "ok"
    with pytest.raises(KeyboardInterrupt):
        protected()
    assert protected.bucket.tokens == pytest.approx(0.0)


def test_a_wait_that_would_cross_an_enclosing_deadline_is_refused_at_once() -> None:
    """Waiting would only end in the timeout's error, after sleeping till the deadline; the
    caller learns at once, and retry_after says when the token comes."""
    clock = VirtualClock()
    calls = []
    protected = rate_limit_factory(RateLimitPolicy(rate=1, burst=1, max_wait=5), clock=clock)(
        lambda: calls.append(clock.now())
    )
    protected()
    token = deadline_var.set(0.5)  # as an enclosing timeout would publish it
    try:
        with pytest.raises(RateLimited) as info:
            protected()
    finally:
        deadline_var.reset(token)
    assert info.value.retry_after == pytest.approx(1.0)
    assert (calls, clock.sleeps) == ([0.0], [])
    assert protected.bucket.tokens == pytest.approx(0.0)  # nothing reserved


def test_a_wait_that_ends_before_an_enclosing_deadline_is_granted() -> None:
    clock = VirtualClock()
    protected = rate_limit_factory(RateLimitPolicy(rate=1, burst=1, max_wait=5), clock=clock)(lambda: "ok")
    protected()
    token = deadline_var.set(1.0)
    try:
        assert protected() == "ok"
    finally:
        deadline_var.reset(token)
    assert clock.sleeps == pytest.approx([1.0])


class WaitingClock:
    """Time moves only by ``advance``; ``asleep`` records when the caller will start (now plus
    its wait) and then waits until cancelled."""

    virtual = True

    def __init__(self) -> None:
        self.time = 0.0
        self.starts: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt

    async def asleep(self, seconds: float) -> None:
        self.starts.append(self.time + seconds)
        await asyncio.Event().wait()


def test_a_waiter_cancelled_ahead_of_another_does_not_let_a_newcomer_start_with_it() -> None:
    """Waiters hold the 1 s and 2 s slots; the first is cancelled. Its token handed back, the
    balance would give the next caller the 2 s slot too: two calls at once with burst 1."""
    clock = WaitingClock()

    @rate_limit_factory(RateLimitPolicy(rate=1, burst=1, max_wait=None), clock=clock)
    async def call() -> None:
        pass

    async def main() -> None:
        await call()  # t=0, the only token
        first, second = asyncio.create_task(call()), asyncio.create_task(call())
        await asyncio.sleep(0)
        clock.time = 0.5
        first.cancel()
        newcomer = asyncio.create_task(call())
        await asyncio.sleep(0)
        for task in (second, newcomer):
            task.cancel()
        await asyncio.gather(first, second, newcomer, return_exceptions=True)

    asyncio.run(main())
    first, second, newcomer = clock.starts
    assert (first, second) == (1.0, 2.0)
    assert newcomer >= second + 1.0


def test_the_last_waiter_cancelled_hands_its_slot_to_the_next_caller() -> None:
    clock = WaitingClock()

    @rate_limit_factory(RateLimitPolicy(rate=1, burst=1, max_wait=None), clock=clock)
    async def call() -> None:
        pass

    async def main() -> None:
        await call()
        waiters = [asyncio.create_task(call()) for _ in range(2)]
        await asyncio.sleep(0)
        waiters[1].cancel()  # the last in line: nobody waits behind it
        waiters.append(asyncio.create_task(call()))
        await asyncio.sleep(0)
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    asyncio.run(main())
    assert clock.starts == [1.0, 2.0, 2.0]  # the third caller took the cancelled one's slot


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.5, 20),
    st.integers(1, 4),
    st.lists(st.sampled_from(["call", "cancel", 0.1, 0.5, 1.5]), max_size=60),
    st.randoms(use_true_random=False),
)
def test_starts_never_exceed_burst_plus_rate_times_the_interval(
    rate: float, burst: int, script: list[Any], rnd: Any
) -> None:
    """However waiters are granted and cancelled (any of those still waiting, at any time), the
    calls that start fit the bucket: at most ``burst + rate * (b - a)`` start in any ``[a, b]``."""
    clock = VirtualClock()
    bucket = TokenBucket(RateLimitPolicy(rate=rate, burst=burst, max_wait=None), clock)
    started: list[float] = []
    waiting: list[tuple[float, int]] = []  # (start time, slot) of granted waits not yet over
    for step in script:
        if isinstance(step, float):
            clock.advance(step)
            started += [t for t, _ in waiting if t <= clock.now()]
            waiting = [(t, slot) for t, slot in waiting if t > clock.now()]
        elif step == "call":
            wait, slot = bucket.reserve_slot()
            if wait:
                waiting.append((clock.now() + wait, slot))
            else:
                started.append(clock.now())
        elif waiting:
            cancelled = waiting.pop(rnd.randrange(len(waiting)))
            bucket.give_back(cancelled[1])
    started = sorted(started + [t for t, _ in waiting])
    for i, a in enumerate(started):
        for j in range(i, len(started)):
            assert j - i + 1 <= burst + rate * (started[j] - a) + 1e-6
