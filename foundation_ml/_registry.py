"""The model registry: served models by name and version; the default version is the latest loaded."""

from __future__ import annotations

import threading

from ._serving import ServedModel
from ._types import ModelMetadata
from .errors import ModelLoadError, ModelNotFound

__all__ = ["ModelRegistry"]

#: Every version of every model (name -> version -> served, oldest first) and the latest of each.
#: Never changed once made: a change makes a new pair and swaps it in.
State = tuple[dict[str, dict[str, ServedModel]], dict[str, ServedModel]]


class ModelRegistry:
    """Holds :class:`ServedModel` objects. Changes take a lock and swap in a new :data:`State`;
    every read takes the state once (one attribute read, no lock) and answers from it alone, so a
    request, a listing or an error message sees the registry before or after a change, never
    half of it. (Read twice, a model unloaded in between made ``versions()`` raise KeyError and a
    request's 'no version' error raise it out of the handler.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: State = ({}, {})

    def add(self, served: ServedModel) -> None:
        with self._lock:
            all_versions, latest = self._state
            versions = dict(all_versions.get(served.name, {}))
            if served.version in versions:
                raise ModelLoadError(
                    f"version {served.version!r} is already loaded; unload it first or pass another version",
                    model=served.name,
                )
            versions[served.version] = served
            _mark_others(versions)
            self._state = ({**all_versions, served.name: versions}, {**latest, served.name: served})

    def remove(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Remove one version (or every version) of ``name``; returns what was removed."""
        with self._lock:
            return self._remove(name, version)

    def discard(self, served: ServedModel) -> bool:
        """Remove ``served`` if the registry holds it (a registration undone); whether it did."""
        with self._lock:
            if self._state[0].get(served.name, {}).get(served.version) is not served:
                return False
            self._remove(served.name, served.version)
        return True

    def _remove(self, name: str, version: str | None) -> list[ServedModel]:
        """``remove``, the lock held."""
        state = self._state
        versions = dict(state[0].get(name, {}))
        if not versions or (version is not None and version not in versions):
            raise _not_found(state, name, version or "")
        gone = list(versions.values()) if version is None else [versions.pop(version)]
        all_versions = {k: v for k, v in state[0].items() if k != name}
        latest = {k: v for k, v in state[1].items() if k != name}
        if version is not None and versions:
            _mark_others(versions)
            all_versions[name] = versions
            latest[name] = list(versions.values())[-1]
        self._state = (all_versions, latest)
        return gone

    def get(self, name: str, version: str = "") -> ServedModel:
        """The served model for a request (``version`` empty: the latest loaded)."""
        state = self._state
        served = state[1].get(name) if not version else state[0].get(name, {}).get(version)
        if served is None:
            raise _not_found(state, name, version)
        return served

    def names(self) -> list[str]:
        return sorted(self._state[0])

    def versions(self, name: str) -> list[str]:
        return _versions(self._state, name)

    def snapshot(self) -> State:
        """Every version of every model and the latest of each, as of one moment (a model being
        loaded or unloaded meanwhile is in both or in neither). Read, never change, them."""
        return self._state

    def all(self) -> list[ServedModel]:
        all_versions = self._state[0]
        return [s for n in sorted(all_versions) for s in all_versions[n].values()]

    def metadata(self, name: str) -> ModelMetadata:
        return metadata_of(self._state, name)


def metadata_of(state: State, name: str) -> ModelMetadata:
    """``name``'s metadata as of ``state``: its latest version's signature, all its versions."""
    served = state[1].get(name)
    if served is None:
        raise _not_found(state, name, "")
    return served.metadata(list(state[0][name]))


def _versions(state: State, name: str) -> list[str]:
    versions = state[0].get(name)
    if versions is None:
        raise _not_found(state, name, "")
    return list(versions)


def _not_found(state: State, name: str, version: str) -> ModelNotFound:
    versions = state[0].get(name)
    if versions is not None and version:
        return ModelNotFound(f"no version {version!r} (versions: {', '.join(versions)})", model=name)
    return ModelNotFound(f"no such model (serving: {', '.join(sorted(state[0])) or 'none'})", model=name)


def _mark_others(versions: dict[str, ServedModel]) -> None:
    """Tell each version of one name whether another is served beside it (its errors then name it)."""
    others = len(versions) > 1
    for served in versions.values():
        served.others = others
