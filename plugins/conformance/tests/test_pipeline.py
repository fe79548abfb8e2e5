"""``hub.pipeline`` / ``resilient``: the documented order, config sections, overrides by name."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from foundation_circuit_breaker import breakers
from foundation_retry import RetryPolicy

import foundation_core
from foundation_core import PIPELINE_ORDER, Registrar, VirtualClock, hookimpl, resilient
from foundation_core.errors import CircuitOpenError, FoundationError, RetryError, TimeoutExceeded


@pytest.fixture
def hub() -> Any:
    with foundation_core.start() as started:
        yield started


@pytest.fixture(autouse=True)
def _forget_breakers() -> Any:
    yield
    for b in list(breakers):
        if b.name.startswith("pipe-"):
            breakers.remove(b.name)


def test_order_is_documented() -> None:
    assert PIPELINE_ORDER == ("fallback", "timeout", "retry", "circuit_breaker", "rate_limit")


def test_fallback_is_outermost_and_catches_retry_error(hub: Any) -> None:
    clock = VirtualClock()
    protected = hub.pipeline(
        clock=clock, fallback={"on": [RetryError], "value": "fb"}, retry={"max_attempts": 2}
    )(lambda: 1 / 0)
    assert protected() == "fb"


def test_timeout_bounds_the_retries_inside_it(hub: Any) -> None:
    clock = VirtualClock()
    calls = []

    def slow_failure() -> None:
        calls.append(clock.now())
        clock.advance(0.4)
        raise ConnectionError

    protected = hub.pipeline(clock=clock, timeout=1.0, retry={"max_attempts": 10})(slow_failure)
    with pytest.raises(RetryError, match="deadline") as info:
        protected()
    # attempts at 0 and 0.5 (0.4 + a 0.1 wait); from 0.9 the next wait (0.2) would cross 1.0,
    # so retry gives up at once instead of sleeping into the timeout
    assert calls == pytest.approx([0.0, 0.5])
    assert info.value.attempts == 2


def test_an_attempt_running_past_the_deadline_is_a_timeout(hub: Any) -> None:
    clock = VirtualClock()

    def hangs() -> str:
        clock.advance(1.5)
        return "late"

    protected = hub.pipeline(clock=clock, timeout=1.0, retry=True)(hangs)
    with pytest.raises(TimeoutExceeded):
        protected()


def test_retry_does_not_hammer_an_open_circuit(hub: Any) -> None:
    clock = VirtualClock()
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError

    protected = hub.pipeline(
        clock=clock,
        retry={"max_attempts": 5},
        circuit_breaker={"name": "pipe-open", "failure_threshold": 2},
    )(down)
    with pytest.raises(CircuitOpenError):
        protected()
    assert len(calls) == 2  # the third attempt met the open circuit, which retry does not retry


def test_every_attempt_pays_a_rate_limit_token(hub: Any) -> None:
    clock = VirtualClock()
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError
        return "ok"

    protected = hub.pipeline(
        clock=clock, retry={"max_attempts": 3}, rate_limit={"rate": 1, "burst": 3, "name": "pipe-rl"}
    )(flaky)
    assert protected() == "ok"
    assert protected.__wrapped__.bucket.tokens == pytest.approx(0.3)  # 3 taken, 0.3 s of refill


def test_config_sections_supply_the_policies(hub: Any) -> None:
    assert hub.config["retry"] == RetryPolicy()
    clock = VirtualClock()
    with pytest.raises(RetryError) as info:
        hub.pipeline(clock=clock, retry=True)(lambda: 1 / 0)()
    assert info.value.attempts == RetryPolicy().max_attempts


def test_policy_objects_are_used_as_given(hub: Any) -> None:
    clock = VirtualClock()
    with pytest.raises(RetryError) as info:
        hub.pipeline(clock=clock, retry=RetryPolicy(max_attempts=5, base_delay=0))(lambda: 1 / 0)()
    assert info.value.attempts == 5


def test_async_functions_go_through_the_same_stack(hub: Any) -> None:
    clock = VirtualClock()
    attempts = []

    @hub.pipeline(clock=clock, timeout=5.0, retry=True, circuit_breaker={"name": "pipe-async"})
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError
        return "ok"

    assert asyncio.run(flaky()) == "ok"
    assert clock.sleeps == [0.1]


def test_an_override_registered_by_name_applies() -> None:
    used = []

    class Overrides:
        @hookimpl
        def foundation_register_patterns(self, register: Registrar) -> None:
            def factory(policy: Any, **kwargs: Any) -> Any:
                used.append(policy.name)
                return lambda fn: fn

            register("retry", factory)

    with foundation_core.start(plugins=[Overrides()]) as hub:
        hub.pipeline(retry={"name": "svc"})(lambda: None)
    assert used == ["svc"]


def test_resilient_uses_the_active_hub(hub: Any) -> None:
    clock = VirtualClock()
    calls = []

    @resilient(clock=clock, retry={"max_attempts": 2})
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError
        return "ok"

    assert flaky() == "ok"


def test_unknown_layer_is_refused(hub: Any) -> None:
    with pytest.raises(FoundationError, match="unknown layer"):
        hub.pipeline(bulkhead=True)


def test_an_order_naming_a_pattern_twice_is_refused_not_wrapped_twice(hub: Any) -> None:
    """Once accepted: retry wrapped retry, and max_attempts=2 made 4 calls."""
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError

    with pytest.raises(FoundationError, match=r"order names retry more than once"):
        hub.pipeline(clock=VirtualClock(), order=("retry", "retry"), retry={"max_attempts": 2})(down)
    assert calls == []


def test_an_order_given_as_text_is_refused_not_read_letter_by_letter(hub: Any) -> None:
    """Once the error listed the known layers as 'r, e, t, r, y'."""
    with pytest.raises(FoundationError, match=r"order must be a sequence of pattern names.* not 'retry'"):
        hub.pipeline(order="retry", retry=True)
    with pytest.raises(FoundationError, match=r"order must be a sequence of pattern names"):
        resilient(order=("retry", None), retry=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "order",
    [None, 42, {"retry", "fallback"}, {"retry": 1}, (name for name in ("retry",))],
    ids=["None", "int", "set", "dict", "generator"],
)
def test_an_order_that_is_no_sequence_is_refused_naming_it(hub: Any, order: Any) -> None:
    """Once None and 42 were a bare TypeError, a set or a dict an AttributeError ('count'), and a
    generator, used up by the first look, 'unknown layer(s) retry; known: ' (none)."""
    with pytest.raises(FoundationError, match=r"order must be a sequence of pattern names.* not "):
        hub.pipeline(order=order, retry=True)


def test_resilient_without_a_hub_says_so() -> None:
    from foundation_core._events import active_hub

    while (left := active_hub()) is not None:  # a hub another test started and never shut down
        left.shutdown()
    with pytest.raises(FoundationError, match="no started hub"):
        resilient(retry=True)


def test_core_and_pattern_plugins_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, foundation_core, foundation_retry.plugin, foundation_circuit_breaker.plugin, "
        "foundation_rate_limit.plugin, foundation_timeout.plugin, foundation_fallback.plugin, "
        "foundation_conformance.plugin\n"
        "print(sorted(m for m in ('tenacity', 'yaml', 'asyncio', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("layer", PIPELINE_ORDER)
def test_every_layer_refuses_a_classmethod_object_saying_which_decorator_goes_on_top(
    hub: Any, layer: str
) -> None:
    """``@hub.pipeline(...)`` above ``@classmethod``: every call would fail (a classmethod object
    is not callable), retried, counted by the breaker, or answered by the fallback unseen."""

    def compute() -> int:
        return 1

    layers: dict[str, Any] = {layer: {"name": "pipe-cm"} if layer == "circuit_breaker" else True}
    with pytest.raises(TypeError, match="@classmethod above"):
        hub.pipeline(**layers)(classmethod(compute))


@pytest.mark.parametrize(
    ("layers", "shown"),
    [
        ({"timeout": 10**400}, "timeout.timeout="),  # past the float range: was an OverflowError
        ({"retry": {"max_delay": 10**400}}, "retry.max_delay="),
        ({"retry": {"bogus": 1}}, "retry.bogus=1 is invalid: expected a field of RetryPolicy"),
    ],
    ids=["huge-timeout", "huge-field", "unknown-field"],
)
def test_a_bad_layer_value_is_a_policy_error_naming_it(hub: Any, layers: dict[str, Any], shown: str) -> None:
    from foundation_core.errors import PolicyError

    with pytest.raises(PolicyError, match=shown):
        hub.pipeline(**layers)(lambda: 1)


@pytest.mark.parametrize("layer", PIPELINE_ORDER)
@pytest.mark.parametrize("clock", [time.monotonic, 0, "virtual"], ids=["time.monotonic", "0", "str"])
def test_a_clock_that_is_no_clock_is_refused_when_the_decorator_is_built(
    hub: Any, layer: str, clock: Any
) -> None:
    """``clock=time.monotonic`` was taken: retry, timeout and rate_limit failed every call with an
    AttributeError ('... has no attribute now'), a breaker only at the failure that opened it (then
    open, the dependency's error lost), and a falsy one (0) was the system clock."""
    given: dict[str, Any] = {"name": "pipe-clock"} if layer == "circuit_breaker" else {}
    with pytest.raises(TypeError, match=rf"^{layer}_factory: clock must be a foundation_core\.Clock .* not "):
        hub.pipeline(clock=clock, **{layer: given})
    assert "pipe-clock" not in [b.name for b in breakers]
