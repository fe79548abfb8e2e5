"""The ``torch`` model backend: load a module from a factory, TorchScript, torch.export or a package.

Specs, by form:

- a ``torch.nn.Module`` (or any callable taking tensors) object;
- ``"pkg.module:build"``: a factory called with ``factory_kwargs``, returning a module;
- a TorchScript file (``.pt``, ``.ts``, ``.torchscript``, ``.jit``; made by ``torch.jit.save``);
- a ``torch.export`` program (``.pt2``; made by ``torch.export.save``);
- a model package (directory or ``.zip``): factory from ``manifest.json``, weights from
  ``weights.safetensors``, every file's sha256 checked first.

The signature comes from, in order: the ``inputs=``/``outputs=`` arguments, the package manifest,
the file's ``foundation_signature.json`` extra file (see :func:`save_torchscript`), or the module's
``foundation_signature`` attribute. Nothing here unpickles: weights travel as safetensors, a
``.pt2`` is read with every unpickling path refused, and a package's manifest may only name a
model factory (``_safety``). Loading each form is ``_sources``'s; the signature's rules ``_signatures``'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from foundation_ml._backend import LoadedModel, ModelBackend
from foundation_ml._names import MAX_VERSION_BYTES, check_name
from foundation_ml._package import write_package
from foundation_ml._signature import SignatureLike
from foundation_ml.errors import ModelLoadError

from ._model import TorchModel
from ._safety import trusted_factories
from ._signatures import SIGNATURE_FILE, given_signature, rest_of_signature, signature_json
from ._sources import BACKEND, SCRIPT_SUFFIXES, WEIGHTS, WRITING, build, load_module, suffix

__all__ = ["TorchBackend", "save_export", "save_torchscript"]

#: The most intra-op threads ``threads=`` may ask for.
MAX_THREADS = 1024


class TorchBackend(ModelBackend):
    """Loads PyTorch models; ``threads`` sets ``torch.set_num_threads`` (process-wide)."""

    name = BACKEND

    @classmethod
    def accepts(cls, obj: object) -> bool:
        return isinstance(obj, torch.nn.Module)

    def load(
        self,
        spec: Any,
        *,
        name: str,
        device: str = "cpu",
        inputs: SignatureLike | None = None,
        outputs: SignatureLike | None = None,
        threads: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        batchable: bool | None = None,
        trusted_factories: Sequence[str] | None = None,
        **options: Any,
    ) -> LoadedModel:
        if options:
            raise ModelLoadError(f"unknown torch backend option(s): {', '.join(options)}", model=name)
        _check_threads(name, threads)
        _check_batchable(name, batchable)
        _check_device(name, device)
        given = given_signature(name, inputs, outputs)
        # a side passed as an argument wins; the other comes from the package, the file or the
        # module's foundation_signature, in that order
        trusted = trusted_factories_of(name, trusted_factories)
        module, declared, source, version = load_module(name, spec, device, given, factory_kwargs, trusted)
        if not (declared[0] and declared[1]):
            file = str(spec) if suffix(spec) in (*SCRIPT_SUFFIXES, ".pt2") else ""
            factory = spec if isinstance(spec, str) and not file else ""
            declared = rest_of_signature(name, module, given, file, factory)
            source = source or f"{type(module).__name__}.foundation_signature"
        exported = suffix(spec) == ".pt2"
        if isinstance(module, torch.nn.Module) and not exported:  # export modules refuse .eval()
            module = module.to(device).eval()
        if threads:  # process-wide: only once the model has loaded
            torch.set_num_threads(threads)
        return TorchModel(
            module,
            *declared,
            device=device,
            batchable=batchable,
            signature_source=source,
            version=version,
            threads=threads or None,
        )

    def package(
        self,
        spec: Any,
        path: str | Path,
        *,
        name: str,
        version: str = "1",
        inputs: SignatureLike | None = None,
        outputs: SignatureLike | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Path:
        """Write a package: the factory's module's weights as safetensors plus the manifest. A
        ``spec`` a manifest may not name (no model factory) is a ``ValueError`` before it runs,
        a factory that returns no module a ``PackageError``; either way nothing is written."""
        check_name(name, "the package's model name")  # before the factory builds anything
        check_name(version, "the package's version", MAX_VERSION_BYTES)
        if not isinstance(spec, str) or ":" not in spec:
            raise ModelLoadError(f"a package needs a factory reference 'pkg.module:build', got {spec!r}")
        module = build(name, spec, factory_kwargs or {}, package=WRITING)
        sig = given_signature(name, inputs, outputs)
        if not (sig[0] and sig[1]):  # a side not given comes from the module's foundation_signature
            sig = rest_of_signature(name, module, sig, factory=spec)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        return write_package(
            path,
            name=name,
            version=version,
            backend=self.name,
            factory=spec,
            inputs=sig[0],
            outputs=sig[1],
            files={WEIGHTS: save_safetensors(state)},
            extra={"factory_kwargs": factory_kwargs or {}, "framework": f"torch {torch.__version__}"},
        )


def save_torchscript(
    module: torch.nn.Module,
    path: str | Path,
    *,
    inputs: SignatureLike | None = None,
    outputs: SignatureLike | None = None,
) -> Path:
    """Script (or trace-free save) ``module`` to ``path`` with its signature embedded. ``path``
    ends in a suffix the backend reads as TorchScript (``.pt``, ``.ts``, ``.torchscript``, ``.jit``)."""
    _check_suffix(path, SCRIPT_SUFFIXES, "save_torchscript")
    sig = signature_json(module, inputs, outputs)
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    torch.jit.save(scripted, str(path), _extra_files={SIGNATURE_FILE: sig})
    return Path(path)


def save_export(
    program: torch.export.ExportedProgram, path: str | Path, *, inputs: SignatureLike, outputs: SignatureLike
) -> Path:
    """Save a ``torch.export.ExportedProgram`` to ``path`` (``.pt2``) with its signature embedded."""
    _check_suffix(path, {".pt2"}, "save_export")
    sig = signature_json(None, inputs, outputs)
    torch.export.save(program, str(path), extra_files={SIGNATURE_FILE: sig})
    return Path(path)


def _check_suffix(path: str | Path, suffixes: set[str], writer: str) -> None:
    """A file the backend would not load (it tells files by their suffix: ``model.pth`` is none of
    its files) is refused before anything is written."""
    if suffix(path) not in suffixes:
        raise ValueError(
            f"{writer}: {str(path)!r} must end in {', '.join(sorted(suffixes))} (any case), the suffix "
            "by which register_model and foundation serve load it; nothing was written"
        )


def _check_threads(name: str, threads: Any) -> None:
    """``threads``: None or 0 (torch's default), else 1 to ``MAX_THREADS``; torch takes any
    positive count, and a process asked for a million threads crashes at its first matmul."""
    if threads is None or (type(threads) is int and 0 <= threads <= MAX_THREADS):
        return
    raise ModelLoadError(
        f"threads must be an integer from 1 to {MAX_THREADS} (0 or None: torch's default), not {threads!r}",
        model=name,
    )


def trusted_factories_of(name: str, given: Any) -> tuple[str, ...] | None:
    """The ``trusted_factories`` option (else ``FOUNDATION_TRUSTED_FACTORIES``), or a
    ``ModelLoadError`` naming what is wrong with it."""
    try:
        return trusted_factories(given)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(str(exc), model=name) from None


def _check_batchable(name: str, batchable: Any) -> None:
    """``batchable``: True, False or None (told by the signature); ``"no"`` (truthy) batched the
    model, stacking its rows with other callers'."""
    if batchable is not None and not isinstance(batchable, bool):
        raise ModelLoadError(
            f"batchable must be True, False or None (told by the signature), not {batchable!r}", model=name
        )


def _check_device(name: str, device: str) -> None:
    if not isinstance(device, str):
        raise ModelLoadError(f"device must be a string such as 'cpu' or 'cuda:0', not {device!r}", model=name)
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"invalid device {device!r}: {exc}", model=name) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available", model=name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)", model=name
            )
    elif dev.type != "cpu":
        raise ModelLoadError(f"device {device!r}: use 'cpu' or 'cuda:N'", model=name)
