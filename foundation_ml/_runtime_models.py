"""Registering and unloading a runtime's models (``MLRuntime.register_model``, ``unload_model``).

A registration that fails at any step (loading, the claim, the warm-up, batching, the registry;
a Ctrl-C anywhere) is undone whole; an unload stops every version it took out of the registry
whatever one's stop raises. Both take the runtime's ``_models_lock`` for each change of its
registry and claims (``_claims``: the lock each step needs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backend import LoadedModel
from ._claims import check_not_loaded
from ._loading import check_as_given, check_outputs, load_model
from ._names import MAX_VERSION_BYTES, check_name
from ._registry import metadata_of
from ._runtime_checks import check_batching, check_drain
from ._runtime_drain import deadline_in, raise_first, time_left
from ._serving import ServedModel
from ._signature import SignatureLike
from ._types import ModelMetadata
from .errors import ModelLoadError

if TYPE_CHECKING:
    from ._runtime import MLRuntime

__all__ = ["register", "unload"]


def register(
    runtime: MLRuntime,
    name: str,
    model: Any,
    *,
    version: str | None,
    backend: str | None,
    device: str | None,
    inputs: SignatureLike | None,
    outputs: SignatureLike | None,
    max_batch_size: int | None,
    max_wait_us: int | None,
    warmup: bool,
    options: dict[str, Any],
) -> ModelMetadata:
    """``runtime.register_model`` (see there): the arguments checked, the model loaded, claimed,
    warmed up, batched and added to the registry; undone whole if any of that raises."""
    _check_arguments(
        runtime,
        name,
        model,
        version,
        backend,
        device,
        inputs,
        outputs,
        max_batch_size,
        max_wait_us,
        warmup,
        options,
    )
    served = _load(runtime, name, model, version, backend, device, inputs, outputs, options)
    claimed = False
    try:
        with runtime._models_lock:
            runtime._claims.claim(served, runtime.registry)
        claimed = True
        if warmup:
            check_outputs(name, served.model, served.spec)
        _batch(runtime, served, max_batch_size, max_wait_us)
        registered = _add(runtime, served)
    except BaseException as exc:
        _undo(runtime, served, exc, claimed=claimed, ours=not isinstance(model, LoadedModel))
        raise
    finally:  # (released already, unless it failed or an interrupt landed before)
        with runtime._models_lock:
            runtime._claims.release(served)
    return registered


def _check_arguments(
    runtime: MLRuntime,
    name: str,
    model: Any,
    version: str | None,
    backend: str | None,
    device: str | None,
    inputs: SignatureLike | None,
    outputs: SignatureLike | None,
    max_batch_size: int | None,
    max_wait_us: int | None,
    warmup: bool,
    options: dict[str, Any],
) -> None:
    """What is refused before anything is loaded: the name, a closed runtime, the version, the
    batching settings, ``warmup`` not a bool (``"no"``, ``"false"`` from a config file, would
    run it), a ``LoadedModel`` told what does not agree with it, a version served."""
    check_name(name, "register_model: the model name")
    if runtime._closing:
        raise ModelLoadError("the runtime is closed", model=name)
    if version is not None:
        check_name(version, f"register_model({name!r}): the version", MAX_VERSION_BYTES)
    check_batching(max_batch_size, max_wait_us, f"register_model({name!r})")
    if not isinstance(warmup, bool):
        raise TypeError(f"register_model({name!r}): warmup must be True or False, not {warmup!r}")
    if isinstance(model, LoadedModel):
        check_as_given(name, model, backend, device, inputs, outputs, options)
    if version is not None or isinstance(model, LoadedModel):  # known before loading it
        check_not_loaded(runtime.registry, name, version or str(getattr(model, "version", "") or "1"))


def _load(
    runtime: MLRuntime,
    name: str,
    model: Any,
    version: str | None,
    backend: str | None,
    device: str | None,
    inputs: SignatureLike | None,
    outputs: SignatureLike | None,
    options: dict[str, Any],
) -> ServedModel:
    """``model`` loaded by its backend, as the version it is served as (``version``, else the one
    the model names, else "1"); a model loaded here is closed again if that version is invalid."""
    loaded, spec = load_model(
        runtime.hub, name, model, backend, device or runtime.device, inputs, outputs, options
    )
    try:
        version = version or check_name(
            str(getattr(loaded, "version", "") or "1"), f"model {name!r}: its version", MAX_VERSION_BYTES
        )
    except ValueError as exc:  # a package's manifest names a version no transport can carry
        if not isinstance(model, LoadedModel):
            loaded.close()
        raise ModelLoadError(str(exc), model=name) from None
    return ServedModel(name, version, loaded, spec)


def _batch(
    runtime: MLRuntime, served: ServedModel, max_batch_size: int | None, max_wait_us: int | None
) -> None:
    """Batch ``served`` if the registration (else the runtime) asks for batches of more than one
    request: a model that cannot be batched is refused if the registration asked, else unbatched."""
    batch = runtime.max_batch_size if max_batch_size is None else max_batch_size
    if batch > 1:
        if not served.model.batchable:
            if max_batch_size is not None:
                why = (
                    "dimension 0 of every input and output must be -1"
                    if served.model.inputs
                    else "a model without inputs has no rows to stack"
                )
                raise ModelLoadError(
                    f"cannot batch: {why} (signature: {served.metadata([served.version]).signature()})",
                    model=served.name,
                )
        else:
            wait = runtime.max_wait_us if max_wait_us is None else max_wait_us
            served.enable_batching(batch, wait)


def _add(runtime: MLRuntime, served: ServedModel) -> ModelMetadata:
    """Serve ``served`` (the registry's check holds its model from now on: the claim let go in
    the same locked block); its model's metadata as of this registration."""
    with runtime._models_lock:
        if runtime._closing:
            raise ModelLoadError("the runtime is closed", model=served.name)
        runtime.registry.add(served)
        runtime._claims.release(served)  # served from now on: the registry's check holds it
        runtime._update_batchers()
        # as of this registration: read after the lock, an unload landing meanwhile made it
        # return another version's signature, or raise ModelNotFound
        return metadata_of(runtime.registry.snapshot(), served.name)


def _undo(runtime: MLRuntime, served: ServedModel, exc: BaseException, *, claimed: bool, ours: bool) -> None:
    """Undo the registration of ``served``, which raised ``exc``, and raise (``exc``, or an
    interrupt that landed meanwhile, noting ``exc``). ``claimed``: its claim was taken; ``ours``:
    the runtime loaded its model (not a ``LoadedModel`` handed over as it is).

    Out of the registry if it got in (a Ctrl-C just after registry.add: listed though stopped,
    the latest, and every request for no version spun in __call__); its batcher thread stopped,
    if started; its model released only if we loaded it and it is not another registration's (a
    backend that handed back an object it had loaded before). Not if another thread's
    unload_model took it out of the registry first: that stops it, and a stop of ours too closed
    its model twice (or released it under that one's drain). What these raise too is noted on
    the reason, not raised instead of it."""
    errors = [exc]
    unloaded = False
    try:
        with runtime._models_lock:
            if runtime.registry.discard(served):
                runtime._update_batchers()
            else:
                unloaded = runtime._claims.unloaded(served)
    except BaseException as also:
        errors.append(also)
    try:
        mine = claimed or runtime._claims.holds(served)
        if not unloaded:
            served.stop(close_model=mine and ours)
    except BaseException as also:
        errors.append(also)
    first = next((e for e in errors if not isinstance(e, Exception)), exc)
    if first is not exc:  # an interrupt while releasing goes first: the reason noted as such
        first.add_note(f"registering model {served.name!r} had failed: {exc!r}")
        errors.remove(exc)  # (not noted again as something releasing it raised)
    raise_first(errors, f"releasing model {served.name!r} also raised")


def unload(runtime: MLRuntime, name: str, version: str | None, drain_timeout: float) -> None:
    """``runtime.unload_model`` (see there): the versions taken out of the registry, each stopped
    within what is left of the drain (none once a Ctrl-C came), whatever another's stop raised."""
    check_name(name, "unload_model: the model name")  # None or 1 read 'no such model'
    drain_timeout = check_drain(drain_timeout, f"unload_model({name!r})")
    if version is not None:  # "" would read "no such model"; 1 "no version 1 (versions: 1)"
        check_name(version, f"unload_model({name!r}): the version", MAX_VERSION_BYTES)
    deadline = deadline_in(drain_timeout)
    gone: list[ServedModel] = []
    errors: list[BaseException] = []  # each version is stopped whatever another's stop raised:
    try:  # out of the registry, none would ever be stopped after (a Ctrl-C meanwhile too)
        with runtime._models_lock:
            gone = runtime.registry.remove(name, version)
            runtime._claims.begin_unloads(gone)
            runtime._update_batchers()
        for served in gone:
            hurry = any(not isinstance(e, Exception) for e in errors)  # a Ctrl-C: no more waiting
            left = 0.0 if hurry else time_left(deadline)
            try:
                why = f"version {served.version!r} is being unloaded"  # (told to a request meanwhile)
                served.stop(left, why=why, hurried=runtime._hurried)
            except BaseException as exc:
                errors.append(exc)
    except BaseException as exc:
        errors.append(exc)
    finally:
        _end_unloads(runtime, gone, errors)
    raise_first(errors, f"unloading model {name!r} also raised")


def _end_unloads(runtime: MLRuntime, gone: list[ServedModel], errors: list[BaseException]) -> None:
    """``unload`` is done with ``gone`` (ends what ``begin_unloads`` began): a version whose stop
    never ran to its end (a Ctrl-C came first, or landed in it before it released the model) is
    stopped at once, the batchers listed again and the versions let go; what these raise is added
    to ``errors``."""
    for served in gone:
        try:
            if not served.stopped:
                served.stop(0.0, why=f"version {served.version!r} is being unloaded")
        except BaseException as exc:
            errors.append(exc)
    try:
        with runtime._models_lock:
            runtime._update_batchers()
            for served in gone:
                runtime._claims.end_unload(served)
    except BaseException as exc:  # (left in unloading: released, so over for claim)
        errors.append(exc)
    runtime._claims.notify_unloaded()
