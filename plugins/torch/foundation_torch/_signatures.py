"""Where a torch model's signature comes from: the arguments, a package, a file, the module.

A side passed as an argument wins; the other comes from the package's manifest, the file's
embedded ``foundation_signature.json`` or the module's ``foundation_signature`` attribute, in
that order. Each error names where the signature was read, and the form it takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from foundation_ml._signature import SignatureLike, parse_signature
from foundation_ml._types import TensorSpec
from foundation_ml.errors import ModelLoadError, PackageError

__all__ = [
    "SIGNATURE_FILE",
    "SIGNATURE_FORM",
    "Signature",
    "check_declared",
    "fill",
    "given_signature",
    "module_signature",
    "parse_side",
    "rest_of_signature",
    "signature_json",
]

SIGNATURE_FILE = "foundation_signature.json"  # the signature a TorchScript or torch.export file embeds

#: The form of a module's ``foundation_signature``, as error messages show it.
SIGNATURE_FORM = '{"inputs": {"x": "FP32[-1, 784]"}, "outputs": {"y": "FP32[-1, 10]"}}'

Signature = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]  # (inputs, outputs)


def signature_json(module: Any, inputs: SignatureLike | None, outputs: SignatureLike | None) -> str:
    """The signature to embed: the arguments, a side not given taken from the module's
    ``foundation_signature``; both sides must end up declared (a file with no outputs cannot be
    served)."""
    own = module_signature(module) if module is not None else ((), ())
    where = f"{type(module).__name__}.foundation_signature" if module is not None else "the arguments"
    doc = {}
    for side, given, declared in (("inputs", inputs, own[0]), ("outputs", outputs, own[1])):
        specs = parse_side(given, f"{side}=") if given is not None else declared
        if given is None and not declared:
            raise ValueError(f"no {side} signature: pass {side}= (neither it nor {where} declares one)")
        doc[side] = [s.as_dict() for s in specs]
    empty = [side for side, specs in doc.items() if not specs]
    if empty:
        raise ValueError(
            f"the {' and '.join(empty)} signature is empty: a model without them cannot be served"
        )
    return json.dumps(doc)


def module_signature(module: Any) -> Signature:
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
    outputs = parse_side(sig.get("outputs"), f"{where}['outputs']")
    if not outputs and sig.get("outputs") is not None:
        raise ValueError(f"{where}['outputs'] declares no tensor: {_ONE_OUTPUT}")
    return parse_side(sig.get("inputs"), f"{where}['inputs']"), outputs


_ONE_OUTPUT = "a model answers at least one output (e.g. {'y': 'FP32[-1, 10]'})"


def given_signature(name: str, inputs: SignatureLike | None, outputs: SignatureLike | None) -> Signature:
    """The ``inputs=`` and ``outputs=`` arguments, parsed; a ``ModelLoadError`` naming the one at fault."""
    try:
        given = parse_side(inputs, "inputs="), parse_side(outputs, "outputs=")
    except ValueError as exc:
        raise ModelLoadError(str(exc), model=name) from None
    if not given[1] and outputs is not None:  # {} was taken for none given: "pass outputs= too"
        raise ModelLoadError(f"outputs={outputs!r} declares no tensor: {_ONE_OUTPUT}", model=name)
    return given


def parse_side(spec: Any, where: str) -> tuple[TensorSpec, ...]:
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


def rest_of_signature(
    name: str, module: Any, given: Signature, file: str = "", factory: str = ""
) -> Signature:
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
    filled = fill(given, own)
    if filled[0] and filled[1]:
        return filled
    kind = type(module).__name__
    if file and not (own[0] or own[1]):  # no class to declare it on: the file must carry it
        raise _not_in_file(name, given, file)
    missing = "inputs" if not filled[0] else "outputs"
    if factory and not (given[0] or given[1]):  # as serve and package take it: no inputs=/outputs=
        raise _not_on_factory_module(name, kind, own, missing, factory)
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


def _not_in_file(name: str, given: Signature, file: str) -> ModelLoadError:
    """A TorchScript or torch.export ``file`` carries no signature, and ``given`` lacks a side."""
    missing = (
        "inputs= and outputs="
        if not (given[0] or given[1])
        else f"{'inputs' if not given[0] else 'outputs'}="
    )
    return ModelLoadError(
        f"{file} carries no signature ({SIGNATURE_FILE}): save it with "
        "foundation_torch.save_torchscript or save_export, which embed one, or pass "
        f"{missing}" + (" to register_model from Python" if not (given[0] or given[1]) else ""),
        model=name,
        file=file,
    )


def _not_on_factory_module(
    name: str, kind: str, own: Signature, missing: str, factory: str
) -> ModelLoadError:
    """The module ``factory`` built declares no ``missing`` side (``own``: what it declares), and
    ``foundation serve --model`` and ``foundation package`` take no arguments to pass it."""
    if own[0] or own[1]:
        what, do = f"no {missing} signature", f"add {missing!r} to {kind}.foundation_signature"
        python = f"{missing}="
    else:
        what, do = (
            "no signature",
            "declare it as its foundation_signature, in the factory or on its class",
        )
        python = "inputs= and outputs="
    return ModelLoadError(
        f"{what} for {kind}, the module the factory {factory} returns: {do} (the form: module."
        f"foundation_signature = {SIGNATURE_FORM}), where `foundation serve --model "
        f"{name}={factory}` and `foundation package` read it (from Python, register_model "
        f"also takes {python})",
        model=name,
    )


def check_declared(name: str, module: Any, declared: tuple[tuple[TensorSpec, ...], ...], where: str) -> None:
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


def fill(given: Signature, found: Signature) -> Signature:
    """The signature passed as arguments, each side missing there taken from ``found``."""
    return (given[0] or found[0], given[1] or found[1])
