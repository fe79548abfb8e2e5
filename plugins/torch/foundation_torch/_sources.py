"""Loading a torch module from what a spec names: a package, a TorchScript or torch.export file, a factory.

Nothing here unpickles: a package's weights are safetensors, a ``.pt2`` is read with every
unpickling path refused, and a package's manifest may only name a model factory (``_safety``).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from foundation_core._registry import resolve_ref
from foundation_ml._package import is_package, open_package
from foundation_ml._signature import parse_signature
from foundation_ml._types import TensorSpec
from foundation_ml.errors import ModelLoadError, PackageError

from ._safety import check_package_factory, no_unpickling, through_module, untrusted_factory
from ._signatures import SIGNATURE_FILE, Signature, check_declared, fill

__all__ = ["BACKEND", "SCRIPT_SUFFIXES", "WEIGHTS", "WRITING", "build", "load_module", "suffix"]

BACKEND = "torch"  # TorchBackend.name: the backend a package's manifest must name to load here
WEIGHTS = "weights.safetensors"
SCRIPT_SUFFIXES = {".pt", ".ts", ".torchscript", ".jit"}
WRITING = "the package being written"  # build's package= from package(): no manifest.json is there yet


def suffix(spec: object) -> str:
    """A path spec's suffix in lower case (``MODEL.PT`` is a TorchScript file, as a package's
    ``.ZIP`` is a zip); "" for a spec that is no path."""
    return Path(spec).suffix.lower() if isinstance(spec, str | Path) else ""


def load_module(
    name: str,
    spec: Any,
    device: str,
    given: Signature,
    factory_kwargs: dict[str, Any] | None,
    trusted: tuple[str, ...] | None = None,
) -> tuple[Any, Signature, str, str]:
    """The module ``spec`` names, the signature declared so far (``given``, a side missing there
    taken from the package or the file), where that was declared ("" if not complete) and the
    package's version ("" if not a package). ``trusted``: the patterns a package's factory must
    match (``_safety.trusted_factories``; None: any model factory)."""
    complete = bool(given[0] and given[1])
    source = "arguments" if complete else ""
    if is_package(spec):
        pkg = open_package(spec)
        manifest = pkg.where("manifest.json")
        if pkg.manifest["backend"] != BACKEND:  # backend="torch" given for another's package
            raise PackageError(
                f"{manifest} names backend {pkg.manifest['backend']!r}, not {BACKEND!r}",
                model=name,
                file="manifest.json",
            )
        ref = str(pkg.manifest["factory"])
        why = untrusted_factory(ref, trusted)
        if why:  # before its module is imported: none of its code runs
            raise PackageError(f"{manifest}: {why}", model=name, file="manifest.json")
        module = build(name, ref, pkg.manifest.get("factory_kwargs") or {}, package=manifest, trusted=trusted)
        _load_weights(name, module, pkg.files.get(WEIGHTS), pkg.where(WEIGHTS))
        check_declared(name, module, (pkg.inputs, pkg.outputs), manifest)
        return module, fill(given, (pkg.inputs, pkg.outputs)), source or manifest, pkg.version
    if suffix(spec) in (*SCRIPT_SUFFIXES, ".pt2"):
        module, file_sig = _load_file(name, Path(spec), device)
        if not complete and file_sig:
            return module, fill(given, file_sig), f"{spec}:{SIGNATURE_FILE}", ""
        return module, given, source, ""
    if isinstance(spec, Path) or (isinstance(spec, str) and ":" not in spec):
        raise ModelLoadError(_not_a_model(spec), model=name)
    if isinstance(spec, str):
        return build(name, spec, factory_kwargs or {}), given, source, ""
    if callable(spec):
        return spec, given, source, ""
    raise ModelLoadError(f"cannot load a {type(spec).__name__} as a torch model", model=name)


def _not_a_model(spec: str | Path) -> str:
    """Why a path (or a word) is none of the specs, as ``foundation serve`` says it: the files are
    told by their suffix, so an existing ``model.pth`` is no model file (it was called not
    existing, and a ``Path`` of any of them "a PosixPath" that cannot be loaded)."""
    path = Path(spec)
    if path.is_dir():
        return f"{str(spec)!r} is a directory without manifest.json, not a model package"
    files = ", ".join(sorted(SCRIPT_SUFFIXES)) + ", .pt2"
    held = (
        f" (the file is there: its suffix {path.suffix or '(none)'!r} is none of those)"
        if path.is_file()
        else ""
    )
    return (
        f"{str(spec)!r} is neither a model file ({files}), a model package nor a factory "
        f"'pkg.module:build'{held}"
    )


def build(
    name: str,
    ref: str,
    kwargs: dict[str, Any],
    *,
    package: str | None = None,
    trusted: tuple[str, ...] | None = None,
) -> Any:
    """Call the factory ``ref`` with ``kwargs``; the model it returns. ``package``: where the
    reference was read (a manifest), which limits it to model factories (see ``_safety``), or
    ``WRITING``: the one a package is being written for, whose manifest is no file at fault (a
    factory it may not name is then the caller's ``ValueError``). Read from a manifest, a factory
    that raises on the manifest's ``factory_kwargs`` is a ``PackageError`` naming them (one that
    cannot be imported is not installed here: a ``ModelLoadError``, as for a factory given
    directly; so is one whose module raises or calls ``sys.exit()`` as it imports). ``trusted``:
    the patterns the manifest's ``ref`` matched (``_safety.trusted_factories``), whose attribute
    path may then not pass through another module (``_safety.through_module``)."""
    at = "" if package == WRITING else "manifest.json"
    try:
        factory = resolve_ref(ref)
    except KeyboardInterrupt:  # the user's Ctrl-C while it imports
        raise
    except BaseException as exc:  # its module failing in any way, sys.exit() too, ends no process
        plain = isinstance(exc, (ImportError, AttributeError, ValueError))  # not there: no traceback
        failure = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        raise ModelLoadError(
            f"factory {ref!r} cannot be imported: {failure}{_not_found_hint(ref, exc)}", model=name
        ) from (None if plain else exc)
    if package is not None:
        why = check_package_factory(ref, factory)
        if not why and trusted is not None:
            why = through_module(ref)
        if why and package == WRITING:  # the caller's reference, refused before it runs: as
            # write_package refuses what open_package would, a ValueError (foundation package: exit 2)
            raise ValueError(f"model {name!r}: {why} (nothing was written)")
        if why:
            raise PackageError(f"{package}: {why}", model=name, file=at)
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"factory_kwargs for {ref!r} must be a mapping, not {kwargs!r}", model=name)
    try:
        module = factory(**kwargs)
    except (Exception, SystemExit) as exc:  # a factory calling sys.exit() does not end the server
        why = f"factory {ref!r} raised {type(exc).__name__}: {exc}"
        if package is not None and package != WRITING:  # with the manifest's kwargs
            raise PackageError(
                f"{package}: {why} (called with its 'factory_kwargs' {_brief_json(kwargs)})",
                model=name,
                file=at,
            ) from exc
        raise ModelLoadError(why, model=name) from exc
    if package is not None and not isinstance(module, torch.nn.Module):
        raise PackageError(
            f"{package}: factory {ref!r} returned {type(module).__name__}, not a torch.nn.Module",
            model=name,
            file=at,
        )
    if not callable(module):
        raise ModelLoadError(
            f"factory {ref!r} returned {type(module).__name__}, which is not a model (not callable)",
            model=name,
        )
    return module


def _brief_json(value: Any) -> str:
    """A manifest's value as an error quotes it: its JSON, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else f"{text[:117]}..."


def _not_found_hint(ref: str, exc: BaseException) -> str:
    """Where to put the factory's module when it is the one not found (not a module it imports):
    the ``foundation`` command's path holds its script's directory, not the current one."""
    module = ref.partition(":")[0]
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not (module == missing or module.startswith(missing + ".")):
        return ""
    top = module.partition(".")[0]
    return (
        f" (the process loading the model imports it: install the package that holds {top!r}, or add the"
        f" directory that holds {top!r} to PYTHONPATH; `foundation` does not import from the"
        " current directory)"
    )


def _load_weights(name: str, module: Any, data: bytes | None, where: str) -> None:
    if data is None:
        raise PackageError(f"{where} is missing", model=name, file=WEIGHTS)
    try:
        state = load_safetensors(data)
    except Exception as exc:
        raise PackageError(
            f"{where} is not a valid safetensors file: {exc}", model=name, file=WEIGHTS
        ) from None
    expected = module.state_dict()
    for key, tensor in state.items():  # load_state_dict would cast silently
        want = expected.get(key)
        if want is not None and want.dtype != tensor.dtype:
            raise PackageError(
                f"{where}: tensor {key!r} is {tensor.dtype}, the factory's module holds {want.dtype}",
                model=name,
                file=WEIGHTS,
            )
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        msg = str(exc).replace("\n", " ").replace("\t", "")
        raise PackageError(
            f"{where} does not fit the factory's module: {msg}", model=name, file=WEIGHTS
        ) from None


def _load_file(
    name: str, path: Path, device: str
) -> tuple[Any, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None]:
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist", model=name, file=str(path))
    _check_archive(name, path)
    extra = {SIGNATURE_FILE: ""}
    try:
        if suffix(path) == ".pt2":
            with no_unpickling():  # torch.export.load unpickles on several paths; refuse them all
                program = torch.export.load(str(path), extra_files=extra)
            module: Any = program.module()
            if torch.device(device).type != "cpu":
                module = module.to(device)
        else:
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)  # type: ignore[no-untyped-call]
    except Exception as exc:
        kind = "torch.export program" if suffix(path) == ".pt2" else "TorchScript file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):  # torch's text suggests weights_only=False: no
            first = "it holds a pickled object other than tensors, and model files are never unpickled"

        raise ModelLoadError(
            f"{path} is not a loadable {kind}: {first}", model=name, file=str(path)
        ) from None
    text = extra.get(SIGNATURE_FILE) or ""
    if not text:
        return module, None
    try:
        doc = json.loads(text)
        return module, (parse_signature(doc["inputs"]), parse_signature(doc["outputs"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{path}:{SIGNATURE_FILE} is invalid: {exc}", model=name, file=str(path)
        ) from None


def _check_archive(name: str, path: Path) -> None:
    """TorchScript and torch.export files are zip archives whose readers do not check the CRCs:
    a damaged file would load and serve other numbers. Every entry is read and checked here."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            declared = sum(i.file_size for i in entries)
            if any(i.compress_type != zipfile.ZIP_STORED for i in entries) and declared > 64 * max(
                path.stat().st_size, 1 << 20
            ):
                raise ModelLoadError(
                    f"{path} declares {declared} bytes uncompressed, implausibly many for its size",
                    model=name,
                    file=str(path),
                )
            bad = archive.testzip()
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        kind = "torch.export program" if suffix(path) == ".pt2" else "TorchScript file"
        raise ModelLoadError(f"{path} is not a loadable {kind}: {exc}", model=name, file=str(path)) from None
    if bad is not None:
        raise ModelLoadError(
            f"{path} is damaged: entry {bad!r} fails its CRC check", model=name, file=str(path)
        )
