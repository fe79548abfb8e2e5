"""Breaker behaviour beyond the spec cases: concurrency, registry, events, introspection."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from foundation_circuit_breaker import (
    BreakerRegistry,
    CircuitBreakerPolicy,
    breakers,
    circuit_breaker_factory,
)

import foundation_core
from foundation_core import SYSTEM_CLOCK, VirtualClock, hookimpl
from foundation_core.errors import CircuitOpenError, PolicyError


def test_count_window_loses_no_call_under_threads() -> None:
    policy = CircuitBreakerPolicy(name="threads", mode="count", window_size=10_000)
    protected = circuit_breaker_factory(policy, registry=BreakerRegistry())(lambda: None)

    def hammer() -> None:
        for _ in range(1000):
            protected()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = protected.breaker.snapshot()
    assert (snap["calls"], snap["failures"], snap["state"]) == (8000, 0, "closed")


def test_threads_failing_together_open_it_exactly_once() -> None:
    policy = CircuitBreakerPolicy(name="t-open", failure_threshold=50, reset_timeout=3600)

    def down() -> None:
        raise ConnectionError

    protected = circuit_breaker_factory(policy, registry=BreakerRegistry())(down)
    refused = []

    def hammer() -> None:
        for _ in range(100):
            try:
                protected()
            except ConnectionError:
                pass
            except CircuitOpenError:
                refused.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert protected.breaker.state == "open"
    assert protected.breaker.opened == 1
    assert len(refused) == protected.breaker.rejected > 0


def test_half_open_admits_only_the_permitted_probes_concurrently() -> None:
    clock = VirtualClock()
    policy = CircuitBreakerPolicy(name="probes", failure_threshold=1, reset_timeout=1, half_open_max_calls=2)
    gate = {"fail": True}

    async def main() -> list[str]:
        release = asyncio.Event()

        async def dependency() -> str:
            if gate["fail"]:
                raise ConnectionError
            await release.wait()
            return "ok"

        protected = circuit_breaker_factory(policy, clock=clock, registry=BreakerRegistry())(dependency)
        with pytest.raises(ConnectionError):
            await protected()
        gate["fail"] = False
        clock.advance(1)
        tasks = [asyncio.create_task(protected()) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert protected.breaker.state == "closed"
        return [r if isinstance(r, str) else type(r).__name__ for r in results]

    assert sorted(asyncio.run(main())) == ["CircuitOpenError"] * 3 + ["ok"] * 2


def test_cancelled_probe_returns_its_permit() -> None:
    clock = VirtualClock()
    policy = CircuitBreakerPolicy(name="cancel", failure_threshold=1, reset_timeout=1)
    breaker = BreakerRegistry().get_or_create(policy, clock)
    breaker.on_failure()
    clock.advance(1)
    probe = breaker.before_call()
    assert probe
    breaker.on_error(asyncio.CancelledError(), probe)
    assert breaker.before_call() == probe  # the permit came back
    assert breaker.state == "half_open"


def test_a_cancellation_is_no_failure_even_under_record_on_base_exception() -> None:
    """``record_on=BaseException`` matches every error; a cancelled or interrupted call still
    says nothing about the dependency, as retry and fallback never treat one as an error."""
    policy = CircuitBreakerPolicy(name="cancel-all", failure_threshold=1, record_on=BaseException)
    protected = circuit_breaker_factory(policy, registry=BreakerRegistry())

    @protected
    async def hangs() -> None:
        await asyncio.sleep(10)

    @protected
    def interrupted() -> None:
        raise KeyboardInterrupt

    async def cancel_one() -> None:
        task = asyncio.create_task(hangs())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert hangs.breaker.snapshot()["state"] == "closed"
    assert policy.counts_as_failure(ConnectionError())


def test_named_breakers_are_shared_and_a_conflicting_policy_is_refused() -> None:
    registry = BreakerRegistry()
    policy = CircuitBreakerPolicy(name="shared", failure_threshold=1)
    a = circuit_breaker_factory(policy, registry=registry)(lambda: 1)
    b = circuit_breaker_factory(policy, registry=registry)(lambda: 2)
    assert a.breaker is b.breaker
    with pytest.raises(PolicyError, match="name"):
        circuit_breaker_factory(CircuitBreakerPolicy(name="shared", failure_threshold=2), registry=registry)


def test_circuit_change_hook_fires_on_each_transition() -> None:
    seen: list[tuple[str, str, str]] = []

    class Observer:
        @hookimpl
        def foundation_on_circuit_change(self, name: str, old_state: str, new_state: str) -> None:
            seen.append((name, old_state, new_state))

    clock = VirtualClock()
    with foundation_core.start(plugins=[Observer()], entry_points=False):
        policy = CircuitBreakerPolicy(name="hooked", failure_threshold=1, reset_timeout=1)
        protected = circuit_breaker_factory(policy, clock=clock, registry=BreakerRegistry())(lambda: "ok")
        protected.breaker.on_failure()
        clock.advance(1)
        assert protected() == "ok"
    assert seen == [
        ("hooked", "closed", "open"),
        ("hooked", "open", "half_open"),
        ("hooked", "half_open", "closed"),
    ]


def test_time_window_snapshot_counts_recent_calls_only() -> None:
    clock = VirtualClock()
    policy = CircuitBreakerPolicy(name="tw", mode="time", window_size=5, minimum_calls=100)
    protected = circuit_breaker_factory(policy, clock=clock, registry=BreakerRegistry())(lambda: None)
    for _ in range(3):
        protected()
    clock.advance(6)
    protected()
    assert protected.breaker.snapshot()["calls"] == 1


def test_process_registry_is_the_default() -> None:
    policy = CircuitBreakerPolicy(name="test-default-registry")
    protected = circuit_breaker_factory(policy)(lambda: None)
    try:
        assert breakers.get("test-default-registry") is protected.breaker
    finally:
        breakers.remove("test-default-registry")


def test_sync_and_async_callers_share_one_state_machine() -> None:
    clock = VirtualClock()
    protect = circuit_breaker_factory(
        CircuitBreakerPolicy(name="mixed", failure_threshold=2), clock=clock, registry=BreakerRegistry()
    )

    @protect
    def sync_call() -> None:
        raise ConnectionError

    @protect
    async def async_call() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        sync_call()
    with pytest.raises(ConnectionError):
        asyncio.run(async_call())
    with pytest.raises(CircuitOpenError):
        sync_call()
    assert sync_call.breaker is async_call.breaker


class AsyncClient:
    """An HTTP-client-style callable: an object whose ``__call__`` is ``async def``."""

    async def __call__(self) -> None:
        raise ConnectionError("down")


@pytest.mark.parametrize("slow_call_duration", [None, 10.0], ids=["plain", "timed"])
@pytest.mark.parametrize("partial", [False, True], ids=["object", "partial"])
def test_an_async_callable_object_is_protected_as_async(
    slow_call_duration: float | None, partial: bool
) -> None:
    """Wrapped as sync, returning its coroutine would count as a success and the error raised
    when it is awaited would never reach the breaker."""
    policy = CircuitBreakerPolicy(name="client", failure_threshold=1, slow_call_duration=slow_call_duration)
    target = functools.partial(AsyncClient()) if partial else AsyncClient()
    protected = circuit_breaker_factory(policy, clock=VirtualClock(), registry=BreakerRegistry())(target)
    assert inspect.iscoroutinefunction(protected)
    with pytest.raises(ConnectionError):
        asyncio.run(protected())
    assert protected.breaker.state == "open"


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
        TypeError, match=r"^circuit_breaker cannot protect .*generator function.*consumes it"
    ) as info:
        circuit_breaker_factory(CircuitBreakerPolicy(name="gen"), registry=BreakerRegistry())(generator)
    assert getattr(generator, "__name__", "rows") in str(info.value)  # a partial shows its function


def _two_probe_breaker(name: str, clock: VirtualClock) -> Any:
    policy = CircuitBreakerPolicy(name=name, failure_threshold=1, reset_timeout=1, half_open_max_calls=2)
    return BreakerRegistry().get_or_create(policy, clock)


def _half_open_again(breaker: Any, clock: VirtualClock) -> None:
    """Fail a trial call of the current half-open period (or trip a closed breaker), then wait
    out the reset: the next ``before_call`` starts a new half-open period."""
    breaker.on_failure(breaker.before_call() if breaker.state != "closed" else 0)
    clock.advance(breaker.policy.reset_timeout)


def test_a_stale_probe_cancelled_in_a_later_half_open_period_keeps_its_permit_to_itself() -> None:
    """Its permit belonged to the earlier period; handed to the new one, the new period would
    let more than half_open_max_calls trial calls run at once."""
    clock = VirtualClock()
    breaker = _two_probe_breaker("stale-cancel", clock)
    _half_open_again(breaker, clock)
    stale = breaker.before_call()  # a probe of the first half-open period, still running
    _half_open_again(breaker, clock)  # its sibling probe failed: open, then half-open again
    fresh = [breaker.before_call(), breaker.before_call()]  # the new period's two permits
    breaker.on_error(asyncio.CancelledError(), stale)
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    assert stale not in fresh


def test_a_stale_probe_succeeding_late_does_not_count_towards_closing() -> None:
    clock = VirtualClock()
    breaker = _two_probe_breaker("stale-ok", clock)
    _half_open_again(breaker, clock)
    stale = breaker.before_call()
    _half_open_again(breaker, clock)
    fresh = breaker.before_call()
    breaker.on_success(stale)  # from the previous period: ignored
    breaker.on_success(fresh)
    assert breaker.state == "half_open"  # one of this period's two trial calls succeeded
    breaker.on_success(breaker.before_call())
    assert breaker.state == "closed"


def test_a_stale_probe_failing_late_does_not_reopen_the_next_period() -> None:
    clock = VirtualClock()
    breaker = _two_probe_breaker("stale-fail", clock)
    _half_open_again(breaker, clock)
    stale = breaker.before_call()
    _half_open_again(breaker, clock)
    fresh = breaker.before_call()
    breaker.on_failure(stale)  # from the previous period: ignored
    assert breaker.state == "half_open"
    breaker.on_success(fresh)
    breaker.on_success(breaker.before_call())
    assert breaker.state == "closed"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_cancelled_or_interrupted_after_slow_call_duration_is_a_slow_call(mode: str) -> None:
    """A timeout outside the breaker (the pipeline's order) cancels a hung call: the breaker sees
    only the cancellation, so the time the call took is what tells it the dependency hangs."""
    clock = VirtualClock()
    policy = CircuitBreakerPolicy(name="hung", failure_threshold=2, slow_call_duration=1.0)
    stop: type[BaseException] = asyncio.CancelledError if mode == "async" else KeyboardInterrupt

    def hang(seconds: float) -> None:
        clock.advance(seconds)
        raise stop

    async def ahang(seconds: float) -> None:
        hang(seconds)

    protected = circuit_breaker_factory(policy, clock=clock, registry=BreakerRegistry())(
        ahang if mode == "async" else hang
    )

    def run(seconds: float) -> None:
        result = protected(seconds)
        if mode == "async":
            asyncio.run(result)

    def call(seconds: float) -> None:
        with pytest.raises(stop):
            run(seconds)

    call(0.5)  # cancelled early: says nothing about the dependency
    assert protected.breaker.snapshot()["failures"] == 0
    call(1.0)
    call(5.0)
    assert protected.breaker.state == "open"


def test_a_hung_call_cancelled_by_an_outer_asyncio_timeout_trips_the_breaker() -> None:
    policy = CircuitBreakerPolicy(name="hung-real", failure_threshold=2, slow_call_duration=0.01)

    @circuit_breaker_factory(policy, registry=BreakerRegistry())
    async def query() -> None:
        await asyncio.Event().wait()  # the dependency never answers

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.03):
                    await query()

    asyncio.run(main())
    assert query.breaker.state == "open"


def test_the_same_name_on_another_clock_is_another_breaker() -> None:
    """A test or conformance run on a virtual clock must not hand its frozen-time breaker to
    production code asking for the same name on the system clock (it would never half-open)."""
    policy = CircuitBreakerPolicy(name="test-payments", failure_threshold=1)
    virtual = VirtualClock()
    try:
        in_test = circuit_breaker_factory(policy, clock=virtual)(lambda: None)
        in_production = circuit_breaker_factory(policy)(lambda: None)
        assert in_production.breaker is not in_test.breaker
        assert in_production.breaker.clock is SYSTEM_CLOCK and in_test.breaker.clock is virtual
        assert breakers.get("test-payments") is in_production.breaker
        assert breakers.get("test-payments", virtual) is in_test.breaker
        assert circuit_breaker_factory(policy, clock=virtual)(lambda: None).breaker is in_test.breaker
    finally:
        breakers.remove("test-payments")
    assert breakers.get("test-payments") is None and breakers.get("test-payments", virtual) is None


def test_remove_clock_forgets_only_that_clocks_breakers() -> None:
    registry, virtual = BreakerRegistry(), VirtualClock()
    kept = registry.get_or_create(CircuitBreakerPolicy(name="a"))
    registry.get_or_create(CircuitBreakerPolicy(name="a"), virtual)
    registry.get_or_create(CircuitBreakerPolicy(name="b"), virtual)
    registry.remove_clock(virtual)
    assert list(registry) == [kept]


def test_a_call_refused_by_an_inner_rate_limiter_is_not_a_failure_of_the_dependency() -> None:
    from foundation_core.errors import RateLimited

    policy = CircuitBreakerPolicy(name="throttled", failure_threshold=2)
    calls = []

    def throttled() -> None:
        calls.append(1)
        raise RateLimited("api", 0.5)

    protected = circuit_breaker_factory(policy, registry=BreakerRegistry())(throttled)
    for _ in range(5):
        with pytest.raises(RateLimited):
            protected()
    snap = protected.breaker.snapshot()
    assert snap["state"] == "closed" and len(calls) == 5


def test_local_throttling_in_a_pipeline_never_opens_the_circuit() -> None:
    from foundation_core.errors import RateLimited

    with foundation_core.start(env={"FOUNDATION_PLUGINS": "circuit_breaker,rate_limit"}) as hub:
        protected = hub.pipeline(
            circuit_breaker={"name": "throttled-pipeline", "failure_threshold": 1},
            rate_limit={"name": "tight", "rate": 0.001, "burst": 1},
        )(lambda: "ok")
        assert protected() == "ok"
        for _ in range(3):
            with pytest.raises(RateLimited):
                protected()
        assert protected.breaker.snapshot()["state"] == "closed"


class _ClosedByAProbeMeanwhile:
    """The breaker's lock, wrapped: the first time it is taken, another thread's last probe has
    just closed the circuit (the moment a failing call can be between its last lock-free step
    and the lock)."""

    def __init__(self, breaker: Any) -> None:
        self.breaker, self.lock, self.armed = breaker, breaker._lock, True

    def __enter__(self) -> None:
        if self.armed:
            self.armed = False
            self.breaker._to("closed")
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_a_failure_racing_the_close_is_judged_on_the_new_window() -> None:
    """A call admitted before the circuit opened fails just as a probe closes it: its failure
    goes into the fresh window, not the one whose failures opened the circuit (which would
    re-open it at once on stale counts)."""
    clock = VirtualClock()
    policy = CircuitBreakerPolicy(name="race-close", mode="count", window_size=4, minimum_calls=2)
    breaker = BreakerRegistry().get_or_create(policy, clock)
    breaker.on_failure()
    breaker.on_failure()
    assert breaker.state == "open"
    breaker._lock = _ClosedByAProbeMeanwhile(breaker)
    breaker.on_failure()  # the straggler
    assert breaker.state == "closed"
    assert breaker.snapshot()["calls"] == 1
