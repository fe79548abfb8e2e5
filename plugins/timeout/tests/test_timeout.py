"""Timeout: documented semantics for sync (deadline / thread mode) and async (cancellation)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from foundation_conformance import check_conformance
from foundation_timeout import TimeoutPolicy, timeout_factory

from foundation_core import VirtualClock, current_deadline
from foundation_core.errors import PolicyError, TimeoutExceeded


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("timeout", 0), ("timeout", 86_401), ("sync_mode", "signal"), ("name", None), ("name", "")],
)
def test_invalid_values_name_the_parameter(parameter: str, value: object) -> None:
    with pytest.raises(PolicyError) as info:
        TimeoutPolicy(**{parameter: value})  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_deadline_is_published_to_the_call_and_removed_after() -> None:
    clock = VirtualClock(start=100.0)
    seen = []

    @timeout_factory(TimeoutPolicy(timeout=2.0), clock=clock)
    def work() -> str:
        seen.append(current_deadline())
        return "done"

    assert work() == "done"
    assert seen == [102.0]
    assert current_deadline() is None


def test_inner_timeout_never_extends_an_outer_deadline() -> None:
    clock = VirtualClock()
    seen = []
    inner = timeout_factory(TimeoutPolicy(timeout=10.0), clock=clock)(lambda: seen.append(current_deadline()))
    outer = timeout_factory(TimeoutPolicy(timeout=1.0), clock=clock)(inner)
    outer()
    assert seen == [1.0]


def test_thread_mode_stops_waiting_at_the_deadline() -> None:
    release = threading.Event()
    policy = TimeoutPolicy(name="blocking", timeout=0.05, sync_mode="thread")
    protected = timeout_factory(policy)(release.wait)
    try:
        with pytest.raises(TimeoutExceeded) as info:
            protected()
        assert (info.value.name, info.value.timeout) == ("blocking", 0.05)
    finally:
        release.set()


def test_thread_mode_never_starts_a_call_whose_caller_gave_up_waiting_for_a_worker() -> None:
    """With every worker busy, a call times out while still queued: it must not run later (a
    retry around it would run it twice)."""
    from foundation_timeout._wrap import _worker_pool

    release, ran = threading.Event(), []
    busy = [_worker_pool().submit(release.wait) for _ in range(_worker_pool()._max_workers)]
    protected = timeout_factory(TimeoutPolicy(timeout=0.05, sync_mode="thread"))(lambda: ran.append(1))
    try:
        with pytest.raises(TimeoutExceeded):
            protected()
    finally:
        release.set()
        for f in busy:
            f.result(timeout=5)
    _worker_pool().submit(lambda: None).result(timeout=5)  # the queue has drained
    assert ran == []


def test_thread_mode_returns_the_result_and_raises_own_errors() -> None:
    protected = timeout_factory(TimeoutPolicy(timeout=30, sync_mode="thread"))(lambda x: 10 // x)
    assert protected(2) == 5
    with pytest.raises(ZeroDivisionError):
        protected(0)


def test_async_call_is_cancelled_at_the_deadline() -> None:
    cancelled = []

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    protected = timeout_factory(TimeoutPolicy(timeout=0.01))(hang)
    with pytest.raises(TimeoutExceeded) as info:
        asyncio.run(protected())
    assert cancelled == [True]
    assert isinstance(info.value.__cause__, TimeoutError)


def test_async_own_timeout_error_is_not_relabelled() -> None:
    async def own() -> None:
        raise TimeoutError("the callee's own")

    with pytest.raises(TimeoutError, match="the callee's own") as info:
        asyncio.run(timeout_factory(TimeoutPolicy(timeout=30))(own)())
    assert not isinstance(info.value, TimeoutExceeded)


def test_builtin_timeout_passes_the_conformance_suite() -> None:
    assert check_conformance("timeout").passed


class SlowClient:
    """An HTTP-client-style callable: an object whose ``__call__`` is ``async def``."""

    async def __call__(self, delay: float = 0.5) -> str:
        await asyncio.sleep(delay)
        return "late"


@pytest.mark.parametrize("partial", [False, True], ids=["object", "partial"])
def test_an_async_callable_object_is_cancelled_at_the_deadline(partial: bool) -> None:
    """Wrapped as sync, the wrapper would return its coroutine at once (in time) and the late
    result would reach the caller."""
    protected = timeout_factory(TimeoutPolicy(timeout=0.01))(
        functools.partial(SlowClient(), 0.5) if partial else SlowClient()
    )
    assert inspect.iscoroutinefunction(protected)
    with pytest.raises(TimeoutExceeded):
        asyncio.run(protected())


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
    refused = r"^timeout cannot protect .*generator function.*consumes it"
    with pytest.raises(TypeError, match=refused) as info:
        timeout_factory(TimeoutPolicy())(generator)
    assert getattr(generator, "__name__", "rows") in str(info.value)  # a partial shows its function


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_a_callee_that_swallows_the_cancellation_still_times_out(outcome: str) -> None:
    """Some libraries catch ``CancelledError`` and return a default (or fail cleaning up): the
    caller must get ``TimeoutExceeded``, never the late outcome."""

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if outcome == "raises":
                raise ConnectionError("cleanup failed") from None
        return "late"

    protected = timeout_factory(TimeoutPolicy(timeout=0.01))(stubborn)
    with pytest.raises(TimeoutExceeded) as info:
        asyncio.run(protected())
    assert isinstance(info.value.__cause__, ConnectionError) == (outcome == "raises")
