"""The model-backend contract (what a framework plugin implements) and a framework-free backend.

A backend turns a *spec* (an object such as a ``torch.nn.Module``, or a string: a factory
``"pkg.module:build"``, a file, a model package) into a :class:`LoadedModel`: a callable from named
numpy arrays to named numpy arrays with a signature (a model that sets ``takes_tensors`` also
takes torch tensors, see ``device_tensors``). The runtime never sees the framework.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._signature import SignatureLike, example_inputs, parse_signature
from ._types import TensorSpec
from .errors import ModelLoadError

__all__ = ["FunctionModel", "LoadedModel", "ModelBackend", "backend_for"]

Arrays = dict[str, np.ndarray]


class LoadedModel(abc.ABC):
    """A model ready to run. ``__call__`` must be thread-safe if the model is served unbatched
    (transports may call it from several threads). Outputs must not alias the inputs."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: ClassVar[str] = ""
    device: str = "cpu"
    version: str = ""  # the version the model carries (a package's), if any
    signature_source: str = ""  # where the signature was declared, named by signature errors
    #: ``__call__`` also takes torch tensors (CPU or CUDA); the runtime copies them to host numpy
    #: arrays for models that do not.
    takes_tensors: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Run on named inputs that match ``inputs``; return every output named in ``outputs``."""

    @property
    def batchable(self) -> bool:
        """True when dimension 0 of every input and output is variable (``-1``): rows are independent.
        A model without inputs is not: its outputs' dimension 0 counts no caller's rows."""
        specs = (*self.inputs, *self.outputs)
        return bool(self.inputs) and all(s.shape and s.shape[0] == -1 for s in specs)

    @property
    def device_tensors(self) -> bool:
        """True when the model runs on a CUDA device and takes CUDA tensors as they are: a runtime
        serving such a model accepts CUDA IPC (device inputs by handle, device outputs back)."""
        return self.takes_tensors and self.device.startswith("cuda")

    def example_inputs(self, batch: int = 1) -> Arrays:
        return example_inputs(self.inputs, batch)

    def warmup(self, rounds: int = 3) -> None:
        """Run the example inputs a few times (first-call allocations, lazy init, JIT)."""
        example = self.example_inputs()
        for _ in range(rounds):
            self(example)

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release what the model holds (device memory); called when it is unloaded."""


class ModelBackend(abc.ABC):
    """A framework plugin's entry point: ``register("torch", "foundation_torch._backend:TorchBackend")``."""

    name: ClassVar[str]

    @classmethod
    def accepts(cls, obj: object) -> bool:
        """Whether ``obj`` (not a string spec) is a model object of this framework."""
        return False

    @abc.abstractmethod
    def load(
        self,
        spec: Any,
        *,
        name: str,
        device: str = "cpu",
        inputs: SignatureLike | None = None,
        outputs: SignatureLike | None = None,
        **options: Any,
    ) -> LoadedModel:
        """Load ``spec`` and place it on ``device``; raise ``ModelLoadError`` naming the file at fault."""

    def package(self, spec: Any, path: str | Path, *, name: str, version: str = "1", **options: Any) -> Path:
        """Write a model package for ``spec`` at ``path`` (a directory, or a ``.zip``)."""
        raise NotImplementedError(
            f"backend {self.name!r} cannot write model packages: its {type(self).__name__} does not "
            "define package() (docs/serving.md, 'Writing a model backend')"
        )


class FunctionModel(LoadedModel):
    """A plain numpy function as a model: ``FunctionModel(fn, inputs={"x": "FP32[-1, 4]"}, outputs=...)``.

    ``fn`` takes the inputs as keyword arguments and returns a dict of outputs (or one array when
    there is a single output). Useful for pre/post-processing models and for tests.
    """

    platform = "python"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        inputs: SignatureLike,
        outputs: SignatureLike,
        batchable: bool | None = None,
    ) -> None:
        if not callable(fn):  # FunctionModel(5, ...) failed only when called, or served to fail
            raise TypeError(f"FunctionModel: fn must be callable, not {type(fn).__name__} {fn!r}")
        if batchable is not None and not isinstance(batchable, bool):  # "no" batched it (truthy)
            raise TypeError(
                "FunctionModel: batchable must be True, False or None (told by the signature), "
                f"not {batchable!r}"
            )
        self.fn = fn
        self.inputs = _side("inputs", inputs)
        self.outputs = _side("outputs", outputs)
        if not self.outputs:  # its answer named nothing; an array was told "with several outputs"
            raise ValueError(
                f"FunctionModel: outputs must declare at least one tensor, not {outputs!r} "
                "(e.g. outputs={'y': 'FP32[-1]'})"
            )
        self._batchable = batchable
        self._single = self.outputs[0].name if len(self.outputs) == 1 else None

    @property
    def batchable(self) -> bool:
        return super().batchable if self._batchable is None else self._batchable

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Arrays:
        result = self.fn(**inputs)
        if isinstance(result, Mapping):
            return dict(result)
        if self._single is None:
            raise TypeError(f"model returned {type(result).__name__}; with several outputs return a dict")
        return {self._single: np.asarray(result)}


def _side(argument: str, sig: Any) -> tuple[TensorSpec, ...]:
    """FunctionModel's ``inputs`` or ``outputs``, parsed; an error names the argument."""
    if isinstance(sig, str | bytes):  # iterated, it was refused one character at a time
        raise TypeError(
            f"FunctionModel: {argument} must map each tensor's name to its spec, as "
            f"{{'x': 'FP32[-1, 4]'}} does (or list the tensors), not the {type(sig).__name__} {sig!r}"
        )
    try:
        return parse_signature(sig)
    except TypeError as exc:
        raise TypeError(f"FunctionModel: {argument}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"FunctionModel: {argument}: {exc}") from None


def backend_for(
    spec: Any,
    backends: Mapping[str, type[ModelBackend] | Any],
    resolve: Callable[[str], Any] | None = None,
) -> str:
    """The backend name for ``spec`` when none was given.

    Strings default to ``torch`` (factories, TorchScript and export files) unless a model
    package's manifest names another backend; objects are offered to each *already imported*
    backend class; an object of a framework is recognised by its class's module. When none
    takes it, ``resolve(name)`` (the hub's ``model_backends.get``) imports each backend still
    lazy (``None`` or its reference in ``backends``) and offers it the object in turn: a
    third-party backend registered lazily, as plugins are told to, is asked too.
    """
    if isinstance(spec, str | Path):
        from ._package import manifest_backend

        return manifest_backend(spec) or "torch"
    modules = {c.__module__.split(".", 1)[0] for c in type(spec).__mro__}
    unimportable: list[str] = []  # and accepts() that raised: said if no other backend takes it
    for name, backend in backends.items():
        if name in modules or _accepts(name, backend, spec, unimportable):
            return name
    for name, backend in backends.items():
        if resolve is None or not (backend is None or isinstance(backend, str)):
            continue
        try:
            backend = resolve(name)
        except Exception as exc:  # a broken backend cannot take it; say so below
            unimportable.append(f"{name!r} could not be imported: {exc}")
            continue
        if _accepts(name, backend, spec, unimportable):
            return name
    raise ModelLoadError(
        f"no backend recognises a {type(spec).__module__}.{type(spec).__qualname__} "
        f"(backends: {', '.join(backends) or 'none'}"
        + "".join(f"; {u}" for u in unimportable)
        + "); pass backend= or wrap it in FunctionModel"
    )


def _accepts(name: str, backend: Any, spec: Any, faults: list[str]) -> bool:
    """Whether ``backend`` (a class, else not asked) says its ``accepts(spec)``; one that raises
    does not (noted in ``faults``): a third-party backend's bug must not fail the objects the
    other backends take, nor go unnamed."""
    if not (isinstance(backend, type) and issubclass(backend, ModelBackend)):
        return False
    try:
        return bool(backend.accepts(spec))
    except Exception as exc:
        faults.append(f"{name!r}.accepts() raised {type(exc).__name__}: {exc}")
        return False
