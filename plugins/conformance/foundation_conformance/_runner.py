"""Runs the spec cases against the implementation registered under a pattern name, on a
virtual clock, in sync and async form; also checks the policy's defaults and invalid values."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

import foundation_core
from foundation_core import VirtualClock, hookimpl
from foundation_core.errors import FoundationError, NotRegisteredError, PolicyError

from ._checks import compare, error_class, make_error, policy_value
from ._spec import Case, Spec, default_specs_dir, load_specs

__all__ = ["CaseResult", "Report", "run_conformance"]


@attrs.frozen
class CaseResult:
    pattern: str
    case: str
    mode: str
    passed: bool
    problems: tuple[str, ...] = ()
    skipped: str = ""


@attrs.define
class Report:
    """All results of one run; ``passed`` is true when no case failed."""

    results: list[CaseResult] = attrs.field(factory=list)
    implementations: dict[str, str] = attrs.field(factory=dict)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed and not r.skipped]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        counts = {
            "passed": sum(r.passed for r in self.results),
            "failed": len(self.failures),
            "skipped": sum(bool(r.skipped) for r in self.results),
        }
        return {
            "passed": self.passed,
            "counts": counts,
            "implementations": self.implementations,
            "results": [attrs.asdict(r) for r in self.results],
        }


class _Recorder:
    """Collects the pattern events emitted while a case runs."""

    foundation_name = "foundation-conformance-recorder"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def foundation_on_retry(self, name: str, attempt: int, delay: float, error: Any, result: Any) -> None:
        self.events.append(
            {
                "event": "retry",
                "name": name,
                "attempt": attempt,
                "delay": delay,
                "error": error,
                "result": result,
            }
        )

    @hookimpl
    def foundation_on_circuit_change(
        self, name: str, old_state: str, new_state: str, failure_rate: float, calls: int
    ) -> None:
        self.events.append(
            {
                "event": "circuit_change",
                "name": name,
                "old_state": old_state,
                "new_state": new_state,
                "failure_rate": failure_rate,
                "calls": calls,
            }
        )

    @hookimpl
    def foundation_on_rate_limited(self, name: str, retry_after: float) -> None:
        self.events.append({"event": "rate_limited", "name": name, "retry_after": retry_after})


class _Script:
    """The protected function: follows the case's behaviours, one per invocation."""

    def __init__(self, steps: tuple[Any, ...], clock: VirtualClock) -> None:
        self.steps, self.clock, self.calls = steps, clock, 0

    def step(self) -> Any:
        behaviour = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if "sleep" in behaviour:
            self.clock.advance(float(behaviour["sleep"]))
        if "raise" in behaviour:
            raise make_error(behaviour["raise"])
        return behaviour["return"]


class _LoggingSection:
    """The logging plugin's config section, in a hub that leaves the plugin out: the
    application's ``[logging]`` is still checked, not warned about as an unknown section."""

    foundation_name = "foundation-conformance-logging-section"

    @hookimpl
    def foundation_config_sections(self, add: Any) -> None:
        add("logging", "foundation_logging._settings:LoggingSettings")


def _quiet_env() -> tuple[dict[str, str], list[object]]:
    """The environment of the suite's hub: the logging plugin, if installed, is left out, so the
    hundred retries, circuit changes and refusals the cases simulate are not logged as if they
    had happened (the suite records the events itself); with the plugin that would have loaded,
    the stand-in for its section, registered as installed."""
    from importlib.metadata import entry_points

    from foundation_core._discovery import Selection

    env = dict(os.environ)
    if not any(ep.name == "logging" for ep in entry_points(group="foundation")):
        return env, []
    disabled = env.get("FOUNDATION_DISABLE_PLUGINS", "").strip()
    env["FOUNDATION_DISABLE_PLUGINS"] = f"{disabled},logging" if disabled else "logging"
    return env, [] if Selection.from_env(os.environ).why_not("logging") else [_LoggingSection()]


def run_conformance(
    pattern: str | None = None,
    *,
    factory: Callable[..., Any] | None = None,
    policy_class: type[Any] | None = None,
    plugins: Iterable[object] = (),
    specs_dir: Path | str | None = None,
    config_files: Iterable[str] = (),
    overrides: Iterable[str] = (),
) -> Report:
    """Run the spec of ``pattern`` (every spec when ``None``) against the implementation that a
    hub started with ``plugins`` resolves under that name, or against ``factory`` if given.

    The policy class is ``policy_class``, else ``factory.policy_class``, else the config section
    class registered under the pattern's name.
    """
    folder = Path(specs_dir) if specs_dir is not None else default_specs_dir()
    specs = load_specs(folder)
    if pattern is not None and pattern not in specs:
        raise FoundationError(
            f"no spec for pattern {pattern!r} in {folder} (it has: {', '.join(sorted(specs))}); "
            f"a pattern of your own needs a spec file, <pattern_id>.yaml, in a directory passed as "
            f"--specs DIR (specs_dir= from Python, or $FOUNDATION_PATTERN_SPECS): see "
            f"'Specs and conformance' in docs/patterns.md"
        )
    chosen = [specs[pattern]] if pattern is not None else [specs[p] for p in sorted(specs)]
    recorder = _Recorder()
    report = Report()
    env, stand_ins = _quiet_env()
    with foundation_core.start(
        plugins=[recorder, *plugins],
        installed=stand_ins,
        config_files=list(config_files),
        overrides=list(overrides),
        env=env,
    ) as hub:
        for spec in chosen:
            impl = factory if factory is not None and pattern is not None else None
            if impl is None:
                if spec.pattern_id not in hub.patterns:
                    try:
                        hub.patterns.entry(spec.pattern_id)
                    except NotRegisteredError as exc:  # says which plugins are inactive, and why
                        why = str(exc)
                    report.results.append(CaseResult(spec.pattern_id, "*", "-", False, skipped=why))
                    continue
                impl = hub.patterns.get(spec.pattern_id)
                report.implementations[spec.pattern_id] = hub.patterns.entry(spec.pattern_id).describe()
            else:
                report.implementations[spec.pattern_id] = f"{impl.__module__}:{impl.__qualname__}"
            cls = (
                policy_class
                or getattr(impl, "policy_class", None)
                or hub.sections.resolved().get(spec.pattern_id)
            )
            if cls is None:
                raise FoundationError(f"no policy class for pattern {spec.pattern_id!r}; pass policy_class=")
            report.results.append(_check_parameters(spec, cls))
            for case in spec.cases:
                for mode in case.modes:
                    report.results.append(_run_case(spec, case, mode, impl, cls, recorder))
    return report


def _check_parameters(spec: Spec, cls: type[Any]) -> CaseResult:
    """The policy's defaults match the spec's, and every listed invalid value is refused."""
    problems: list[str] = []
    try:
        default = cls()
    except BaseException as exc:
        _reraise_interrupt(exc)
        return CaseResult(
            spec.pattern_id, "parameters", "policy", False, (f"{cls.__name__}() raised {exc!r}",)
        )
    for name, desc in spec.parameters.items():
        if not hasattr(default, name):
            problems.append(f"{cls.__name__} has no parameter {name!r}")
            continue
        want, got = desc["default"], getattr(default, name)
        if desc["type"] == "exceptions":
            want_set = {error_class(n) for n in want}
            if set(got) != want_set:
                problems.append(f"default {name}={got!r}, spec says {want!r}")
        elif desc["type"] != "callable" and want != got:
            problems.append(f"default {name}={got!r}, spec says {want!r}")
        for bad in desc.get("invalid", []):
            try:
                cls(**{name: bad})
            except PolicyError as exc:
                if exc.parameter != name:
                    problems.append(f"{name}={bad!r} raised PolicyError for parameter {exc.parameter!r}")
            except BaseException as exc:
                _reraise_interrupt(exc)
                problems.append(f"{name}={bad!r} raised {type(exc).__name__}, not PolicyError: {exc}")
            else:
                problems.append(f"{name}={bad!r} was accepted; the spec lists it as invalid")
    return CaseResult(spec.pattern_id, "parameters", "policy", not problems, tuple(problems))


def _run_case(
    spec: Spec, case: Case, mode: str, factory: Callable[..., Any], cls: type[Any], recorder: _Recorder
) -> CaseResult:
    clock = VirtualClock()
    params = {k: policy_value(spec.parameters[k]["type"], v) for k, v in case.policy.items()}
    name = params.setdefault(
        "name", f"conformance.{spec.pattern_id}.{case.name}.{mode}.{uuid.uuid4().hex[:8]}"
    )
    script = _Script(case.function, clock)
    try:
        wrapper = factory(cls(**params), clock=clock)
        outcomes = (
            _run_sync(wrapper, script, case, clock)
            if mode == "sync"
            else _run_async(wrapper, script, case, clock)
        )
    except BaseException as exc:  # the implementation broke outside a call: a failure, not a crash
        _reraise_interrupt(exc)
        return CaseResult(spec.pattern_id, case.name, mode, False, (f"setting up or running raised {exc!r}",))
    finally:
        _forget_breakers(clock)
    events = [e for e in recorder.events if e.get("name") == name]
    try:  # what the implementation returned may not compare (an __eq__ that raises, an array)
        problems = compare(case.expect, outcomes, script.calls, list(clock.sleeps), events)
    except Exception as exc:
        problems = [f"comparing what happened with expect raised {type(exc).__name__}: {exc}"]
    return CaseResult(spec.pattern_id, case.name, mode, not problems, tuple(problems))


def _reraise_interrupt(exc: BaseException) -> None:
    """Ctrl-C stops the run (exit 130); any other BaseException an implementation raises
    (``SystemExit``, ``CancelledError``, ``GeneratorExit``) is what a case records."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc


def _forget_breakers(clock: VirtualClock) -> None:
    """Drop the breakers a case left in the process-wide breaker registry (where the built-in
    factory keeps them when given no registry): they live on the case's virtual clock, and code
    running later in the process must not find them. Looked up only if the plugin is loaded."""
    registry = sys.modules.get("foundation_circuit_breaker._registry")
    if registry is not None:
        registry.breakers.remove_clock(clock)


def _actions(case: Case) -> Iterable[float | None]:
    """``None`` for a call, a number for "let that many seconds pass"."""
    for action in case.actions:
        if action == "call":
            yield None
        elif "call" in action:
            yield from [None] * action["call"]
        else:
            yield float(action["advance"])


def _run_sync(wrapper: Any, script: _Script, case: Case, clock: VirtualClock) -> list[tuple[str, Any]]:
    def fn() -> Any:
        return script.step()

    protected = wrapper(fn)
    outcomes: list[tuple[str, Any]] = []
    for advance in _actions(case):
        if advance is not None:
            clock.advance(advance)
            continue
        try:
            outcomes.append(("returns", protected()))
        except BaseException as exc:
            _reraise_interrupt(exc)
            outcomes.append(("raises", exc))
    return outcomes


def _run_async(wrapper: Any, script: _Script, case: Case, clock: VirtualClock) -> list[tuple[str, Any]]:
    import asyncio  # not at module level: ``foundation`` starts without it

    async def fn() -> Any:
        await asyncio.sleep(0)
        return script.step()

    protected = wrapper(fn)

    async def drive() -> list[tuple[str, Any]]:
        outcomes: list[tuple[str, Any]] = []
        for advance in _actions(case):
            if advance is not None:
                clock.advance(advance)
                continue
            try:
                outcomes.append(("returns", await protected()))
            except BaseException as exc:
                _reraise_interrupt(exc)
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # cancelled by asyncio.run on Ctrl-C
                    raise
                outcomes.append(("raises", exc))
        return outcomes

    return asyncio.run(drive())
