"""What a model file or a model package may make this process do: no unpickling, no arbitrary calls.

- :func:`no_unpickling`: ``torch.export.load`` unpickles on several paths of a ``.pt2`` archive
  (sample inputs retried with ``weights_only=False``, ``use_pickle`` weights and constants,
  opaque objects through ``pickle.loads``), so a ``.pt2`` file could run code. Inside this context
  every ``torch.load`` is ``weights_only=True`` and the archive reader's ``pickle.loads`` refuses.
  This closes pickle only: ``torch.export.load`` also ``sympify``s (evaluates) the file's shape
  expressions, and a TorchScript file is a program; such files are trusted (docs/serving.md).
- :func:`check_package_factory`: a package's manifest names its factory, and a manifest is data
  anyone can write (no checksum covers it), so it may only name a model factory: an
  ``nn.Module`` subclass, or a callable annotated to return one (``def build(...) -> MyNet``).
  ``"os:system"`` with ``factory_kwargs`` would otherwise run a shell command. Never one of
  torch's own functions, whatever their annotation: ``torch.fx.graph_module:reduce_graph_module``
  (``-> torch.nn.Module``) executes the source its arguments carry; torch's ``nn.Module`` classes
  (``torch.nn:Linear``) may be named.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import inspect
import os
import pickle
import threading
import typing
from collections.abc import Iterator, Sequence, Set
from typing import Any

import torch

__all__ = [
    "TRUSTED_FACTORIES_ENV",
    "check_package_factory",
    "is_module_factory",
    "no_unpickling",
    "through_module",
    "trusted_factories",
    "untrusted_factory",
]

_lock = threading.Lock()

#: torch's top-level packages: code a manifest may not call (only torch.nn's classes)
_TORCH_PACKAGES = frozenset({"torch", "functorch", "torchgen"})


class _RefusePickle:
    """Stands in for the ``pickle`` module inside torch's pt2 archive reader."""

    @staticmethod
    def loads(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(
            "the archive holds a pickled Python object (an opaque constant); pickles are never loaded"
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)


@contextlib.contextmanager
def no_unpickling() -> Iterator[None]:
    """Run ``torch.export.load`` (or anything reading a model file) without unpickling: every
    ``torch.load`` is forced to ``weights_only=True`` and the pt2 reader's ``pickle.loads``
    raises. Serialised: the patch is process-wide while it lasts (it only ever makes a
    concurrent ``torch.load`` stricter)."""
    try:
        archive: Any = importlib.import_module("torch.export.pt2_archive._package")
    except ImportError:  # another torch layout: torch.load is still forced weights-only
        archive = None
    with _lock:
        real_load = torch.load
        real_pickle = getattr(archive, "pickle", None)

        def weights_only_load(*args: Any, **kwargs: Any) -> Any:
            kwargs["weights_only"] = True
            return real_load(*args, **kwargs)

        torch.load = weights_only_load
        if real_pickle is not None:
            archive.pickle = _RefusePickle()
        try:
            yield
        finally:
            torch.load = real_load
            if real_pickle is not None:
                archive.pickle = real_pickle


def is_module_factory(obj: Any) -> bool:
    """An ``nn.Module`` subclass, or a callable whose return annotation is one."""
    if inspect.isclass(obj):
        return issubclass(obj, torch.nn.Module)
    if not callable(obj):
        return False
    try:
        returned = typing.get_type_hints(obj).get("return")
    except Exception:  # unresolvable annotations, builtins without any
        return False
    return inspect.isclass(returned) and issubclass(returned, torch.nn.Module)


def check_package_factory(ref: str, factory: Any) -> str | None:
    """Why ``factory`` may not be named by a package manifest, or None when it may."""
    if not is_module_factory(factory):
        return (
            f"factory {ref!r} is neither a torch.nn.Module subclass nor a callable annotated to return "
            "one (def build(...) -> MyNet); a package may only name a model factory"
        )
    defined_in = str(getattr(factory, "__module__", None) or "")
    if _in_torch(defined_in) and not (inspect.isclass(factory) and defined_in.startswith("torch.nn.")):
        # torch's functions annotated to return a module are transformations and unpickling
        # helpers, not model factories: reduce_graph_module(body, import_block) runs its arguments
        return (
            f"factory {ref!r} is torch's own {'class' if inspect.isclass(factory) else 'function'} "
            f"({defined_in}), not a model factory (some of torch's functions run code their arguments "
            "carry); a package may name a model's own factory, or a module class of torch.nn "
            "(torch.nn:Linear)"
        )
    return None


TRUSTED_FACTORIES_ENV = "FOUNDATION_TRUSTED_FACTORIES"


def trusted_factories(given: Any) -> tuple[str, ...] | None:
    """The patterns a package's factory must match (``fnmatch``, case-sensitive: ``pkg.models.*``,
    ``pkg.mod:build``): ``given`` (the backend's ``trusted_factories=`` option), else the comma-
    separated ``FOUNDATION_TRUSTED_FACTORIES``, else None (any model factory installed here, as
    ``check_package_factory`` rules). A ``TypeError``/``ValueError`` naming the option or the
    variable for anything but a list of non-empty patterns (a str would be read letter by letter)."""
    if given is None:
        env = os.environ.get(TRUSTED_FACTORIES_ENV)
        if env is None:
            return None
        patterns = tuple(p.strip() for p in env.split(",") if p.strip())
        if not patterns and env.strip():
            raise ValueError(f"{TRUSTED_FACTORIES_ENV}={env!r} names no pattern")
        return patterns
    if isinstance(given, str | bytes) or not isinstance(given, Sequence | Set):
        raise TypeError(
            "trusted_factories must be a list of patterns such as ['mypkg.models.*'], not "
            f"{type(given).__name__} {given!r:.80}"
        )
    bad = [p for p in given if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"trusted_factories holds {bad[0]!r}, not a pattern (a non-empty str)")
    return tuple(given)


def untrusted_factory(ref: str, patterns: tuple[str, ...] | None) -> str | None:
    """Why a package may not name ``ref`` under ``patterns`` (see ``trusted_factories``), or None.
    Told before its module is imported: an untrusted package runs none of its code."""
    if patterns is None or any(fnmatch.fnmatchcase(ref, p) for p in patterns):
        return None
    listed = ", ".join(repr(p) for p in patterns) or "none"
    return (
        f"factory {ref!r} is not a trusted factory here (trusted: {listed}; set by trusted_factories= "
        f"or {TRUSTED_FACTORIES_ENV}): a package names the code that builds its model, and only "
        "factories trusted here may be named"
    )


def through_module(ref: str) -> str | None:
    """Why a package trusted by pattern may not name ``ref`` (its module imported): its attribute
    path passes through another module, or None. ``trusted:*`` matches ``trusted:other.make``,
    which reaches whatever ``trusted`` imports (``other:make``, refused by that name)."""
    module_name, _, attr_path = ref.partition(":")
    obj: Any = importlib.import_module(module_name)  # imported already: resolve_ref did
    parts = attr_path.split(".")
    for at, part in enumerate(parts[:-1], 1):
        obj = getattr(obj, part)
        if inspect.ismodule(obj):
            own = f"{obj.__name__}:{'.'.join(parts[at:])}"
            return (
                f"factory {ref!r} reaches module {obj.__name__!r} through its attribute path: a "
                f"trusted factory is named by its own module ({own!r}), which must be trusted itself"
            )
    return None


def _in_torch(module: str) -> bool:
    top = module.partition(".")[0]
    return top in _TORCH_PACKAGES
