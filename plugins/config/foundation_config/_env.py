"""Environment variables and ``--set`` overrides as layers.

``FOUNDATION_RETRY__MAX_ATTEMPTS=5`` sets ``retry.max_attempts``: the ``FOUNDATION_`` prefix, then
the path with ``__`` between levels (dynaconf's convention). Variables without ``__`` after the
prefix (``FOUNDATION_PLUGINS``, ``FOUNDATION_STRICT_PLUGINS``) are the core's switches, not config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from foundation_core.errors import ConfigProblem

from ._layers import MAX_DEPTH, Layer, RawText

__all__ = ["ENV_PREFIX", "env_layer", "overrides_layer"]

ENV_PREFIX = "FOUNDATION_"


def env_layer(environ: Mapping[str, str]) -> tuple[Layer, list[ConfigProblem]]:
    layer = Layer("environment")
    problems: list[ConfigProblem] = []
    seen: dict[tuple[str, ...], str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or "__" not in var[len(ENV_PREFIX) :]:
            continue
        parts = tuple(p.lower() for p in var[len(ENV_PREFIX) :].split("__"))
        if not all(parts):
            problems.append(
                ConfigProblem(var, "empty name between '__' (expected FOUNDATION_SECTION__KEY)", f"env {var}")
            )
            continue
        if len(parts) > MAX_DEPTH:
            message = f"a key nested more than {MAX_DEPTH} levels deep ({len(parts)} names between '__')"
            problems.append(ConfigProblem(f"{var[:60]}...", message, f"env {var[:60]}..."))
            continue
        first = seen.setdefault(parts, var)
        if first != var:  # names are not case-sensitive: which one would win is an accident
            message = f"{first} and {var} both set {'.'.join(parts)} (names are not case-sensitive)"
            problems.append(ConfigProblem(".".join(parts), message, f"env {var}"))
    nested = _nesting_problems(seen)
    problems.extend(nested.values())
    for parts, var in seen.items():
        if not any(parts[: len(outer)] == outer for outer in nested):  # the others are still checked
            layer.set(parts, RawText(environ[var]), f"env {var}")
    return layer, problems


def _nesting_problems(seen: Mapping[tuple[str, ...], str]) -> dict[tuple[str, ...], ConfigProblem]:
    """A variable that sets a key and another that sets a key inside it: which one wins would
    be an accident of their order (``FOUNDATION_S__LABELS=x``, ``FOUNDATION_S__LABELS__TEAM=ml``).
    By the outer key's path."""
    problems: dict[tuple[str, ...], ConfigProblem] = {}
    for parts, var in seen.items():
        for end in range(2, len(parts)):
            outer = seen.get(parts[:end])
            if outer is not None and parts[:end] not in problems:
                path = ".".join(parts[:end])
                message = f"{outer} sets {path} and {var} sets a key inside it: set one or the other"
                problems[parts[:end]] = ConfigProblem(path, message, f"env {outer}")
                break
    return problems


def overrides_layer(overrides: Sequence[str]) -> tuple[Layer, list[ConfigProblem]]:
    """``--set section.key=value`` pairs, in order (a later one wins). The section name is not
    case-sensitive, as in files and the environment (``Logging.level`` sets ``logging.level``)."""
    layer = Layer("command line")
    problems: list[ConfigProblem] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = tuple(p.strip() for p in key.strip().split("."))
        source = f"--set {item}"
        if not sep:
            problems.append(ConfigProblem(item, "expected KEY=VALUE, e.g. retry.max_attempts=5", source))
        elif len(parts) < 2 or not all(parts):
            problems.append(
                ConfigProblem(key, "expected a dotted key section.key, e.g. retry.max_attempts", source)
            )
        elif len(parts) > MAX_DEPTH:
            message = f"a key nested more than {MAX_DEPTH} levels deep ({len(parts)} dotted names)"
            problems.append(ConfigProblem(f"{key[:60]}...", message, "--set"))
        else:
            layer.set((parts[0].lower(), *parts[1:]), RawText(value), "--set")
    return layer, problems
