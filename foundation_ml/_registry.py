"""The model registry: served models by name and version; the default version is the latest loaded."""

from __future__ import annotations

import threading

from ._serving import ServedModel
from ._types import ModelMetadata
from .errors import ModelLoadError, ModelNotFound

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """Holds :class:`ServedModel` objects. Lookups are lock-free dict reads; changes take a lock
    and swap in new dicts, so a request sees the registry before or after a change, never half."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, dict[str, ServedModel]] = {}
        self._latest: dict[str, ServedModel] = {}

    def add(self, served: ServedModel) -> None:
        with self._lock:
            versions = dict(self._versions.get(served.name, {}))
            if served.version in versions:
                raise ModelLoadError(
                    f"version {served.version!r} is already loaded; unload it first or pass another version",
                    model=served.name,
                )
            versions[served.version] = served
            _mark_others(versions)
            self._versions = {**self._versions, served.name: versions}
            self._latest = {**self._latest, served.name: served}

    def remove(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Remove one version (or every version) of ``name``; returns what was removed."""
        with self._lock:
            versions = dict(self._versions.get(name, {}))
            if not versions or (version is not None and version not in versions):
                raise self._not_found(name, version or "")
            gone = list(versions.values()) if version is None else [versions.pop(version)]
            all_versions = {k: v for k, v in self._versions.items() if k != name}
            latest = {k: v for k, v in self._latest.items() if k != name}
            if version is not None and versions:
                _mark_others(versions)
                all_versions[name] = versions
                latest[name] = list(versions.values())[-1]
            self._versions, self._latest = all_versions, latest
        return gone

    def get(self, name: str, version: str = "") -> ServedModel:
        """The served model for a request (``version`` empty: the latest loaded)."""
        served = self._latest.get(name) if not version else self._versions.get(name, {}).get(version)
        if served is None:
            raise self._not_found(name, version)
        return served

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[str]:
        if name not in self._versions:
            raise self._not_found(name, "")
        return list(self._versions[name])

    def snapshot(self) -> tuple[dict[str, dict[str, ServedModel]], dict[str, ServedModel]]:
        """Every version of every model and the latest of each, as of one moment (a model being
        loaded or unloaded meanwhile is in both or in neither)."""
        with self._lock:
            return self._versions, self._latest

    def all(self) -> list[ServedModel]:
        return [s for n in sorted(self._versions) for s in self._versions[n].values()]

    def metadata(self, name: str) -> ModelMetadata:
        return self.get(name).metadata(self.versions(name))

    def _not_found(self, name: str, version: str) -> ModelNotFound:
        if name in self._versions and version:
            have = ", ".join(self._versions[name])
            return ModelNotFound(f"no version {version!r} (versions: {have})", model=name)
        return ModelNotFound(f"no such model (serving: {', '.join(self.names()) or 'none'})", model=name)


def _mark_others(versions: dict[str, ServedModel]) -> None:
    """Tell each version of one name whether another is served beside it (its errors then name it)."""
    others = len(versions) > 1
    for served in versions.values():
        served.others = others
