"""The breaker against a reference model of the spec (every mode), over random call sequences."""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from foundation_circuit_breaker import BreakerRegistry, CircuitBreakerPolicy, circuit_breaker_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_core import VirtualClock
from foundation_core.errors import CircuitOpenError


@attrs.define
class Model:
    """The spec's state machine, written as plainly as possible."""

    policy: CircuitBreakerPolicy
    state: str = "closed"
    streak: int = 0
    window: deque[tuple[float, int]] = attrs.field(factory=deque)  # (time, failed) since closed
    opened_at: float = 0.0
    probe_ok: int = 0

    def call(self, now: float, fails: bool) -> str:
        """'rejected', 'ok' or 'failed'."""
        p = self.policy
        if self.state == "open":
            if now - self.opened_at < p.reset_timeout:
                return "rejected"
            self.state, self.probe_ok = "half_open", 0
        if self.state == "half_open":
            if fails:
                self.state, self.opened_at = "open", now
                return "failed"
            self.probe_ok += 1
            if self.probe_ok >= p.half_open_max_calls:
                self.state, self.streak, self.window = "closed", 0, deque()
            return "ok"
        if p.mode == "consecutive":
            self.streak = self.streak + 1 if fails else 0
        else:
            self.window.append((now, int(fails)))
        calls, failures = self.counts(now)
        if fails and p.should_open(calls, failures):
            self.state, self.opened_at = "open", now
        return "failed" if fails else "ok"

    def counts(self, now: float) -> tuple[int, int]:
        """``(calls, failures)``: the streak, the last ``window_size`` calls, or the calls of the
        last ``window_size`` seconds (in whole-second buckets)."""
        p = self.policy
        if p.mode == "consecutive":
            return self.streak, self.streak
        if p.mode == "count":
            recent = [f for _, f in list(self.window)[-p.window_size :]]
        else:
            recent = [f for t, f in self.window if int(now // 1) - int(t // 1) < p.window_size]
        return len(recent), sum(recent)


def _policy(**fields: Any) -> CircuitBreakerPolicy:
    if fields["mode"] == "count":  # a count window must be able to hold minimum_calls
        fields["minimum_calls"] = min(fields["minimum_calls"], fields["window_size"])
    return CircuitBreakerPolicy(**fields)


policies = st.builds(
    _policy,
    mode=st.sampled_from(["consecutive", "count", "time"]),
    failure_threshold=st.integers(1, 5),
    window_size=st.integers(1, 8),
    minimum_calls=st.integers(1, 8),
    failure_rate_threshold=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    reset_timeout=st.sampled_from([1.0, 5.0]),
    half_open_max_calls=st.integers(1, 3),
)
steps = st.lists(st.one_of(st.booleans(), st.sampled_from([0.25, 0.5, 1.0, 5.0])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(policies, steps)
def test_breaker_follows_the_reference_state_machine(
    policy: CircuitBreakerPolicy, script: list[object]
) -> None:
    clock = VirtualClock()
    model = Model(policy)
    outcome = {"fail": False}

    def dependency() -> str:
        if outcome["fail"]:
            raise ConnectionError("down")
        return "ok"

    protected = circuit_breaker_factory(policy, clock=clock, registry=BreakerRegistry())(dependency)
    for step in script:
        if isinstance(step, float):
            clock.advance(step)
        else:
            outcome["fail"] = bool(step)
            try:
                protected()
                got = "ok"
            except ConnectionError:
                got = "failed"
            except CircuitOpenError:
                got = "rejected"
            assert got == model.call(clock.now(), bool(step))
            assert protected.breaker.state == model.state
        snapshot = protected.breaker.snapshot()
        assert (snapshot["calls"], snapshot["failures"]) == model.counts(clock.now())
