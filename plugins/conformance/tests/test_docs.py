"""Every python block of docs/patterns.md runs and its assertions hold; so do the examples of the
five pattern plugins' READMEs, the conformance plugin's README and the pipeline example of the
top-level README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from foundation_circuit_breaker import breakers
from foundation_retry import RetryPolicy

from foundation_core.errors import PolicyError

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "patterns.md"
PYTHON = re.compile(r"```python\n(.*?)```", flags=re.S)
BLOCKS = PYTHON.findall(DOC.read_text(encoding="utf-8"))
PATTERN_DIRS = ("retry", "circuit-breaker", "rate-limit", "timeout", "fallback")


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_guide_example_runs(source: str) -> None:
    exec(compile(source, f"{DOC.name}:python-block", "exec"), {"__name__": "docs_example"})


def _readme_examples() -> list[tuple[str, str]]:
    examples = []
    for name in PATTERN_DIRS:
        readme = ROOT / "plugins" / name / "README.md"
        (block,) = PYTHON.findall(readme.read_text(encoding="utf-8"))
        examples.append((f"plugins/{name}/README.md", block))
    top = PYTHON.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    pipeline = [b for b in top if "pipeline" in b]
    assert len(pipeline) == 1, "README.md lost its pipeline example"
    return [*examples, ("README.md", pipeline[0])]


@pytest.mark.parametrize(("where", "source"), _readme_examples(), ids=lambda v: v if "\n" not in v else "")
def test_readme_example_runs(where: str, source: str) -> None:
    """Each defines a protected function (the circuit breaker's also reads its snapshot); the
    breakers they name on the system clock are forgotten after, as another test may reuse a name."""
    before = {id(b) for b in breakers}
    try:
        exec(compile(source, f"{where}:python-block", "exec"), {"__name__": "readme_example"})
    finally:
        for breaker in [b for b in breakers if id(b) not in before]:
            breakers.remove(breaker.name, breaker.clock)


def test_the_retry_readmes_ranges_are_the_policys() -> None:
    """`max_attempts` 1..100 and the like: both ends are valid, one past either end is not."""
    text = (ROOT / "plugins" / "retry" / "README.md").read_text(encoding="utf-8")
    ranges = re.findall(r"`(\w+)` (\d+)\.\.(\d+)", text)
    assert {name for name, _, _ in ranges} == {"max_attempts", "base_delay", "multiplier", "max_delay"}
    for name, low, high in ranges:
        for value in (int(low), int(high)):
            RetryPolicy(**{name: value, "max_delay": 3600} if name == "base_delay" else {name: value})
        for value in (int(low) - 1, int(high) + 1):
            with pytest.raises(PolicyError):
                RetryPolicy(**{name: value})


def test_the_conformance_readmes_example_runs(request: pytest.FixtureRequest) -> None:
    """plugins/conformance/README.md: the test a third party writes with the fixture it names
    (which must be one: the installed pytest plugin's), and the call without it, run as shown
    against the built-in retry, given as the override plugin and the factory the example names."""
    import inspect

    from foundation_retry import retry_factory

    from foundation_core import hookimpl

    class MyRetryOverride:
        @hookimpl
        def foundation_register_patterns(self, register):
            register("retry", retry_factory, replace=True)

    readme = ROOT / "plugins" / "conformance" / "README.md"
    (block,) = PYTHON.findall(readme.read_text(encoding="utf-8"))
    namespace = {"MyRetryOverride": MyRetryOverride, "my_retry_factory": retry_factory}
    exec(compile(block, f"{readme}:python-block", "exec"), namespace)  # calls check_conformance
    test = namespace["test_my_retry_conforms"]
    fixtures = [request.getfixturevalue(name) for name in inspect.signature(test).parameters]
    test(*fixtures)
