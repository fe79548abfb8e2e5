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
model factory (``_safety``).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from foundation_core._registry import resolve_ref
from foundation_ml._backend import LoadedModel, ModelBackend
from foundation_ml._names import MAX_VERSION_BYTES, check_name
from foundation_ml._package import is_package, open_package, write_package
from foundation_ml._signature import SignatureLike, parse_signature
from foundation_ml._types import TensorSpec
from foundation_ml.errors import ModelLoadError, PackageError

from ._model import TorchModel
from ._safety import check_package_factory, no_unpickling

__all__ = ["TorchBackend", "save_export", "save_torchscript"]

SIGNATURE_FILE = "foundation_signature.json"
WEIGHTS = "weights.safetensors"
_SCRIPT_SUFFIXES = {".pt", ".ts", ".torchscript", ".jit"}


def _suffix(spec: object) -> str:
    """A path spec's suffix in lower case (``MODEL.PT`` is a TorchScript file, as a package's
    ``.ZIP`` is a zip); "" for a spec that is no path."""
    return Path(spec).suffix.lower() if isinstance(spec, str | Path) else ""


#: The most intra-op threads ``threads=`` may ask for.
MAX_THREADS = 1024

_Signature = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]  # (inputs, outputs)


class TorchBackend(ModelBackend):
    """Loads PyTorch models; ``threads`` sets ``torch.set_num_threads`` (process-wide)."""

    name = "torch"

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
        **options: Any,
    ) -> LoadedModel:
        if options:
            raise ModelLoadError(f"unknown torch backend option(s): {', '.join(options)}", model=name)
        _check_threads(name, threads)
        _check_device(name, device)
        given = _given_signature(name, inputs, outputs)
        # a side passed as an argument wins; the other comes from the package, the file or the
        # module's foundation_signature, in that order
        module, declared, source, version = _module(name, spec, device, given, factory_kwargs)
        if not (declared[0] and declared[1]):
            file = str(spec) if _suffix(spec) in (*_SCRIPT_SUFFIXES, ".pt2") else ""
            factory = spec if isinstance(spec, str) and not file else ""
            declared = _rest_of_signature(name, module, given, file, factory)
            source = source or f"{type(module).__name__}.foundation_signature"
        exported = _suffix(spec) == ".pt2"
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
        module = _build(name, spec, factory_kwargs or {}, package=_WRITING)
        sig = _given_signature(name, inputs, outputs)
        if not (sig[0] and sig[1]):  # a side not given comes from the module's foundation_signature
            sig = _rest_of_signature(name, module, sig, factory=spec)
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
    """Script (or trace-free save) ``module`` to ``path`` with its signature embedded."""
    sig = _signature_json(module, inputs, outputs)
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    torch.jit.save(scripted, str(path), _extra_files={SIGNATURE_FILE: sig})
    return Path(path)


def save_export(
    program: torch.export.ExportedProgram, path: str | Path, *, inputs: SignatureLike, outputs: SignatureLike
) -> Path:
    """Save a ``torch.export.ExportedProgram`` to ``path`` (``.pt2``) with its signature embedded."""
    sig = _signature_json(None, inputs, outputs)
    torch.export.save(program, str(path), extra_files={SIGNATURE_FILE: sig})
    return Path(path)


def _signature_json(module: Any, inputs: SignatureLike | None, outputs: SignatureLike | None) -> str:
    """The signature to embed: the arguments, a side not given taken from the module's
    ``foundation_signature``; both sides must end up declared (a file with no outputs cannot be
    served)."""
    own = module_signature(module) if module is not None else ((), ())
    where = f"{type(module).__name__}.foundation_signature" if module is not None else "the arguments"
    doc = {}
    for side, given, declared in (("inputs", inputs, own[0]), ("outputs", outputs, own[1])):
        specs = _parse_side(given, f"{side}=") if given is not None else declared
        if given is None and not declared:
            raise ValueError(f"no {side} signature: pass {side}= (neither it nor {where} declares one)")
        doc[side] = [s.as_dict() for s in specs]
    empty = [side for side, specs in doc.items() if not specs]
    if empty:
        raise ValueError(
            f"the {' and '.join(empty)} signature is empty: a model without them cannot be served"
        )
    return json.dumps(doc)


#: The form of a module's ``foundation_signature``, as error messages show it.
SIGNATURE_FORM = '{"inputs": {"x": "FP32[-1, 784]"}, "outputs": {"y": "FP32[-1, 10]"}}'


def module_signature(module: Any) -> _Signature:
    """The signature ``module``'s ``foundation_signature`` attribute declares, a side it leaves
    out empty (none at all: both). A ``ValueError`` naming the attribute, and the form it takes,
    for anything but a dict of ``inputs`` and ``outputs`` signatures."""
    sig = getattr(module, "foundation_signature", None)
    if sig is None:
        return (), ()
    where = f"{type(module).__name__}.foundation_signature"
    if not isinstance(sig, Mapping):
        raise ValueError(f"{where} must be a dict such as {SIGNATURE_FORM}, not a {type(sig).__name__}")
    unknown = [repr(key) for key in sig if key not in ("inputs", "outputs")]
    if unknown:
        raise ValueError(
            f"{where} has the key(s) {', '.join(unknown)}: it takes 'inputs' and 'outputs', "
            f"each a signature, as in {SIGNATURE_FORM}"
        )
    return _parse_side(sig.get("inputs"), f"{where}['inputs']"), _parse_side(
        sig.get("outputs"), f"{where}['outputs']"
    )


def _given_signature(name: str, inputs: SignatureLike | None, outputs: SignatureLike | None) -> _Signature:
    """The ``inputs=`` and ``outputs=`` arguments, parsed; a ``ModelLoadError`` naming the one at fault."""
    try:
        return _parse_side(inputs, "inputs="), _parse_side(outputs, "outputs=")
    except ValueError as exc:
        raise ModelLoadError(str(exc), model=name) from None


def _parse_side(spec: Any, where: str) -> tuple[TensorSpec, ...]:
    """One side of a signature, read where ``where`` says it was declared (named on error)."""
    if isinstance(spec, str | bytes):  # iterated, a string would be refused one character at a time
        raise ValueError(
            f"{where} must map each tensor's name to its spec, as {{'x': 'FP32[-1, 784]'}} does "
            f"(or list the tensors), not be the {type(spec).__name__} {spec!r}"
        )
    try:
        return parse_signature(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _module(
    name: str, spec: Any, device: str, given: _Signature, factory_kwargs: dict[str, Any] | None
) -> tuple[Any, _Signature, str, str]:
    """The module ``spec`` names, the signature declared so far (``given``, a side missing there
    taken from the package or the file), where that was declared ("" if not complete) and the
    package's version ("" if not a package)."""
    complete = bool(given[0] and given[1])
    source = "arguments" if complete else ""
    if is_package(spec):
        pkg = open_package(spec)
        manifest = pkg.where("manifest.json")
        if pkg.manifest["backend"] != TorchBackend.name:  # backend="torch" given for another's package
            raise PackageError(
                f"{manifest} names backend {pkg.manifest['backend']!r}, not {TorchBackend.name!r}",
                model=name,
                file="manifest.json",
            )
        module = _build(
            name, str(pkg.manifest["factory"]), pkg.manifest.get("factory_kwargs") or {}, package=manifest
        )
        _load_weights(name, module, pkg.files.get(WEIGHTS), pkg.where(WEIGHTS))
        _check_declared(name, module, (pkg.inputs, pkg.outputs), manifest)
        return module, _fill(given, (pkg.inputs, pkg.outputs)), source or manifest, pkg.version
    if _suffix(spec) in (*_SCRIPT_SUFFIXES, ".pt2"):
        module, file_sig = _load_file(name, Path(spec), device)
        if not complete and file_sig:
            return module, _fill(given, file_sig), f"{spec}:{SIGNATURE_FILE}", ""
        return module, given, source, ""
    if isinstance(spec, str):
        if ":" not in spec:
            raise ModelLoadError(
                f"{spec!r} is neither an existing model file or package nor a factory 'pkg.module:build'",
                model=name,
            )
        return _build(name, spec, factory_kwargs or {}), given, source, ""
    if callable(spec):
        return spec, given, source, ""
    raise ModelLoadError(f"cannot load a {type(spec).__name__} as a torch model", model=name)


def _rest_of_signature(
    name: str, module: Any, given: _Signature, file: str = "", factory: str = ""
) -> _Signature:
    """``given``, each side it lacks taken from the module's ``foundation_signature``; refused,
    naming the side to pass and the attribute's form, when neither declares a side. ``file``: the
    TorchScript or torch.export file the module was loaded from, which carried no signature.
    ``factory``: the ``pkg.module:build`` the module was built from, the spec ``foundation serve
    --model`` and ``foundation package`` pass, which take no ``inputs=``/``outputs=``: the error
    then points to the module's attribute first, and to the arguments as Python's way only."""
    try:
        own = module_signature(module)
    except ValueError as exc:
        raise ModelLoadError(str(exc), model=name) from None
    filled = _fill(given, own)
    if filled[0] and filled[1]:
        return filled
    kind = type(module).__name__
    if file and not (own[0] or own[1]):  # no class to declare it on: the file must carry it
        missing = (
            "inputs= and outputs="
            if not (given[0] or given[1])
            else f"{'inputs' if not given[0] else 'outputs'}="
        )
        raise ModelLoadError(
            f"{file} carries no signature ({SIGNATURE_FILE}): save it with "
            "foundation_torch.save_torchscript or save_export, which embed one, or pass "
            f"{missing}" + (" to register_model from Python" if not (given[0] or given[1]) else ""),
            model=name,
            file=file,
        )
    missing = "inputs" if not filled[0] else "outputs"
    if factory and not (given[0] or given[1]):  # as serve and package take it: no inputs=/outputs=
        if own[0] or own[1]:
            what, do = f"no {missing} signature", f"add {missing!r} to {kind}.foundation_signature"
            python = f"{missing}="
        else:
            what, do = (
                "no signature",
                "declare it as its foundation_signature, in the factory or on its class",
            )
            python = "inputs= and outputs="
        raise ModelLoadError(
            f"{what} for {kind}, the module the factory {factory} returns: {do} (the form: module."
            f"foundation_signature = {SIGNATURE_FORM}), where `foundation serve --model "
            f"{name}={factory}` and `foundation package` read it (from Python, register_model "
            f"also takes {python})",
            model=name,
        )
    if not (given[0] or given[1] or own[0] or own[1]):
        raise ModelLoadError(
            f"no signature for {kind}: pass inputs= and outputs= "
            f'(e.g. inputs={{"x": "FP32[-1, 784]"}}), or declare it on the class: '
            f"foundation_signature = {SIGNATURE_FORM}",
            model=name,
        )
    if not (own[0] or own[1]):
        raise ModelLoadError(
            f"{kind} declares no foundation_signature to take the rest of the signature from: "
            f"pass {missing}= too",
            model=name,
        )
    raise ModelLoadError(
        f"no {missing} signature for {kind}: pass {missing}= or add {missing!r} to "
        f"{kind}.foundation_signature (the form: {SIGNATURE_FORM})",
        model=name,
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


_WRITING = "the package being written"  # _build's package= from package(): no manifest.json is there yet


def _build(name: str, ref: str, kwargs: dict[str, Any], *, package: str | None = None) -> Any:
    """Call the factory ``ref`` with ``kwargs``; the model it returns. ``package``: where the
    reference was read (a manifest), which limits it to model factories (see ``_safety``), or
    ``_WRITING``: the one a package is being written for, whose manifest is no file at fault (a
    factory it may not name is then the caller's ``ValueError``). Read from a manifest, a factory
    that raises on the manifest's ``factory_kwargs`` is a ``PackageError`` naming them (one that
    cannot be imported is not installed here: a ``ModelLoadError``, as for a factory given
    directly)."""
    at = "" if package == _WRITING else "manifest.json"
    try:
        factory = resolve_ref(ref)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelLoadError(
            f"factory {ref!r} cannot be imported: {exc}{_not_found_hint(ref, exc)}", model=name
        ) from None
    if package is not None:
        why = check_package_factory(ref, factory)
        if why and package == _WRITING:  # the caller's reference, refused before it runs: as
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
        if package is not None and package != _WRITING:  # with the manifest's kwargs
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


def _check_declared(name: str, module: Any, declared: tuple[tuple[TensorSpec, ...], ...], where: str) -> None:
    """A package's signature against the sides its factory's module declares."""
    try:
        own = module_signature(module)
    except ValueError as exc:
        raise PackageError(f"{where}: {exc}", model=name, file="manifest.json") from None
    if all(not mine or mine == theirs for mine, theirs in zip(own, declared, strict=True)):
        return

    def text(s: tuple[tuple[TensorSpec, ...], ...]) -> str:
        return f"({', '.join(x.describe() for x in s[0])}) -> ({', '.join(x.describe() for x in s[1])})"

    raise PackageError(
        f"{where} declares {text(declared)} but the factory's module declares {text(own)}",
        model=name,
        file="manifest.json",
    )


def _load_file(
    name: str, path: Path, device: str
) -> tuple[Any, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None]:
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist", model=name, file=str(path))
    _check_archive(name, path)
    extra = {SIGNATURE_FILE: ""}
    try:
        if _suffix(path) == ".pt2":
            with no_unpickling():  # torch.export.load unpickles on several paths; refuse them all
                program = torch.export.load(str(path), extra_files=extra)
            module: Any = program.module()
            if torch.device(device).type != "cpu":
                module = module.to(device)
        else:
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)  # type: ignore[no-untyped-call]
    except Exception as exc:
        kind = "torch.export program" if _suffix(path) == ".pt2" else "TorchScript file"
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
        kind = "torch.export program" if _suffix(path) == ".pt2" else "TorchScript file"
        raise ModelLoadError(f"{path} is not a loadable {kind}: {exc}", model=name, file=str(path)) from None
    if bad is not None:
        raise ModelLoadError(
            f"{path} is damaged: entry {bad!r} fails its CRC check", model=name, file=str(path)
        )


def _fill(
    given: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
    found: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The signature passed as arguments, each side missing there taken from ``found``."""
    return (given[0] or found[0], given[1] or found[1])
