"""Which effective values are secrets, so that ``config show`` prints them masked."""

from __future__ import annotations

from collections.abc import Iterable

from ._files import SECRETS_PREFIX

__all__ = ["MASK", "from_secrets_file", "is_secret"]

MASK = "********"


def is_secret(path: str, source: str, names: Iterable[str]) -> bool:
    """A value is secret when its key, lowercased, equals a name or ends with ``_`` + name
    (``password`` masks ``db_password``), or when it came from a ``.secrets.*`` file."""
    key = path.rpartition(".")[2].lower()
    if any(key == n or key.endswith("_" + n) for n in names):
        return True
    return from_secrets_file(source)


def from_secrets_file(source: str) -> bool:
    """Whether ``source`` (``".secrets.toml:db.password"``) names a ``.secrets.*`` file."""
    file = source.partition(":")[0] if ":" in source and not source.startswith(("env ", "--set")) else ""
    return file.replace("\\", "/").rpartition("/")[2].startswith(SECRETS_PREFIX)
