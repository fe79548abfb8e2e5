"""The runner fails wrong implementations, follows overrides, and its CLI reports both."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_conformance import check_conformance, default_specs_dir, run_conformance
from foundation_retry import retry_factory

from foundation_core import Registrar, hookimpl
from foundation_core._cli import main


def never_retries(policy: Any, *, clock: Any = None) -> Any:
    return lambda fn: fn


def no_jitter_retry(policy: Any, *, clock: Any = None) -> Any:
    """Subtly wrong: ignores the max_delay cap."""
    import attrs

    return retry_factory(attrs.evolve(policy, max_delay=3600), clock=clock)


class RetryOverride:
    """An application override of ``retry`` that wraps the built-in (and counts wraps)."""

    wrapped = 0

    @hookimpl
    def foundation_register_patterns(self, register: Registrar) -> None:
        def factory(policy: Any, *, clock: Any = None) -> Any:
            RetryOverride.wrapped += 1
            return retry_factory(policy, clock=clock)

        register("retry", factory)


def test_a_non_retrying_implementation_fails_with_readable_problems() -> None:
    report = run_conformance("retry", factory=never_retries)
    failed = {r.case for r in report.failures}
    assert "succeeds_after_two_failures" in failed
    assert "non_retryable_error_stops_at_attempt_1" not in failed
    problem = next(r for r in report.failures if r.case == "succeeds_after_two_failures").problems[0]
    assert (
        problem == "call 1: expected to return 'ok', raised ConnectionError('conformance: ConnectionError')"
    )


def test_a_subtle_deviation_is_caught() -> None:
    report = run_conformance("retry", factory=no_jitter_retry)
    assert {r.case for r in report.failures} >= {"max_delay_caps_exponential_growth"}


def test_check_conformance_raises_listing_failures() -> None:
    with pytest.raises(AssertionError, match=r"retry/succeeds_after_two_failures \[sync\]"):
        check_conformance("retry", factory=never_retries)


def test_an_app_override_is_what_the_suite_runs() -> None:
    before = RetryOverride.wrapped
    report = check_conformance("retry", plugins=[RetryOverride()])
    assert RetryOverride.wrapped - before == len([r for r in report.results if r.mode != "policy"])
    assert "RetryOverride" in report.implementations["retry"]


def test_pytest_fixture_runs_the_suite(pattern_conformance: Any) -> None:
    assert pattern_conformance("fallback").passed
    with pytest.raises(AssertionError, match="failed"):
        pattern_conformance("retry", factory=never_retries)


def test_policy_defaults_are_checked_against_the_spec(tmp_path: Path) -> None:
    spec = yaml.safe_load((default_specs_dir() / "retry.yaml").read_text())
    spec["semantics"]["parameters"]["max_attempts"]["default"] = 5
    (tmp_path / "retry.yaml").write_text(yaml.safe_dump(spec))
    report = run_conformance("retry", specs_dir=tmp_path)
    [failure] = report.failures
    assert failure.case == "parameters"
    assert failure.problems == ("default max_attempts=3, spec says 5",)


def test_cli_json_passes_for_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] and out["counts"]["failed"] == 0 and out["counts"]["skipped"] == 0
    assert set(out["implementations"]) == {"retry", "circuit_breaker", "rate_limit", "timeout", "fallback"}


def test_cli_reports_a_bad_spec_with_file_and_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = yaml.safe_load((default_specs_dir() / "timeout.yaml").read_text())
    spec["cases"][0]["given"]["policy"]["timout"] = 1
    (tmp_path / "timeout.yaml").write_text(yaml.safe_dump(spec))
    assert main(["conformance", "--specs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'timeout.yaml'}, case 'fast_call_returns'" in err and "'timout'" in err


def test_cli_unknown_pattern_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "bulkhead"]) == 1
    err = capsys.readouterr().err
    assert f"no spec for pattern 'bulkhead' in {default_specs_dir()}" in err
    assert "--specs DIR" in err and "<pattern_id>.yaml" in err


def test_cli_unknown_pattern_names_the_directory_it_looked_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "timeout.yaml").write_text((default_specs_dir() / "timeout.yaml").read_text())
    assert main(["conformance", "my_cache", "--specs", str(tmp_path)]) == 1
    assert f"no spec for pattern 'my_cache' in {tmp_path} (it has: timeout)" in capsys.readouterr().err


def test_the_suite_leaves_no_breaker_in_the_process_registry() -> None:
    """Its breakers live on virtual clocks that only the finished cases drove."""
    from foundation_circuit_breaker import breakers

    before = {(b.name, id(b.clock)) for b in breakers}
    check_conformance("circuit_breaker")
    assert {(b.name, id(b.clock)) for b in breakers} == before


def test_cli_a_named_pattern_with_no_implementation_fails_saying_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOUNDATION_DISABLE_PLUGINS", "retry")
    assert main(["conformance", "retry"]) == 1
    assert "retry (disabled by FOUNDATION_DISABLE_PLUGINS)" in capsys.readouterr().out


def test_the_suite_logs_none_of_the_events_its_cases_simulate(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance"]) == 0
    out, err = capfd.readouterr()
    assert ", 0 failed" in out
    assert "retry.scheduled" not in err and "circuit.changed" not in err and err.strip() == ""


@pytest.fixture
def logging_left_as_found() -> Iterator[None]:
    """``main(["--set", "logging...", ...])`` configures the process's logging (a root handler,
    structlog) and, as a console script's entry point, leaves it so for the process's exit:
    here it is put back, or the logging plugin's tests that run later in this process find a
    handler of this test's on the root logger (as the logging tests' own fixture does)."""
    setup = pytest.importorskip("foundation_logging._setup")
    import structlog  # the logging plugin's dependency, so there when it is

    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    yield
    while (runtime := setup.current_runtime()) is not None:  # closing one brings the next back
        runtime.close()
    structlog.configure(**saved_config)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_the_logging_section_set_for_the_app_is_no_unknown_section_to_the_suite(
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logging_left_as_found: None,
) -> None:
    """The suite's hub leaves the logging plugin out; its section, in a settings.toml beside the
    app or given by --set, was then warned about as unknown ('logging: unknown section ...')."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.toml").write_text('[logging]\nlevel = "warning"\n')
    assert main(["--set", "logging.format=json", "conformance", "fallback"]) == 0
    out, err = capfd.readouterr()
    assert ", 0 failed" in out and err.strip() == ""
    (tmp_path / "settings.toml").write_text('[logging]\nlevle = "warning"\n')  # still checked
    assert main(["conformance", "fallback"]) == 0
    assert "logging.levle: unknown key in section 'logging'" in capfd.readouterr().err


def _answering(answer: Any) -> Any:
    """A factory whose wrapper ignores the function and calls ``answer()`` instead."""

    def factory(policy: Any, *, clock: Any = None) -> Any:
        def wrap(fn: Any) -> Any:
            import asyncio

            if asyncio.iscoroutinefunction(fn):

                async def protected_async() -> Any:
                    return answer()

                return protected_async
            return lambda: answer()

        return wrap

    return factory


def _raise(exc: BaseException) -> Any:
    def answer() -> Any:
        raise exc

    return answer


class Uncomparable:
    """Like a numpy array: ``==`` does not give a truth value."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    "answer",
    [_raise(SystemExit(0)), _raise(asyncio.CancelledError()), _raise(GeneratorExit())],
    ids=["SystemExit", "CancelledError", "GeneratorExit"],
)
def test_an_implementation_raising_a_base_exception_fails_its_cases(answer: Any) -> None:
    """Not the run: SystemExit(0) from a case must not end ``foundation conformance`` with 0."""
    report = run_conformance("fallback", factory=_answering(answer))
    assert not report.passed
    assert "raised" in report.failures[0].problems[0]


def test_a_factory_or_policy_raising_system_exit_fails_a_case() -> None:
    def factory(policy: Any, *, clock: Any = None) -> Any:
        raise SystemExit(3)

    report = run_conformance("fallback", factory=factory)
    assert "setting up or running raised SystemExit(3)" in report.failures[0].problems


def test_keyboard_interrupt_from_an_implementation_stops_the_run() -> None:
    """The runner cannot tell it from Ctrl-C: the run stops (the CLI exits 130)."""
    with pytest.raises(KeyboardInterrupt):
        run_conformance("fallback", factory=_answering(_raise(KeyboardInterrupt())))


def test_a_value_that_does_not_compare_fails_the_case() -> None:
    report = run_conformance("fallback", factory=_answering(Uncomparable))
    assert not report.passed
    assert report.failures[0].problems == (
        "comparing what happened with expect raised ValueError: the truth value of an array is ambiguous",
    )


def test_an_app_override_raising_system_exit_0_fails() -> None:
    class ExitingFallback:
        @hookimpl
        def foundation_register_patterns(self, register: Registrar) -> None:
            register("fallback", _answering(_raise(SystemExit(0))))

    report = run_conformance("fallback", plugins=[ExitingFallback()])
    assert not report.passed and "_answering" in report.implementations["fallback"]
