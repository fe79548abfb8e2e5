"""Loading a model for the runtime: its backend found and called, then warmed up against its outputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from foundation_core import Hub

from ._backend import LoadedModel, ModelBackend, backend_for
from ._batching import is_ctrl_c
from ._package import MANIFEST, is_package
from ._signature import SignatureLike, _describe_value, describe, example_inputs, parse_signature, problems
from ._types import TensorSpec
from .errors import InferenceError, ModelLoadError, PackageError

__all__ = ["check_as_given", "check_loaded", "check_outputs", "load_model"]


def load_model(
    hub: Hub,
    name: str,
    model: Any,
    backend: str | None,
    device: str,
    inputs: SignatureLike | None,
    outputs: SignatureLike | None,
    options: dict[str, Any],
) -> tuple[LoadedModel, str]:
    """``model`` loaded by its backend (``backend``, else the one that takes it), and how errors
    name it (its path or reference, else its type); any failure is a ``ModelLoadError``."""
    if isinstance(model, LoadedModel):
        return model, f"<{type(model).__name__}>"
    spec = str(model) if isinstance(model, str | Path) else f"<{type(model).__name__}>"
    chosen = backend is None
    if backend is None:
        known = {e.name: (None if e.lazy else e.resolve()) for e in hub.model_backends.entries()}
        try:  # a package's manifest names it: read and checked
            backend = backend_for(model, known, resolve=hub.model_backends.get)
        except (ModelLoadError, InferenceError):
            raise
        except Exception as exc:
            msg = f"{spec} failed to load: {type(exc).__name__}: {exc}"
            raise ModelLoadError(msg, model=name) from exc
        if backend not in hub.model_backends and is_package(model):
            where = f"{model}{'/' if Path(model).is_dir() else ':'}{MANIFEST}"
            registered = ", ".join(hub.model_backends.names()) or "none"
            raise PackageError(
                f"{where} names backend {backend!r}, which is not registered (registered: {registered})",
                model=name,
                file=MANIFEST,
            )
    # a path or reference that no manifest routes: the torch backend's unless backend= says otherwise
    by_default = chosen and isinstance(model, str | Path) and not is_package(model)
    if by_default and backend not in hub.model_backends:
        registered = ", ".join(hub.model_backends.names()) or "none"
        raise ModelLoadError(
            f"{spec}: a path or reference is loaded by the {backend!r} backend unless backend= names "
            f"another, and {backend!r} is not registered (registered: {registered})",
            model=name,
        )
    backend_class = hub.model_backends.get(backend)  # not registered, or its import failed: named
    try:  # its constructor too: one calling sys.exit() ended the process
        impl: ModelBackend = backend_class()
        loaded = impl.load(model, name=name, device=device, inputs=inputs, outputs=outputs, **options)
    except (ModelLoadError, InferenceError) as exc:
        others = [b for b in hub.model_backends.names() if b != backend]
        if not by_default or not others or not isinstance(exc, ModelLoadError):
            raise
        hint = (
            f" (the {backend!r} backend loads a path or reference unless backend= names another: "
            f"{', '.join(others)})"
        )
        raise type(exc)(exc.message + hint, model=exc.model, file=exc.file) from exc
    except BaseException as exc:  # a backend's SystemExit must not end the process (is_ctrl_c)
        if is_ctrl_c(exc):
            raise
        raise ModelLoadError(
            f"{spec} failed to load in backend {backend!r}: {type(exc).__name__}: {exc}", model=name
        ) from exc
    where = f"backend {backend!r} ({hub.model_backends.entry(backend).describe()}.load)"
    try:
        check_loaded(name, loaded, where)
    except ModelLoadError:
        if isinstance(loaded, LoadedModel):
            loaded.close()
        raise
    return loaded, spec


def check_loaded(name: str, model: object, origin: str) -> None:
    """A ``ModelLoadError`` naming ``origin`` (who made ``model``) unless ``model`` is a
    ``LoadedModel`` with its signature set: ``inputs`` and ``outputs`` tuples of ``TensorSpec``, as
    ``parse_signature`` returns (the runtime reads them on every request)."""
    if not isinstance(model, LoadedModel):
        raise ModelLoadError(
            f"{origin} returned {type(model).__module__}.{type(model).__qualname__}, not a "
            "foundation_ml.LoadedModel",
            model=name,
        )
    kind = type(model).__name__
    for side in ("inputs", "outputs"):
        specs = getattr(model, side, None)
        if not isinstance(specs, tuple) or not all(isinstance(s, TensorSpec) for s in specs):
            got = (
                f" has no {side}"
                if specs is None
                else f"'s {side} are {type(specs).__name__} {specs!r}"[:200] + ", not a tuple of TensorSpec"
            )
            raise ModelLoadError(
                f"{origin}: the {kind}{got}: set self.{side} = "
                f'parse_signature({{"x": "FP32[-1, 4]"}}) (say) when the model is made',
                model=name,
            )


def check_as_given(
    name: str,
    model: LoadedModel,
    backend: str | None,
    device: str | None,
    inputs: SignatureLike | None,
    outputs: SignatureLike | None,
    options: dict[str, Any],
) -> None:
    """A ``LoadedModel`` is served as it is, so what ``register_model`` was also told about it
    must agree with it (a ``ModelLoadError`` naming what does not): no backend loads it, so a
    backend, options, another device or another signature would be ignored without a word."""
    check_loaded(name, model, "register_model")
    kind = type(model).__name__
    if backend is not None or options:
        given = [f"backend={backend!r}"] if backend is not None else []
        given += [f"{k}=" for k in options]
        raise ModelLoadError(
            f"{', '.join(given)} given with a {kind}: a LoadedModel is served as it is (no backend "
            "loads it, so backend options mean nothing)",
            model=name,
        )
    if device is not None and device != model.device:
        raise ModelLoadError(
            f"device={device!r} given with a {kind} that runs on {model.device!r}: a LoadedModel is "
            "served where it is (load it on that device instead)",
            model=name,
        )
    for side, given_sig, own in (("inputs", inputs, model.inputs), ("outputs", outputs, model.outputs)):
        if given_sig is None:
            continue
        try:
            wanted = parse_signature(given_sig)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{side}=: {exc}", model=name) from None
        if set(wanted) != set(own):  # the same tensors, in any order
            raise ModelLoadError(
                f"{side}= ({describe(wanted)}) differ from the {kind}'s own {side} ({describe(own)}): "
                "a LoadedModel is served with the signature it carries",
                model=name,
            )


def check_outputs(name: str, model: LoadedModel, spec: str) -> None:
    """Warm up and check that what the model returns matches its declared outputs."""
    batches = (1, 2) if model.batchable else (1,)
    for batch in batches:
        try:
            example = example_inputs(model.inputs, batch) if batch > 1 else model.example_inputs()
        except (ValueError, MemoryError) as exc:  # a declared shape whose example is absurd
            source = model.signature_source
            raise ModelLoadError(
                f"{spec} cannot be warmed up: {exc or type(exc).__name__}"
                + (f" (signature declared in {source})" if source else ""),
                model=name,
                file=source,
            ) from None
        try:
            got = model(example)
        except BaseException as exc:  # a model's SystemExit must not end the process (is_ctrl_c)
            if is_ctrl_c(exc):
                raise
            raise ModelLoadError(
                f"{spec} raised on its example input at warm-up ({_example_described(example)}): "
                f"{type(exc).__name__}: {exc} (a model that cannot take such an input is served "
                "unrun with register_model(..., warmup=False), `foundation serve --no-warmup`)",
                model=name,
            ) from exc
        found = _output_problems(model, got, batch)
        if found:
            where = model.signature_source or spec
            raise ModelLoadError(
                f"{spec} does not match the signature declared in {where}: {'; '.join(found)} "
                f"(declared outputs: {describe(model.outputs)})",
                model=name,
                file=model.signature_source,
            )
    _warm_up(name, model, spec)


def _warm_up(name: str, model: LoadedModel, spec: str) -> None:
    """``model.warmup()``: what it raises is a ``ModelLoadError``, as a failed check is (it came
    out of ``register_model`` as it was: a model's SystemExit ended the process)."""
    try:
        model.warmup()
    except ModelLoadError as exc:  # the model's own account of what failed: not wrapped again
        if exc.model:
            raise
        raise ModelLoadError(exc.message, model=name, file=exc.file) from exc
    except BaseException as exc:
        if is_ctrl_c(exc):
            raise
        raise ModelLoadError(
            f"{spec} raised in its warm-up: {type(exc).__name__}: {exc} (its example input had "
            "passed the signature check; a model that cannot be warmed up is served unrun with "
            "register_model(..., warmup=False), `foundation serve --no-warmup`)",
            model=name,
        ) from exc


def _example_described(example: Any) -> str:
    """What the example held, for a model that failed on it (indices it cannot take, say): each
    input's type, shape and range of values. Never raises: it only adds to another error."""
    parts = []
    try:
        for input_name, array in example.items():
            values = ""
            if isinstance(array, np.ndarray) and array.size and array.dtype.kind in "biuf":
                low, high = array.min(), array.max()
                shown = (f"{low:.3g}", f"{high:.3g}") if array.dtype.kind == "f" else (low, high)
                values = f", values {shown[0]}..{shown[1]}"
            parts.append(f"{input_name}: {_describe_value(array)}{values}")
    except Exception:  # a backend's own example_inputs() may hold anything
        return "the example input"
    return "the example input: " + "; ".join(parts)


def _output_problems(model: LoadedModel, got: dict[str, Any], batch: int) -> list[str]:
    """What is wrong with the answer to an example of ``batch`` rows. An undeclared output would
    reach clients while the metadata lists only the declared ones."""
    if not isinstance(got, Mapping):
        return [f"the model returned {type(got).__name__}, not a mapping of output names to arrays"]
    found = problems(model.outputs, got, side="output")
    if not found and model.batchable:
        for s in model.outputs:
            rows = got[s.name].shape[0] if got[s.name].ndim else "no"
            if rows != batch:
                found.append(f"output {s.name} has {rows} rows for {batch} input rows")
    return found
