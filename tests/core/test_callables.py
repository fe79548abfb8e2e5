"""``is_coroutine_callable`` and ``refuse_generator``: what every pattern wrapper decides on."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator

import pytest

from foundation_core import is_coroutine_callable, refuse_generator


async def fetch() -> int:
    return 1


def compute() -> int:
    return 1


class AsyncCall:
    async def __call__(self) -> int:
        return 1


class SyncCall:
    def __call__(self) -> int:
        return 1


def rows() -> Iterator[int]:
    yield 1


async def stream() -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("fn", "is_async"),
    [
        (fetch, True),
        (functools.partial(fetch), True),
        (AsyncCall(), True),
        (functools.partial(AsyncCall()), True),
        (compute, False),
        (SyncCall(), False),
        (AsyncCall, False),  # calling the class builds an instance, no coroutine
    ],
    ids=["async-def", "partial", "async-call-object", "partial-of-object", "def", "sync-object", "class"],
)
def test_is_coroutine_callable_sees_through_partials_and_call_methods(fn: object, is_async: bool) -> None:
    assert is_coroutine_callable(fn) is is_async


@pytest.mark.parametrize(
    "generator", [rows, stream, functools.partial(rows)], ids=["sync", "async", "partial"]
)
def test_refuse_generator_names_the_pattern_and_the_function(generator: object) -> None:
    with pytest.raises(TypeError, match=r"^mine cannot protect .*(rows|stream).*generator function"):
        refuse_generator(generator, "mine")


def test_refuse_generator_lets_everything_else_through() -> None:
    for fn in (fetch, compute, AsyncCall(), SyncCall(), functools.partial(compute)):
        refuse_generator(fn, "mine")


@pytest.mark.parametrize("kind", [classmethod, staticmethod])
def test_refuse_generator_refuses_a_classmethod_or_staticmethod_object(kind: type) -> None:
    """A pattern's decorator placed above ``@classmethod``: a classmethod object is not callable
    (every call would fail, and a fallback would answer for a function that never ran), and an
    async staticmethod would pass for sync. The message says which decorator goes on top."""
    shown = rf"mine cannot protect a {kind.__name__} object .*fetch.*@{kind.__name__} above"
    with pytest.raises(TypeError, match=shown):
        refuse_generator(kind(fetch), "mine")


@pytest.mark.parametrize("value", [{"sku": "A-1"}, 42, None, "fetch"], ids=["dict", "int", "none", "str"])
def test_refuse_generator_refuses_what_is_not_callable(value: object) -> None:
    """``@retry`` given the result of a call (``retry(fetch())``) instead of the function: every
    call would fail with "not callable", which retry would retry, a breaker count as the
    dependency failing, and a fallback answer for ever. Refused when decorated, naming its type."""
    shown = rf"^mine cannot protect a {type(value).__name__} object: it is not callable"
    with pytest.raises(TypeError, match=shown):
        refuse_generator(value, "mine")
