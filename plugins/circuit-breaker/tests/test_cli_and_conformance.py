"""``foundation breakers`` lists breakers; the built-in breaker passes the conformance suite."""

from __future__ import annotations

import json

import pytest
from foundation_circuit_breaker import CircuitBreakerPolicy, breakers, circuit_breaker_factory
from foundation_conformance import check_conformance

from foundation_core._cli import main


def test_breakers_json_lists_state_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    protected = circuit_breaker_factory(CircuitBreakerPolicy(name="cli-listed", failure_threshold=1))(
        lambda: 1 / 0
    )
    try:
        with pytest.raises(ZeroDivisionError):
            protected()
        assert main(["breakers", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["breakers"]}
        assert rows["cli-listed"]["state"] == "open"
        assert rows["cli-listed"]["failures"] == 1
        assert rows["default"]["state"] == "closed"  # the [circuit_breaker] section's breaker
    finally:
        breakers.remove("cli-listed")


def test_breakers_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["breakers"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["NAME", "STATE", "MODE"]
    assert any(line.split()[:2] == ["default", "closed"] for line in out[1:])


def test_builtin_breaker_passes_the_conformance_suite() -> None:
    assert check_conformance("circuit_breaker").passed
