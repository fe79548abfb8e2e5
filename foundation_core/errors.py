"""Every exception Foundation's core and its pattern plugins raise, in one place.

Each error carries the fields a caller needs (which plugin, which name, which circuit) as
attributes, and a message that says what was wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "ConfigProblem",
    "FoundationError",
    "NameClashError",
    "NotRegisteredError",
    "PatternError",
    "PluginError",
    "PluginLoadError",
    "PolicyError",
    "RateLimited",
    "RetryError",
    "SpecError",
    "TimeoutExceeded",
]


class FoundationError(Exception):
    """Base class of every error Foundation raises on purpose."""


# --- plugins and registries -------------------------------------------------------------------


class PluginError(FoundationError):
    """A plugin failed: it did not import, or it raised inside a hook.

    ``plugin`` is the plugin's name, ``hook`` the hook it failed in (``None`` when it failed to
    load), and the original exception is chained as ``__cause__``.
    """

    def __init__(self, plugin: str, message: str, *, hook: str | None = None) -> None:
        self.plugin = plugin
        self.hook = hook
        where = f" in hook {hook}" if hook else ""
        super().__init__(f"plugin {plugin!r} failed{where}: {message}")


class PluginLoadError(PluginError):
    """A plugin's entry point could not be loaded (missing module, import error, bad spec)."""


class NameClashError(FoundationError):
    """Two plugins registered the same name in one registry without ``replace=True``."""

    def __init__(self, kind: str, name: str, holder: str, newcomer: str, *, app: bool = False) -> None:
        self.kind = kind
        self.name = name
        self.holder = holder
        self.newcomer = newcomer
        # FOUNDATION_DISABLE_PLUGINS selects installed plugins, never the application's objects
        other = (
            "register one of them under another name: both are the application's (passed to "
            "start(plugins=...)) or the core's"
            if app
            else f"disable one of them with FOUNDATION_DISABLE_PLUGINS={holder} (or {newcomer})"
        )
        super().__init__(
            f"{kind} {name!r} is registered by plugin {holder!r} and again by plugin "
            f"{newcomer!r}; pass replace=True in {newcomer!r} to override it on purpose, or {other}"
        )


class NotRegisteredError(FoundationError, LookupError):
    """A name was looked up in a registry that holds nothing under it."""

    def __init__(self, kind: str, name: str, known: Sequence[str], hint: str = "") -> None:
        self.kind = kind
        self.name = name
        self.known = tuple(known)
        listing = ", ".join(sorted(self.known)) or "none"
        super().__init__(f"no {kind} named {name!r} is registered (registered: {listing}){hint}")


# --- configuration ----------------------------------------------------------------------------


class ConfigProblem:
    """One problem found in the configuration: where it came from and what was expected."""

    __slots__ = ("message", "path", "source")

    def __init__(self, path: str, message: str, source: str = "") -> None:
        self.path = path
        self.message = message
        self.source = source

    def __str__(self) -> str:
        origin = f" (from {self.source})" if self.source else ""
        return f"{self.path}: {self.message}{origin}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self.path!r}, {self.message!r}, {self.source!r})"


class ConfigError(FoundationError):
    """The configuration is invalid. ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: Sequence[ConfigProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("<config>", problems)]
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"invalid configuration ({count} problem{'s' * (count != 1)}):\n{lines}")


# --- resilience patterns ----------------------------------------------------------------------


class PolicyError(FoundationError, ValueError):
    """A policy was constructed with an invalid value: names the parameter, value and range."""

    def __init__(self, policy: str, parameter: str, value: object, allowed: str) -> None:
        self.policy = policy
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        super().__init__(f"{policy}.{parameter}={value!r} is invalid: expected {allowed}")


class PatternError(FoundationError):
    """Base class of the errors a resilience pattern raises instead of calling the function."""


class RetryError(PatternError):
    """Every attempt failed. The last attempt's exception is chained as ``__cause__``; when the
    attempts returned results that the retry predicate rejected, ``last_result`` is the last one."""

    def __init__(
        self, name: str, attempts: int, elapsed: float, reason: str = "", *, last_result: object = None
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_result = last_result
        why = f" ({reason})" if reason else ""
        super().__init__(f"retry {name!r} gave up after {attempts} attempts in {elapsed:.3f}s{why}")


class CircuitOpenError(PatternError):
    """The circuit is open: calls are refused until ``retry_after`` seconds have passed."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is open; retry after {retry_after:.3f}s")


class RateLimited(PatternError):
    """The rate limiter has no token now, or none would arrive before the deadline."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"rate limit {name!r} exceeded; next token in {retry_after:.3f}s")


class TimeoutExceeded(PatternError, TimeoutError):
    """The call did not finish within its time limit."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"call {name!r} did not finish within {timeout:.3f}s")


class SpecError(FoundationError):
    """A pattern spec file (``docs/patterns/*.yaml``) is malformed: names the file and the case."""

    def __init__(self, file: str, message: str, *, case: str | None = None) -> None:
        self.file = file
        self.case = case
        where = f", case {case!r}" if case else ""
        super().__init__(f"pattern spec {file}{where}: {message}")
