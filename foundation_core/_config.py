"""The configuration contract: sections declared by plugins, and the frozen ``Config`` they form.

Each plugin declares its section as a frozen attrs class through ``foundation_config_sections``.
The config plugin (``foundation-config``) builds the layered configuration by implementing
``foundation_load_config``; without it, every section takes its defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from ._freeze import FrozenDict, freeze_section
from ._registry import Registry, current_plugin
from .errors import ConfigError, ConfigProblem, PluginError

__all__ = ["SENSITIVE_KEYS", "Config", "SectionAdder", "default_config", "is_sensitive_key"]

#: Key names whose values are secrets: the config plugin masks them in ``config show`` and the
#: logging plugin redacts them from log lines. Defined once so the two can never disagree.
SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "private_key",
    "passphrase",
    "auth",  # an HTTP client's auth=(user, password), basic_auth, proxy_auth
    "session_id",  # a session id is a bearer credential: X-Session-Id, sessionId
    "sessionid",
    "session_key",
)

# a key's words: runs of capitals (an acronym: API in APIKey), capitalised or lower-case words,
# digits; anything else (_ - . space) only separates them
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _words(key: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD.findall(key))


def is_sensitive_key(key: str, names: Iterable[str]) -> bool:
    """Whether ``key`` names a secret by ``names`` (``SENSITIVE_KEYS``, or a configured list):
    a name's words appear together, in order, among the key's words (split at ``_``, ``-``,
    ``.`` and camelCase): ``password`` catches ``db_password``, ``dbPassword`` and ``password2``;
    ``secret`` catches ``SECRET_KEY`` and ``AWS_SECRET_ACCESS_KEY``; ``api_key`` catches
    ``X-Api-Key`` and ``apiKeyId``; but ``token`` does not catch ``max_tokens``, nor
    ``password`` ``passwords_checked``. A key that, lowercased, equals a name or ends with
    ``_`` + a name is sensitive whatever its words (non-ASCII names). Shared by the config
    plugin's masking and the logging plugin's redaction, so the two never disagree."""
    low = key.lower().replace("-", "_")
    words = _words(key)
    for name in names:
        n = name.lower().replace("-", "_")
        if low == n or low.endswith("_" + n):
            return True
        want = _words(name)
        if want and any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1)):
            return True
    return False


class SectionAdder:
    """The ``add`` callback of ``foundation_config_sections``: ``add("retry", RetrySettings)``, or
    lazily ``add("retry", "foundation_retry._policy:RetryPolicy")``: the class is imported when the
    configuration is first built, so start-up (``foundation plugins``) never imports it.

    Names follow the registries' precedence (:mod:`foundation_core._registry`): an application's
    section wins over an installed plugin's of the same name, which is shadowed, not a clash."""

    __slots__ = ("_registry",)

    def __init__(self) -> None:
        self._registry: Registry[type[Any]] = Registry("config section")

    @property
    def sections(self) -> dict[str, type[Any] | str]:
        return self._registry.items()

    @property
    def owners(self) -> dict[str, str]:
        return {e.name: e.plugin for e in self._registry.entries()}

    def __call__(self, name: str, cls: type[Any] | str, *, replace: bool = False) -> None:
        plugin, app = current_plugin.get()
        if isinstance(cls, str):
            if cls.count(":") != 1 or not all(cls.split(":")):
                raise ValueError(
                    f"config section {name!r} of plugin {plugin!r}: {cls!r} is not 'module:Class'"
                )
        elif not attrs.has(cls):
            raise TypeError(f"config section {name!r} of plugin {plugin!r}: {cls!r} is not an attrs class")
        self._registry.add(name, cls, plugin=plugin, app=app, replace=replace)

    def resolved(self) -> dict[str, type[Any]]:
        """Every section's class, importing those added lazily (once). A lazy one that does not
        import, or is not an attrs class, is a ``PluginError`` naming its plugin."""
        out: dict[str, type[Any]] = {}
        for entry in self._registry.entries():
            value = self._registry.get(entry.name)  # a reference that does not import: PluginError
            if not attrs.has(value):
                raise PluginError(
                    entry.plugin, f"config section {entry.name!r}: {entry.target!r} is not an attrs class"
                )
            out[entry.name] = value
        return out

    def remove_plugin(self, plugin: str) -> None:
        self._registry.remove_plugin(plugin)

    def shadowed_of(self, plugin: str) -> dict[str, str]:
        return self._registry.shadowed_of(plugin)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return FrozenDict(mapping)


@attrs.frozen
class Config(Mapping[str, Any]):
    """The effective configuration: section name -> frozen section instance.

    ``sources`` maps dotted keys (``retry.max_attempts``) to where each value came from
    (``default``, ``settings.toml:retry.max_attempts``, ``env FOUNDATION_RETRY__MAX_ATTEMPTS``,
    ``--set``). ``references`` maps a key whose value was built from others by interpolation
    (``${db.password}``) to every key it read, directly or not, so that a secret copied into it
    can be masked too. Every attribute is read-only; assigning raises
    ``attrs.exceptions.FrozenInstanceError``.
    """

    sections: Mapping[str, Any] = attrs.field(converter=_frozen)
    sources: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    references: Mapping[str, frozenset[str]] = attrs.field(factory=dict, converter=_frozen)

    def __getitem__(self, name: str) -> Any:
        try:
            return self.sections[name]
        except KeyError:
            known = ", ".join(sorted(self.sections)) or "none"
            raise KeyError(f"no config section {name!r} (sections: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.sections)

    def __len__(self) -> int:
        return len(self.sections)

    def value(self, path: str) -> Any:
        """The value at a dotted path, for example ``config.value("retry.max_attempts")``."""
        section, _, rest = path.partition(".")
        if section not in self:
            raise KeyError(
                f"no config value {path!r}: no section {section!r} (sections: {', '.join(sorted(self))})"
            )
        obj: Any = self[section]
        walked = section
        for part in rest.split(".") if rest else ():
            try:
                obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
            except (KeyError, AttributeError, TypeError):
                raise KeyError(f"no config value {path!r}: {walked} has no {part!r}") from None
            walked = f"{walked}.{part}"
        return obj


def default_config(sections: Mapping[str, type[Any]]) -> Config:
    """Every section at its defaults; a section class with a required field, or a default that
    cannot be frozen (see :func:`~foundation_core._freeze.freeze_section`), is a ConfigError."""
    built: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for name, cls in sections.items():
        try:
            instance = cls()
        except (TypeError, ValueError) as exc:
            problems.append(ConfigProblem(name, f"section has no complete defaults: {exc}", "default"))
            continue
        try:
            built[name] = freeze_section(instance, name=name)
        except ValueError as exc:  # a default that contains itself or is nested too deeply
            problems.append(ConfigProblem(name, f"its defaults cannot be frozen: {exc}", "default"))
    if problems:
        raise ConfigError(problems)
    sources = {f"{n}.{f.name}": "default" for n, c in sections.items() for f in attrs.fields(c)}
    return Config(built, sources)
