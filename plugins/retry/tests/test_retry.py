"""The retry wrapper: sync and async behave alike; tenacity is entered only after a failure."""

from __future__ import annotations

import asyncio
import functools
import inspect
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from foundation_retry import RetryPolicy, retry_factory

import foundation_core
from foundation_core import VirtualClock, hookimpl
from foundation_core._clock import deadline_var
from foundation_core.errors import RetryError


def flaky(failures: int, error: type[BaseException] = ConnectionError) -> Any:
    state = {"calls": 0}

    def fn(x: int = 1) -> int:
        state["calls"] += 1
        if state["calls"] <= failures:
            raise error("boom")
        return x * 10

    fn.state = state  # type: ignore[attr-defined]
    return fn


def as_async(fn: Any) -> Any:
    async def afn(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return afn


def run(protected: Any, *args: Any) -> Any:
    result = protected(*args)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wrap(policy: RetryPolicy, fn: Any, mode: str, clock: VirtualClock) -> Any:
    return retry_factory(policy, clock=clock)(as_async(fn) if mode == "async" else fn)


def test_arguments_pass_through_on_every_attempt(mode: str) -> None:
    clock = VirtualClock()
    fn = flaky(2)
    assert run(wrap(RetryPolicy(), fn, mode, clock), 4) == 40
    assert fn.state["calls"] == 3
    assert clock.sleeps == pytest.approx([0.1, 0.2])


def test_exhaustion_chains_the_last_error_and_reports_elapsed(mode: str) -> None:
    clock = VirtualClock()
    fn = flaky(99)
    with pytest.raises(RetryError) as info:
        run(wrap(RetryPolicy(max_attempts=3, backoff="fixed", base_delay=1.0), fn, mode, clock))
    assert info.value.attempts == 3
    assert info.value.elapsed == pytest.approx(2.0)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert fn.state["calls"] == 3


def test_max_attempts_one_gives_retry_error_without_waiting(mode: str) -> None:
    clock = VirtualClock()
    with pytest.raises(RetryError):
        run(wrap(RetryPolicy(max_attempts=1), flaky(1), mode, clock))
    assert clock.sleeps == []


def test_keyboard_interrupt_is_never_retried() -> None:
    fn = flaky(1, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        retry_factory(RetryPolicy(), clock=VirtualClock())(fn)()
    assert fn.state["calls"] == 1


def test_enclosing_deadline_stops_retries_early(mode: str) -> None:
    clock = VirtualClock()
    token = deadline_var.set(0.25)  # as an enclosing timeout would publish it
    try:
        with pytest.raises(RetryError, match="deadline"):
            run(wrap(RetryPolicy(max_attempts=10), flaky(99), mode, clock))
    finally:
        deadline_var.reset(token)
    assert clock.sleeps == pytest.approx([0.1])


def test_injected_random_drives_jitter() -> None:
    clock = VirtualClock()
    policy = RetryPolicy(max_attempts=3, jitter=True, random=lambda: 0.5)
    assert retry_factory(policy, clock=clock)(flaky(2))() == 10
    assert clock.sleeps == pytest.approx([0.05, 0.1])


def test_on_retry_hook_fires_before_each_wait() -> None:
    seen: list[tuple[str, int, float, str]] = []

    class Observer:
        @hookimpl
        def foundation_on_retry(self, name: str, attempt: int, delay: float, error: BaseException) -> None:
            seen.append((name, attempt, delay, type(error).__name__))

    with foundation_core.start(plugins=[Observer()], entry_points=False):
        retry_factory(RetryPolicy(name="db"), clock=VirtualClock())(flaky(2))()
    assert seen == [("db", 1, 0.1, "ConnectionError"), ("db", 2, pytest.approx(0.2), "ConnectionError")]


def test_wrapper_keeps_the_function_name() -> None:
    def load_model() -> None: ...

    assert retry_factory(RetryPolicy())(load_model).__name__ == "load_model"


def test_factory_refuses_a_foreign_policy() -> None:
    with pytest.raises(TypeError, match="RetryPolicy"):
        retry_factory({"max_attempts": 3})  # type: ignore[arg-type]


def test_success_path_and_plugin_never_import_tenacity() -> None:
    code = (
        "import sys, foundation_retry.plugin\n"
        "from foundation_retry import RetryPolicy, retry_factory\n"
        "f = retry_factory(RetryPolicy())(lambda: 1)\n"
        "assert f() == 1\n"
        "print('tenacity' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rejected_results_give_up_with_the_last_result(mode: str) -> None:
    clock = VirtualClock()
    results = iter(["busy-1", "busy-2", "busy-3"])

    def poll() -> str:
        return next(results)

    policy = RetryPolicy(max_attempts=3, base_delay=0.1, retry_if_result=lambda r: r.startswith("busy"))
    protected = retry_factory(policy, clock=clock)(poll if mode == "sync" else as_async(poll))
    with pytest.raises(RetryError, match="last result rejected") as exc_info:
        run(protected)
    assert exc_info.value.attempts == 3
    assert exc_info.value.last_result == "busy-3"
    assert exc_info.value.__cause__ is None


class AsyncClient:
    """An HTTP-client-style callable: an object whose ``__call__`` is ``async def``."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    async def __call__(self, x: int = 1) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("flaky")
        return x * 10


@pytest.mark.parametrize("partial", [False, True], ids=["object", "partial"])
def test_an_async_callable_object_is_retried_as_async(partial: bool) -> None:
    """Its call returns a coroutine; wrapped as sync, that return would count as a success and
    the error raised when it is awaited would escape every retry."""
    client = AsyncClient(failures=2)
    target = functools.partial(client, 4) if partial else client
    protected = retry_factory(RetryPolicy(), clock=VirtualClock())(target)
    assert inspect.iscoroutinefunction(protected)
    assert asyncio.run(protected()) == (40 if partial else 10)
    assert client.calls == 3


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
    refused = r"^retry cannot protect .*generator function.*consumes it"
    with pytest.raises(TypeError, match=refused) as info:
        retry_factory(RetryPolicy(), clock=VirtualClock())(generator)
    assert getattr(generator, "__name__", "rows") in str(info.value)  # a partial shows its function


def test_an_interrupt_on_a_later_attempt_is_not_retried_either(mode: str) -> None:
    """Attempt 1 lets a cancellation or interrupt through; attempts 2..n (run by tenacity, which
    catches BaseException) must too, even under ``retry_on=BaseException``."""
    clock = VirtualClock()
    stop: type[BaseException] = asyncio.CancelledError if mode == "async" else KeyboardInterrupt
    calls = []

    def fn() -> None:
        calls.append(1)
        raise ConnectionError if len(calls) == 1 else stop

    protected = wrap(RetryPolicy(max_attempts=3, base_delay=0, retry_on=[BaseException]), fn, mode, clock)
    with pytest.raises(stop):
        run(protected)
    assert len(calls) == 2


def test_later_attempts_do_not_run_while_the_first_error_is_being_handled(mode: str) -> None:
    """Attempts 2..n run after attempt 1's error was handled, not inside its ``except``: the last
    error's own chain reaches the caller unchanged (no ``__context__`` pointing at attempt 1), and
    the function does not see attempt 1's error as the one being handled (``sys.exc_info``)."""
    clock = VirtualClock()
    handled: list[BaseException | None] = []

    def fn() -> None:
        handled.append(sys.exc_info()[1])
        raise ConnectionError(f"attempt {len(handled)}")

    with pytest.raises(RetryError) as info:
        run(wrap(RetryPolicy(max_attempts=3, base_delay=0), fn, mode, clock))
    last = info.value.__cause__
    assert isinstance(last, ConnectionError) and str(last) == "attempt 3"
    assert last.__context__ is None
    assert handled == [None, None, None]


def test_a_result_predicate_that_raises_propagates_its_own_error(mode: str) -> None:
    """A ``retry_if_result`` that raises is not retried and not hidden: its error reaches the
    caller, with no unrelated attempt's error attached."""
    clock = VirtualClock()

    def judge(result: object) -> bool:
        raise ValueError(f"cannot judge {result!r}")

    fn = flaky(1)
    with pytest.raises(ValueError, match="cannot judge 10") as info:
        run(wrap(RetryPolicy(max_attempts=3, base_delay=0, retry_if_result=judge), fn, mode, clock))
    assert fn.state["calls"] == 2 and info.value.__context__ is None
