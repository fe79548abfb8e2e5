"""Fallback: listed errors become a value or a handler's result; the rest propagate."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from foundation_conformance import check_conformance
from foundation_fallback import FallbackPolicy, fallback_factory

from foundation_core.errors import PolicyError


def test_handler_receives_the_error() -> None:
    policy = FallbackPolicy(on=[KeyError], handler=lambda err: ("default", type(err).__name__))
    assert fallback_factory(policy)(lambda: {}["x"])() == ("default", "KeyError")


def test_async_handler_is_awaited_around_async_callables() -> None:
    async def handler(err: BaseException) -> str:
        return f"async fallback for {err}"

    @fallback_factory(FallbackPolicy(handler=handler))
    async def fetch() -> str:
        raise ConnectionError("offline")

    assert asyncio.run(fetch()) == "async fallback for offline"


def test_async_handler_cannot_guard_a_sync_callable() -> None:
    async def handler(err: BaseException) -> None: ...

    with pytest.raises(TypeError, match="async handler"):
        fallback_factory(FallbackPolicy(handler=handler))(lambda: None)


def test_base_exceptions_are_never_swallowed() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fallback_factory(FallbackPolicy(on=[BaseException]))(interrupted)()


def test_unknown_exception_name_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"fallback\.on="):
        FallbackPolicy(on=["Nope"])


def test_builtin_fallback_passes_the_conformance_suite() -> None:
    assert check_conformance("fallback").passed


class AsyncCallable:
    """An HTTP-client-style callable: an object whose ``__call__`` is ``async def``."""

    async def __call__(self, error: BaseException | None = None) -> str:
        if error is None:
            raise ConnectionError("offline")
        return f"handled {error}"


@pytest.mark.parametrize("partial", [False, True], ids=["object", "partial"])
def test_an_async_callable_object_gets_the_fallback(partial: bool) -> None:
    """Wrapped as sync, returning its coroutine would pass the boundary and the error raised
    when it is awaited would reach the caller."""
    protected = fallback_factory(FallbackPolicy(value="cached"))(
        functools.partial(AsyncCallable()) if partial else AsyncCallable()
    )
    assert inspect.iscoroutinefunction(protected)
    assert asyncio.run(protected()) == "cached"


def test_an_async_callable_handler_cannot_guard_a_sync_callable() -> None:
    with pytest.raises(TypeError, match="async handler"):
        fallback_factory(FallbackPolicy(handler=AsyncCallable()))(lambda: None)


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
        TypeError, match=r"^fallback cannot protect .*generator function.*consumes it"
    ) as info:
        fallback_factory(FallbackPolicy(value=[]))(generator)
    assert getattr(generator, "__name__", "rows") in str(info.value)  # a partial shows its function


def test_the_result_of_a_call_is_refused_when_decorated() -> None:
    """``fallback(...)(price())``, the function's result instead of the function: each call
    raised "not callable", which ``on=Exception`` turned into the fallback value, for ever."""
    with pytest.raises(TypeError, match=r"^fallback cannot protect a dict object: it is not callable"):
        fallback_factory(FallbackPolicy(value="cached"))({"price": 3})


@pytest.mark.parametrize("on", ["KeyboardInterrupt", ["ConnectionError", "asyncio.CancelledError"]])
def test_on_refuses_classes_that_are_not_exceptions(on: object) -> None:
    """A cancellation or an interrupt is never replaced by a fallback; listing one could only mislead."""
    with pytest.raises(PolicyError, match="is not an Exception") as info:
        FallbackPolicy(on=on)  # type: ignore[arg-type]
    assert (info.value.parameter, info.value.value) == ("on", on)


def test_catches_never_claims_a_cancellation_or_interrupt() -> None:
    policy = FallbackPolicy(on=[BaseException])
    assert not policy.catches(KeyboardInterrupt()) and not policy.catches(asyncio.CancelledError())
    assert policy.catches(ConnectionError())


@pytest.mark.parametrize(("parameter", "value"), [("handler", 42), ("handler", "cached"), ("name", None)])
def test_invalid_values_name_the_parameter(parameter: str, value: object) -> None:
    """Refused on construction: a non-callable handler would fail only when the first error comes."""
    with pytest.raises(PolicyError) as info:
        FallbackPolicy(**{parameter: value})  # type: ignore[arg-type]
    assert (info.value.parameter, info.value.value) == (parameter, value)
