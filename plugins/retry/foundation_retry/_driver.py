"""The retrying path: tenacity drives attempts 2..n with our stop, wait and retry decisions.

The first attempt already ran outside tenacity; it is replayed as tenacity's attempt 1 (its error
re-raised, or its rejected result returned) so tenacity's attempt numbers, waits, stop and
``before_sleep`` hook line up with ours. Everything here is set up per failing call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tenacity

from foundation_core._clock import Clock, deadline_var
from foundation_core._events import emit
from foundation_core.errors import RetryError

from ._policy import RetryPolicy

__all__ = ["retry_async", "retry_sync"]


class _Wait(tenacity.wait.wait_base):
    """The policy's ``delay_for`` as a tenacity wait; remembers the previous delay (decorrelated)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.previous: float | None = None

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        policy = self.policy
        rand = policy.random() if policy.jitter or policy.backoff == "decorrelated" else 1.0
        delay = policy.delay_for(retry_state.attempt_number, self.previous, rand)
        self.previous = delay
        return delay


class _Stop(tenacity.stop.stop_base):
    """Stop after ``max_attempts``, or when the next wait would cross the deadline (ours or an
    enclosing timeout's), measured on the injected clock."""

    def __init__(self, policy: RetryPolicy, clock: Clock, start: float) -> None:
        self.policy = policy
        self.clock = clock
        self.start = start
        self.reason = ""
        limits = [start + policy.deadline] if policy.deadline is not None else []
        outer = deadline_var.get()
        if outer is not None:
            limits.append(outer)
        self.deadline = min(limits) if limits else None

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if retry_state.attempt_number >= self.policy.max_attempts:
            self.reason = f"max_attempts={self.policy.max_attempts} reached"
            return True
        if self.deadline is not None and self.clock.now() + retry_state.upcoming_sleep > self.deadline:
            self.reason = "the next wait would cross the deadline"
            return True
        return False


def _settings(policy: RetryPolicy, clock: Clock, start: float) -> dict[str, Any]:
    stop = _Stop(policy, clock, start)

    def should_retry(rs: tenacity.RetryCallState) -> bool:
        outcome = rs.outcome
        assert outcome is not None
        if outcome.failed:
            error = outcome.exception()
            return error is not None and policy.should_retry_error(error)
        pred = policy.retry_if_result
        return pred is not None and bool(pred(outcome.result()))

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        outcome = rs.outcome
        assert outcome is not None
        error = outcome.exception() if outcome.failed else None
        result = None if outcome.failed else outcome.result()
        emit(
            "retry",
            name=policy.name,
            attempt=rs.attempt_number,
            delay=rs.upcoming_sleep,
            error=error,
            result=result,
        )

    def give_up(rs: tenacity.RetryCallState) -> Any:
        outcome = rs.outcome
        assert outcome is not None
        error = outcome.exception() if outcome.failed else None
        reason = stop.reason if error is not None else f"{stop.reason}; last result rejected"
        last = None if outcome.failed else outcome.result()
        raise RetryError(
            policy.name, rs.attempt_number, clock.now() - start, reason, last_result=last
        ) from error

    return {
        "stop": stop,
        "wait": _Wait(policy),
        "retry": should_retry,
        "before_sleep": before_sleep,
        "retry_error_callback": give_up,
    }


def retry_sync(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: BaseException | None,
    result: Any,
    start: float,
    policy: RetryPolicy,
    clock: Clock,
) -> Any:
    replayed = False

    def attempt(*a: Any, **kw: Any) -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            if error is not None:
                raise error
            return result
        return fn(*a, **kw)

    retrying = tenacity.Retrying(sleep=clock.sleep, **_settings(policy, clock, start))
    return retrying(attempt, *args, **kwargs)


async def retry_async(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: BaseException | None,
    result: Any,
    start: float,
    policy: RetryPolicy,
    clock: Clock,
) -> Any:
    replayed = False

    async def attempt(*a: Any, **kw: Any) -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            if error is not None:
                raise error
            return result
        return await fn(*a, **kw)

    retrying = tenacity.AsyncRetrying(sleep=clock.asleep, **_settings(policy, clock, start))
    return await retrying(attempt, *args, **kwargs)
