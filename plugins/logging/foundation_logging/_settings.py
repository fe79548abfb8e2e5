"""The ``logging`` config section: level, format, output and the keys to redact."""

from __future__ import annotations

import attrs

from foundation_core import SENSITIVE_KEYS

__all__ = ["DEFAULT_REDACT", "FORMATS", "LEVELS", "LoggingSettings"]

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("console", "json")
DEFAULT_REDACT = SENSITIVE_KEYS  # defined once, in foundation_core


def _level(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or value.lower() not in LEVELS:
        raise ValueError(f"logging.level must be one of {', '.join(LEVELS)} (any case), got {value!r}")


def _lower(value: object) -> object:
    """``format`` in any case, as ``level`` is (``FOUNDATION_LOGGING__FORMAT=JSON``)."""
    return value.lower() if isinstance(value, str) else value


def _format(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in FORMATS:
        raise ValueError(f"logging.format must be one of {', '.join(FORMATS)} (any case), got {value!r}")


def _output(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"logging.output must be 'stderr', 'stdout' or a file path, got {value!r}")
    if "\x00" in value:  # no file can be named so; open() would raise ValueError, naming nothing
        raise ValueError(f"logging.output must not contain a NUL character, got {value!r}")


def _redact(inst: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    bad = [k for k in value if not isinstance(k, str) or not k]
    if bad:
        raise ValueError(f"logging.redact must be a list of non-empty key names, got {bad!r}")


@attrs.frozen
class LoggingSettings:
    """How Foundation logs. Every plugin's log lines and events go through this one pipeline.

    ``output`` is ``"stderr"``, ``"stdout"`` or a file path (appended to). ``redact`` names keys
    whose values are replaced by ``"[REDACTED]"``: a key matches when a name's words appear
    together among its words (``password`` matches ``db_password`` and ``dbPassword`` but not
    ``passwords_checked``; :func:`foundation_core.is_sensitive_key`).
    ``stdlib`` routes the standard library's ``logging`` records through the same pipeline.
    ``reopen`` makes a file output follow its path when log rotation renames or deletes the file.
    """

    level: str = attrs.field(default="info", validator=_level)
    format: str = attrs.field(default="console", converter=_lower, validator=_format)
    output: str = attrs.field(default="stderr", validator=_output)
    redact: tuple[str, ...] = attrs.field(default=DEFAULT_REDACT, validator=_redact)
    stdlib: bool = True
    reopen: bool = False
