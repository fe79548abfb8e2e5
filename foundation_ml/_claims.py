"""The models a runtime holds outside its registry: being registered, or being unloaded.

``MLRuntime`` closes a model when it is unloaded, so one model object is served under one name
and version. Between loading a model and adding it to the registry (``register_model``: its
warm-up), and between taking a version out of the registry and closing its model
(``unload_model``: its drain), the registry alone does not say that the model is taken;
``ModelClaims`` does. An unload whose drain timed out with a call still running returns before
that call closes the model; until then the model stays claimed too (``closing``).

Locking: ``ModelClaims`` has no lock of its own for its bookkeeping. ``claim``, ``release``,
``begin_unloads`` and ``end_unload`` must be called holding the runtime's ``_models_lock``, the
lock that guards its registry, so that a registry change and a claim's change are seen together:
``register_model`` lets go of its claim in the same locked block as ``registry.add`` (no moment
where the model is neither claimed nor served), and ``unload_model`` lists the versions it
unloads in the same block as ``registry.remove``. ``holds`` reads without it (one dict look-up).
The ``Condition`` of ``notify_unloaded`` and ``wait_for_unloads`` is its own lock, apart from
``_models_lock``: it only wakes ``close()`` as unloads end.

Across runtimes: one model object is held by one runtime of the process at a time, from its
claim until the version holding it is ``released`` (its model closed, or left to its owner). The
runtimes' ``ModelClaims`` share ``_HELD``, under ``_HELD_LOCK`` (taken inside a runtime's
``_models_lock``, never around one): each model claimed, by id, with the ``ServedModel`` holding it
and the runtime, both by weak reference, so that an entry keeps nothing alive, and one whose
version is gone or released is over (the id may be another object's by then), as is one whose
runtime is gone without stopping it (nothing closes its model then). A forked child
starts with none: the runtimes it inherited are its parent's, left serving there.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ._batching import HURRY_CHECK_S
from ._registry import ModelRegistry
from ._serving import ServedModel
from .errors import ModelLoadError

__all__ = ["ModelClaims", "check_not_loaded"]

#: every runtime's models, by id of the model: the version holding it and that runtime's claims
_HELD: dict[int, tuple[weakref.ref[ServedModel], weakref.ref[ModelClaims]]] = {}
_HELD_LOCK = threading.Lock()


def _forget_held_after_fork() -> None:
    """In a forked child: the runtimes that held models at the fork are the parent's, left serving
    there (a child's exit closes none of them: ``_runtime_lifecycle._close_open_runtimes``), so
    they hold none here; a model one served was refused by every runtime of the child. The lock,
    which a parent thread may have held at the fork (a claim under way), is made anew: held, every
    registration of the child hung for ever."""
    global _HELD_LOCK
    _HELD_LOCK = threading.Lock()
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_held_after_fork)


class ModelClaims:
    """The models ``register_model`` is loading into the registry and the versions
    ``unload_model`` is stopping, each with the thread doing it (see the module's docstring for
    the lock each method needs)."""

    __slots__ = ("__weakref__", "_closing", "_registering", "_runtime", "_unloaded", "unloading")

    def __init__(self, runtime: Callable[[], Any] = lambda: None) -> None:
        # the runtime whose claims these are (a weak reference: its ``name`` names it to others)
        self._runtime = runtime
        # the models register_model is loading into the registry (by id: they are held meanwhile),
        # each with the ServedModel it is for and the thread loading it (see claim)
        self._registering: dict[int, tuple[ServedModel, threading.Thread]] = {}
        # the versions unload_model took out of the registry and is stopping, each with the thread
        # stopping it: their models are not closed yet (see claim, wait_for_unloads)
        self.unloading: list[tuple[ServedModel, threading.Thread]] = []
        self._unloaded = threading.Condition()  # notified as unload_model is done with a version
        # the versions unload_model is done with whose model a call still running closes when it
        # returns: id of the model, name, version and the ServedModel's ``released`` (no reference
        # to the model: the runtime holds none once that call has returned)
        self._closing: list[tuple[int, str, str, threading.Event]] = []

    def claim(self, served: ServedModel, registry: ModelRegistry) -> None:
        """Refuse a ``LoadedModel`` already served, or being registered by another thread, before
        its warm-up runs it: unloading either registration would close it under the other (the
        runtime owns what it serves), and the warm-up or a second batcher would call a model that
        need not be thread-safe while it serves. Checked once it had been warmed up, it had run
        beside its calls, and two registrations at once each found it served by neither. Else
        its model is claimed for ``served`` until ``register_model`` is done. A version being
        unloaded is refused too: its unload would close the model under this registration; so is
        one whose unload timed out with a call of it still running, until that call has returned and
        closed it (``closing``). A claim or unload of this thread's own, or an unload whose model is
        closed, is over (an interrupt landed before it was let go). (Under _models_lock.)"""
        name, version, model = served.name, served.version, served.model
        me = threading.current_thread()
        claim = self._registering.get(id(model))
        if claim is not None and claim[1] is not me:
            other = claim[0]
            raise ModelLoadError(
                f"this {type(model).__name__} is being registered as {other.name!r} version "
                f"{other.version!r} by another thread; pass a model of its own to each name "
                "and version",
                model=name,
            )
        self._forget_released()
        for other, thread in self.unloading:
            if other.model is model and thread is not me:
                raise ModelLoadError(
                    f"this {type(model).__name__} is being unloaded as {other.name!r} version "
                    f"{other.version!r}, which closes it; pass a model of its own to each name "
                    "and version",
                    model=name,
                )
        self._closing = [e for e in self._closing if not e[3].is_set()]  # (closed since)
        for key, other_name, other_version, _ in self._closing:
            if key == id(model):  # (not released: that served version holds it, so the id is its)
                raise ModelLoadError(
                    f"this {type(model).__name__} was unloaded as {other_name!r} version "
                    f"{other_version!r} while a call of it still ran, and is closed when that call "
                    "returns; pass a model of its own to each name and version",
                    model=name,
                )
        for other in registry.all():
            if other.model is not model:
                continue
            raise ModelLoadError(
                f"this {type(model).__name__} is already served as {other.name!r} version "
                f"{other.version!r}; the runtime closes a model when it is unloaded, so pass "
                "a model of its own to each name and version",
                model=name,
            )
        self._claim_in_process(served)
        self._registering[id(model)] = (served, me)  # ours: released if refused now
        check_not_loaded(registry, name, version)  # (a spec's own version, now known)

    def _claim_in_process(self, served: ServedModel) -> None:
        """Refuse ``served``'s model if another runtime of this process holds it (its unload
        there would close it under this one, as within one runtime: see ``claim``), naming that
        runtime; else it is this runtime's until ``served`` is released. Entries over are
        forgotten. (Under _models_lock.)"""
        key = id(served.model)
        with _HELD_LOCK:
            for k in [k for k, entry in _HELD.items() if _over(entry)]:
                del _HELD[k]
            held = _HELD.get(key)
            other = held[0]() if held is not None else None
            claims = held[1]() if held is not None else None
            if other is not None and claims is not self:
                raise ModelLoadError(_held_elsewhere(served, other, claims), model=served.name)
            _HELD[key] = (weakref.ref(served), weakref.ref(self))

    def holds(self, served: ServedModel) -> bool:
        """Whether ``served`` holds the claim on its model (read without _models_lock)."""
        return self._registering.get(id(served.model), (None,))[0] is served

    def release(self, served: ServedModel) -> None:
        """Let go of ``served``'s claim on its model, if it holds it (under _models_lock)."""
        if self.holds(served):
            del self._registering[id(served.model)]

    def begin_unloads(self, gone: Iterable[ServedModel]) -> None:
        """``gone``, just taken out of the registry, is being stopped by this thread (under
        _models_lock, with that ``registry.remove``)."""
        me = threading.current_thread()
        self._forget_released()
        self.unloading.extend((served, me) for served in gone)

    def unloaded(self, served: ServedModel) -> bool:
        """Whether an ``unload_model`` took ``served`` out of the registry: it is stopping it, or
        has stopped it (under _models_lock: a failed registration's undo, finding it gone from
        the registry, leaves its stop to that unload)."""
        return served.stopped or any(other is served for other, _ in self.unloading)

    def _forget_released(self) -> None:
        """Drop the versions being unloaded whose model is closed already: over for a claim, and
        held no longer by an entry that a Ctrl-C kept ``end_unload`` from dropping (under
        _models_lock)."""
        self.unloading = [e for e in self.unloading if not e[0].released.is_set()]

    def end_unload(self, served: ServedModel) -> None:
        """``unload_model`` is done with ``served`` (under _models_lock; then ``notify_unloaded``);
        its model stays claimed until a call still running has closed it (``closing``)."""
        self.unloading = [e for e in self.unloading if e[0] is not served]
        self._closing = [e for e in self._closing if not e[3].is_set()]
        if not served.released.is_set():
            self._closing.append((id(served.model), served.name, served.version, served.released))

    def notify_unloaded(self) -> None:
        """Wake ``wait_for_unloads`` (not under _models_lock: the Condition's own lock)."""
        with self._unloaded:
            self._unloaded.notify_all()

    def wait_for_unloads(self) -> None:
        """Wait until no other thread's ``unload_model`` is stopping a version (``close()``: its
        drain ends by close's deadline, see ``MLRuntime._hurried``). An entry of this thread's
        own, of a thread gone, or whose model is closed already is over (an interrupt landed
        before it was let go)."""
        me = threading.current_thread()

        def done() -> bool:
            return all(
                thread is me or not thread.is_alive() or served.released.is_set()
                for served, thread in self.unloading
            )

        with self._unloaded:
            while not self._unloaded.wait_for(done, HURRY_CHECK_S):
                pass


def _over(entry: tuple[weakref.ref[ServedModel], weakref.ref[ModelClaims]]) -> bool:
    """Whether an entry of ``_HELD`` holds its model no longer: its version is gone or has released
    it, or its runtime is gone (dropped without ``close()``) and never stopped it: nothing can
    unload it then, so nothing closes the model (its batcher thread, which keeps it alive, runs
    it no more: nothing reaches it). A version stopped whose call still runs holds it still:
    that call's return closes it."""
    served = entry[0]()
    return served is None or served.released.is_set() or (entry[1]() is None and not served.stopped)


def _held_elsewhere(served: ServedModel, other: ServedModel, claims: ModelClaims | None) -> str:
    """What refuses ``served``'s model, held by ``other`` in another runtime (``claims``, None
    once that runtime is gone: its version was unloaded, and a call of it still runs)."""
    runtime = claims._runtime() if claims is not None else None
    label = getattr(runtime, "name", "")
    where = f"another MLRuntime, {label!r}," if label else "another MLRuntime (unnamed)"
    what = f"this {type(served.model).__name__}"
    as_ = f"as {other.name!r} version {other.version!r}"
    if other.stopped:
        why = (
            f"was unloaded {as_} in {where} while a call of it still ran, and is closed when "
            "that call returns"
        )
    elif other.stopping:
        why = f"is being unloaded {as_} by {where} which closes it"
    elif claims is not None and claims.holds(other):
        why = f"is being registered {as_} by {where} which closes it when it is unloaded"
    else:
        why = f"is already served {as_} by {where} which closes it when it is unloaded"
    return f"{what} {why}; pass a model of its own to each name and version"


def check_not_loaded(registry: ModelRegistry, name: str, version: str) -> None:
    """Refuse a version of ``name`` already served before loading, or warming up, another (the
    registry's own check, once it is warmed up, stays: two registrations of it at once)."""
    if version in registry.snapshot()[0].get(name, {}):
        raise ModelLoadError(
            f"version {version!r} is already loaded; unload it first or pass another version", model=name
        )
