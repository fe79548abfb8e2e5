"""What calling a protected callable gives back: a coroutine to await, a generator, or the result.

``inspect.iscoroutinefunction`` alone misses callables that return a coroutine without being an
``async def`` function: an object whose ``__call__`` is ``async def`` (HTTP-client-style
callables) and a ``functools.partial`` of one. Treated as sync, such a call would "succeed" the
moment it returns its coroutine, unprotected. A generator function cannot be protected by
wrapping it at all, so wrappers refuse one, as they refuse what is not callable. Every pattern
plugin (and the ``new-plugin`` template) uses these two, so a pattern written by a third party
treats callables as the built-in ones do.
"""

from __future__ import annotations

import functools
import inspect

__all__ = ["is_coroutine_callable", "refuse_generator"]


def _target(fn: object) -> object:
    """The function that actually runs when ``fn`` is called: through partials to ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isroutine(fn) or inspect.isclass(fn) or not callable(fn):  # a class call builds an instance
        return fn
    return type(fn).__call__  # looked up on the type, as the call itself does


def is_coroutine_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine: an ``async def`` function or method, an object
    with an ``async def __call__``, or a ``functools.partial`` of either (as tenacity checks)."""
    return inspect.iscoroutinefunction(_target(fn))


def refuse_generator(fn: object, pattern: str) -> None:
    """Raise ``TypeError`` for a generator or async generator function. Its call only creates
    the generator; the work (and every error) comes later, while it is iterated, outside the
    wrapper, so the pattern would silently protect nothing. So for a ``classmethod`` or
    ``staticmethod`` object (the pattern's decorator placed above ``@classmethod``): it is no
    function to call, and an async one would pass for sync. So for anything not callable (the
    result of calling the function, decorated by mistake): every call of it would fail."""
    if isinstance(fn, classmethod | staticmethod):
        kind = type(fn).__name__
        raise TypeError(
            f"{pattern} cannot protect a {kind} object ({getattr(fn.__func__, '__qualname__', fn)!r}): "
            f"put @{kind} above the {pattern} decorator, so that it wraps the function itself"
        )
    if not callable(fn):
        raise TypeError(
            f"{pattern} cannot protect a {type(fn).__name__} object: it is not callable, so every "
            f"call would fail (and be retried, counted, or answered by a fallback); decorate the "
            f"function itself (fetch), not what calling it returns (fetch())"
        )
    target = _target(fn)
    if inspect.isasyncgenfunction(target):
        kind = "an async generator"
    elif inspect.isgeneratorfunction(target):
        kind = "a generator"
    else:
        return
    name = getattr(fn, "__qualname__", None)
    shown = repr(name) if name else repr(fn)
    raise TypeError(
        f"{pattern} cannot protect {shown}: it is {kind} function, so {pattern} would only guard "
        f"creating the generator, not the work done while it is iterated; protect the call that "
        f"consumes it instead"
    )
