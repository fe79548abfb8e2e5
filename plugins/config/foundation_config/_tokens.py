"""Dynaconf's value tokens in config files (``"@int 5"``, ``"@format {env[HOME]}/x"``), bounded.

The casts (``@str``, ``@int``, ``@float``, ``@bool``, ``@json``) are dynaconf's own. ``@format``
is evaluated here, not by dynaconf's formatter: its fields may only read the environment
(``{env[NAME]}`` or ``{env.NAME}``; Python's format syntax would otherwise walk attributes such
as ``{env.__class__}``), and the text it builds is bounded like ``${...}`` (``MAX_TEXT``), so that
``{env[X]:>999999999}`` is an error naming the key rather than a gigabyte. Every other token is
refused: ``@read_file`` and ``@get`` read outside the file, and ``@jinja`` runs a template that can
loop and compute without bound (Jinja's sandbox bounds attribute access, not work), which no
limit here could stop in time.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from foundation_core.errors import ConfigProblem

from ._interpolate import MAX_TEXT

__all__ = ["TOKENS", "apply_tokens"]

#: dynaconf's value tokens that apply in files: casts, and ``@format`` (which sees ``env`` only)
TOKENS = ("@str", "@int", "@float", "@bool", "@json", "@format")
_TEMPLATES = ("@jinja", "@format", "@read_file", "@get")  # dynaconf's second token of a pair
_REFUSED = {
    "@read_file": "it reads a file",
    "@get": "it reads another setting",
    "@jinja": "a template can loop and compute without bound; use @format {env[NAME]} or ${env:NAME}",
}
_ENV_FIELD = re.compile(r"env\[([^\[\]]*)\]|env\.(\w+)")
_WIDTH = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)")


class _TokenError(Exception):
    """A token that cannot be applied; the message names what was wrong, never the value."""


class _EnvFormatter(string.Formatter):
    """``str.format`` whose fields may only read ``environ``, building at most ``MAX_TEXT``
    characters (the template's own text included)."""

    def __init__(self, environ: Mapping[str, str], size: int) -> None:
        self.environ = environ
        self.size = size
        self.names: set[str] = set()  # the variables read: a secret's makes the value one

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        found = _ENV_FIELD.fullmatch(field_name)
        if found is None:
            raise _TokenError(
                f"{{{field_name}}} is not allowed: @format reads only {{env[NAME]}} "
                "(refer to other keys with ${section.key})"
            )
        name = found.group(1) if found.group(1) is not None else found.group(2)
        if name not in self.environ:
            raise _TokenError(f"environment variable {name} is not set")
        self.names.add(name)
        return self.environ[name], field_name

    def format_field(self, value: Any, format_spec: str) -> Any:
        width = _WIDTH.match(format_spec)
        digits = width.group(1) if width is not None else ""
        if len(digits) > len(str(MAX_TEXT)) or (digits and int(digits) > MAX_TEXT):
            raise _TokenError(f"a field wider than {MAX_TEXT} characters ({{...:{format_spec[:20]}}})")
        text = format(value, format_spec)
        self.size += len(text)
        if self.size > MAX_TEXT:
            raise _TokenError(f"the value built by @format is longer than {MAX_TEXT} characters")
        return text


def format_env(template: str, environ: Mapping[str, str], names: set[str] | None = None) -> str:
    """``template`` formatted as ``@format`` does, reading only ``environ``, bounded; the names
    of the variables it read are added to ``names``."""
    formatter = _EnvFormatter(environ, len(template))
    text = formatter.format(template)
    if names is not None:
        names.update(formatter.names)
    return text


def apply_tokens(
    value: Any,
    path: str,
    name: str,
    environ: Mapping[str, str],
    slot: tuple[Any, Any],
    reads: dict[str, frozenset[str]] | None = None,
) -> list[ConfigProblem]:
    """Evaluate the value tokens in ``value`` (stored at ``slot``: container and key), in place;
    a refused token or one that fails is a problem naming the key. ``reads``, when given,
    receives each dotted path whose ``@format`` read the environment, with ``env:NAME`` for each
    variable read (so that a value built from ``API_TOKEN`` is masked as that secret is)."""
    container, index = slot
    if isinstance(value, dict):
        problems = []
        for key, child in value.items():
            problems.extend(apply_tokens(child, f"{path}.{key}", name, environ, (value, key), reads))
        return problems
    if isinstance(value, list):
        problems = []
        for i, child in enumerate(value):
            problems.extend(apply_tokens(child, path, name, environ, (value, i), reads))
        return problems
    if not isinstance(value, str) or not value.startswith("@"):
        return []
    from dynaconf.utils.parse_conf import converters

    first, _, rest = value.partition(" ")
    if first not in converters:
        return []  # text that merely starts with "@"
    tokens = [first]
    second, _, argument = rest.partition(" ")
    if second in _TEMPLATES:
        tokens.append(second)
    else:
        argument = rest
    for token in tokens:
        if token not in TOKENS:
            why = _REFUSED.get(token, "it is not one of the tokens Foundation supports")
            allowed = ", ".join(TOKENS)
            message = f"the value token {token} is not allowed in config files ({why}; allowed: {allowed})"
            return [ConfigProblem(path, message, f"{name}:{path}")]
    read: set[str] = set()  # the variables @format read
    try:
        container[index] = _evaluate(value, environ, read)
    except _TokenError as exc:
        return [ConfigProblem(path, f"{' '.join(tokens)} could not be applied: {exc}", f"{name}:{path}")]
    except Exception as exc:
        text = " ".join(str(exc).split()).replace(argument.strip(), "...") if argument.strip() else str(exc)
        for var in read:  # a cast that failed quotes its input: the variables' values, maybe a secret
            text = text.replace(environ[var], "...") if environ[var] else text
        message = f"{' '.join(tokens)} could not be applied: {text or type(exc).__name__}"
        return [ConfigProblem(path, message, f"{name}:{path}")]
    if read and reads is not None:
        reads[path] = reads.get(path, frozenset()) | {f"env:{var}" for var in read}
    return []


def _evaluate(value: str, environ: Mapping[str, str], names: set[str]) -> Any:
    from dynaconf.utils.parse_conf import Lazy, parse_conf_data

    # AUTO_CAST set here, or dynaconf would read AUTO_CAST_FOR_DYNACONF from the environment
    parsed = parse_conf_data(value, box_settings={"AUTO_CAST_FOR_DYNACONF": True, "DYNABOXIFY": False})
    if not isinstance(parsed, Lazy):
        return parsed
    if getattr(parsed.formatter, "token", None) != "format":  # refused above: never evaluated
        raise _TokenError(f"the template @{parsed.formatter} is not allowed")
    result = format_env(parsed.value, environ, names)
    return parsed.casting(result) if parsed.casting is not None else result
