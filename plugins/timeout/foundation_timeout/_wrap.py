"""The timeout wrapper: one deadline object, used by thin sync, thread and async adapters.

On a virtual clock every mode judges the deadline after the call returns (time only moves when
the call moves it), which is how the conformance suite checks timeouts without sleeping.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from foundation_core import is_coroutine_callable, refuse_generator
from foundation_core._clock import Clock, check_clock, deadline_var
from foundation_core.errors import TimeoutExceeded

from ._policy import TimeoutPolicy

if TYPE_CHECKING:
    import concurrent.futures

__all__ = ["timeout_factory"]

F = TypeVar("F", bound=Callable[..., Any])

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    import concurrent.futures

    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="foundation-timeout")
        return _executor


class _Deadline:
    """Opens a deadline (published in ``deadline_var``, never later than an enclosing one) and
    judges the outcome against it."""

    __slots__ = ("now", "policy")

    def __init__(self, policy: TimeoutPolicy, clock: Clock) -> None:
        self.policy = policy
        self.now = clock.now

    def open(self) -> tuple[float, contextvars.Token[float | None]]:
        deadline = self.now() + self.policy.timeout
        outer = deadline_var.get()
        return deadline, deadline_var.set(deadline if outer is None or deadline < outer else outer)

    def exceeded(self) -> TimeoutExceeded:
        return TimeoutExceeded(self.policy.name, self.policy.timeout)


def timeout_factory(policy: TimeoutPolicy, *, clock: Clock | None = None) -> Callable[[F], F]:
    """``timeout_factory(policy)(fn)``: ``fn`` (sync or ``async def``) must finish in time."""
    if not isinstance(policy, TimeoutPolicy):
        raise TypeError(f"timeout_factory needs a TimeoutPolicy, got {type(policy).__name__}")
    clk = check_clock(clock, "timeout_factory")
    limit = _Deadline(policy, clk)

    def wrap(fn: F) -> F:
        refuse_generator(fn, "timeout")
        if is_coroutine_callable(fn):
            adapter = _judged_async if clk.virtual else _cancelling_async
        else:
            adapter = _thread if policy.sync_mode == "thread" and not clk.virtual else _judged_sync
        return adapter(fn, limit)  # type: ignore[return-value]

    return wrap


def _judged_sync(fn: Callable[..., Any], limit: _Deadline) -> Callable[..., Any]:
    now = limit.now

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        deadline, token = limit.open()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if now() > deadline:
                raise limit.exceeded() from exc
            raise
        finally:
            deadline_var.reset(token)
        if now() > deadline:
            raise limit.exceeded()
        return result

    return call


def _judged_async(fn: Callable[..., Any], limit: _Deadline) -> Callable[..., Any]:
    now = limit.now

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        deadline, token = limit.open()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if now() > deadline:
                raise limit.exceeded() from exc
            raise
        finally:
            deadline_var.reset(token)
        if now() > deadline:
            raise limit.exceeded()
        return result

    return call


def _cancelling_async(fn: Callable[..., Any], limit: _Deadline) -> Callable[..., Any]:
    import asyncio  # here, not at module level: importing the plugin stays cheap

    seconds = limit.policy.timeout

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        _, token = limit.open()
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                result = await fn(*args, **kwargs)
        except Exception as exc:  # the cancellation's TimeoutError, or the callee's own error
            if scope.expired():
                raise limit.exceeded() from exc
            raise
        finally:
            deadline_var.reset(token)
        if scope.expired():  # the callee caught the cancellation and returned: a late result
            raise limit.exceeded()
        return result

    return call


def _thread(fn: Callable[..., Any], limit: _Deadline) -> Callable[..., Any]:
    import concurrent.futures

    seconds = limit.policy.timeout

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        _, token = limit.open()
        try:
            context = contextvars.copy_context()  # the worker sees the deadline too
        finally:
            deadline_var.reset(token)
        future = _worker_pool().submit(context.run, fn, *args, **kwargs)
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            # a call still queued for a worker never starts once its caller has given up (a retry
            # around this must not run it twice); one already running runs on, as documented
            future.cancel()
            raise limit.exceeded() from None

    return call
