"""Which effective values are secrets, so that ``config show`` prints them masked and no error
message quotes them."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from foundation_core import is_sensitive_key
from foundation_core.errors import ConfigProblem

from ._files import SECRETS_PREFIX

__all__ = ["MASK", "from_secrets_file", "is_secret", "mask_problems", "secret_names"]

MASK = "********"


def is_secret(path: str, source: str, names: Iterable[str]) -> bool:
    """A value is secret when its key names one (a name's words among the key's words:
    ``password`` masks ``db_password`` and ``dbPassword``, ``secret`` masks ``SECRET_KEY``;
    :func:`foundation_core.is_sensitive_key`, as the logging plugin redacts), or when it came
    from a ``.secrets.*`` file. An environment variable a value read is ``env:NAME``, judged by
    its name the same way (``env:API_TOKEN`` is a secret's)."""
    key = path[4:] if path.startswith("env:") else path.rpartition(".")[2]
    if is_sensitive_key(key, names):
        return True
    return from_secrets_file(source)


def from_secrets_file(source: str) -> bool:
    """Whether ``source`` (``".secrets.toml:db.password"``) names a ``.secrets.*`` file."""
    file = source.partition(":")[0] if ":" in source and not source.startswith(("env ", "--set")) else ""
    return file.replace("\\", "/").rpartition("/")[2].startswith(SECRETS_PREFIX)


def secret_names(config_section: Any) -> tuple[str, ...]:
    """The names that make a key secret while the configuration is checked: the defaults, and
    any ``[config] secret_keys`` given (read as it is: the configuration may be invalid)."""
    from ._convert import parse_raw
    from ._settings import DEFAULT_SECRET_KEYS

    names = {n.lower() for n in DEFAULT_SECRET_KEYS}
    given = config_section.get("secret_keys") if isinstance(config_section, Mapping) else None
    given = parse_raw(given, tuple[str, ...])
    if isinstance(given, (list, tuple)):
        names.update(n.lower() for n in given if isinstance(n, str) and n)
    return tuple(sorted(names))


def mask_problems(
    problems: Iterable[ConfigProblem],
    trees: Iterable[Mapping[str, Any]],
    origin: Callable[[str], str],
    references: Mapping[str, Iterable[str]],
    names: Iterable[str],
) -> list[ConfigProblem]:
    """``problems`` with every secret value that their messages (or sources) quote replaced by
    ``MASK``: the values of secret keys at or below each problem's key, as given (``trees``: the
    merged and the interpolated values) and as parsed. A key is secret as ``config show`` judges
    it: by its name, by coming from a ``.secrets.*`` file, or by reading a secret through
    ``${...}``."""
    names = tuple(names)
    trees = tuple(trees)

    def secret(path: str) -> bool:
        if is_secret(path, origin(path), names):
            return True
        return any(is_secret(r, origin(r), names) for r in references.get(path, ()))

    out = []
    for problem in problems:
        parts = _key_parts(problem.path)
        hidden: set[str] = set()
        for tree in trees:
            node: Any = tree
            depth = 0
            for part in parts:
                if not isinstance(node, Mapping) or part not in node:
                    break
                node, depth = node[part], depth + 1
            above = [".".join(parts[:i]) for i in range(2, depth + 1)]  # section.key and below
            if any(secret(p) for p in above) or from_secrets_file(problem.source):
                _everything(node, hidden)
            else:
                _secrets_below(node, ".".join(parts[:depth]), secret, hidden)
        path, source, message = problem.path, problem.source, problem.message
        if source.startswith("--set "):  # an item that is no section.key=value: never layered
            item = source[len("--set ") :]
            key, _, value = item.partition("=") if "=" in item else item.strip().partition(" ")
            if value.strip() and is_secret(key.strip(), "", names):
                hidden.add(value.strip())
        if hidden:
            path, source, message = (_scrub(text, hidden) for text in (path, source, message))
        out.append(ConfigProblem(path, message, source))
    return out


def _key_parts(path: str) -> list[str]:
    """``retry.labels['api_token']`` -> ``['retry', 'labels', 'api_token']``: cattrs' paths as
    keys; a list index is dropped (the items of a list share its key)."""
    parts: list[str] = []
    for match in _PART.finditer(path):
        name, index = match.group(1), match.group(2)
        if name is not None:
            parts.extend(p for p in name.split(".") if p)
        elif index and index[0] in "'\"":
            try:
                parts.append(str(ast.literal_eval(index)))
            except (ValueError, SyntaxError):
                parts.append(index)
    return parts


_PART = re.compile(r"([^.\[\]]+(?:\.[^.\[\]]+)*)|\[((?:'(?:[^'\\]|\\.)*')|(?:\"(?:[^\"\\]|\\.)*\")|[^\]]*)\]")


def _everything(value: Any, hidden: set[str]) -> None:
    """Every form a value may be quoted in: its text, its repr, and those of what is inside."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        if value:
            hidden.update((value, repr(value), repr(str(value))))
            parsed = _parsed(value)
            if not isinstance(parsed, str):  # "[1, 2]" from the environment, quoted as [1, 2]
                _everything(parsed, hidden)
        return
    if isinstance(value, (int, float)):
        hidden.update((repr(value), str(value)))
        return
    if isinstance(value, Mapping):
        hidden.add(repr(value))
        hidden.add(repr(dict(value)))
        for child in value.values():
            _everything(child, hidden)
    elif isinstance(value, (list, tuple, set, frozenset)):
        hidden.add(repr(value))
        for child in value:
            _everything(child, hidden)


def _parsed(text: str) -> Any:
    from ._convert import parse_raw
    from ._layers import RawText

    return parse_raw(RawText(text), Any)


def _secrets_below(value: Any, path: str, secret: Callable[[str], bool], hidden: set[str]) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if "." in sub and secret(sub):
                _everything(child, hidden)
            else:
                _secrets_below(child, sub, secret, hidden)
    elif isinstance(value, (list, tuple)):
        for child in value:
            _secrets_below(child, path, secret, hidden)


def _scrub(text: str, hidden: set[str]) -> str:
    for value in sorted(hidden, key=len, reverse=True):
        if value not in text:
            continue
        before = r"(?<!\w)" if re.match(r"\w", value) else ""
        after = r"(?!\w)" if re.search(r"\w$", value) else ""
        text = re.sub(before + re.escape(value) + after, MASK, text)
    return text
