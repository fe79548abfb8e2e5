"""Model packages, as properties: a package written from a module loads and answers as the module
does; a package whose manifest or files were changed in any way is refused with a PackageError
naming the file at fault (and, for the manifest, the field), never another exception, and
nothing of it is served.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from foundation_torch import TorchBackend
from foundation_torch import plugin as torch_plugin
from foundation_torch.demo import build_demo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import foundation_core
from foundation_core import Hub
from foundation_ml import MLRuntime, ModelLoadError, PackageError, open_package
from foundation_ml import _plugin as ml_plugin

DEMO = "foundation_torch.demo:build_demo"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
HIDDEN = 4  # a small demo MLP (784-4-10): writing and loading it is quick


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with foundation_core.start(plugins=[ml_plugin, torch_plugin], entry_points=False) as h:
        yield h


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One valid package of each form, written once: the examples change copies of them."""
    root = tmp_path_factory.mktemp("written")
    kwargs = {"seed": 1, "hidden": HIDDEN}
    return {
        form: TorchBackend().package(
            DEMO, root / f"demo{form}", name="demo", version="3", factory_kwargs=kwargs
        )
        for form in ("", ".zip")
    }


def _read(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path: Path, files: dict[str, bytes], zipped: bool) -> Path:
    if zipped:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for n, b in files.items():
                zf.writestr(n, b)
    else:
        path.mkdir()
        for n, b in files.items():
            (path / n).write_bytes(b)
    return path


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, 784)).astype(np.float32)


def _served(runtime: MLRuntime, name: str, x: np.ndarray) -> np.ndarray:
    return runtime.registry.get(name).model({"x": x})["y"]


# --- round trip ------------------------------------------------------------------------------

versions = st.text(st.characters(codec="ascii", categories=("L", "N", "P")), min_size=1, max_size=15)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), hidden=st.integers(1, 8), zipped=st.booleans(), version=versions)
def test_a_written_package_loads_and_answers_as_its_module(
    hub: Hub, tmp_path_factory: pytest.TempPathFactory, seed: int, hidden: int, zipped: bool, version: str
) -> None:
    path = tmp_path_factory.mktemp("rt") / ("pkg.zip" if zipped else "pkg")
    kwargs = {"seed": seed, "hidden": hidden}
    TorchBackend().package(DEMO, path, name="demo", version=version, factory_kwargs=kwargs)
    pkg = open_package(path)
    assert (pkg.name, pkg.version, pkg.manifest["factory_kwargs"]) == ("demo", version, kwargs)
    with MLRuntime(hub) as rt:
        meta = rt.register_model("m", str(path))
        assert meta.versions == (version,)
        x = _x(seed)
        with torch.inference_mode():
            want = build_demo(**kwargs)(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(_served(rt, "m", x), want)


# --- manifest mutations ----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    # small, or too large for anything: never a size a factory could allocate (hidden=10**8)
    | st.integers(-1000, 1000)
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 10**4000])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(
        [
            "",
            "FP32",
            "x",
            "torch",
            DEMO,
            "os:system",
            "torch.nn:Linear",
            "nosuch.module:build",
            "a" * 100,
            "\u202e",
            "é",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document: the key or index path to each value."""
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _mutate(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one place deleted, replaced by a random value, or given an extra key."""
    at = draw(st.sampled_from(list(_paths(doc))))
    op = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
    if not at:
        return draw(json_values) if op == "replace" else doc
    parent = doc
    for step in at[:-1]:
        parent = parent[step]
    last = at[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = draw(json_values)
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(max_size=8))] = draw(json_values)
    elif isinstance(parent[last], list):
        parent[last].append(draw(json_values))
    else:
        parent[last] = draw(json_values)
    return doc


@st.composite
def manifest_texts(draw: st.DrawFn, original: bytes) -> bytes:
    """A changed manifest: a JSON document changed in one to three places, or bytes that are no
    valid manifest JSON (truncated, a byte changed, NaN, a key twice, nested far too deep)."""
    how = draw(st.sampled_from(["json", "json", "json", "bytes"]))
    if how == "json":
        doc = json.loads(original)
        for _ in range(draw(st.integers(1, 3))):
            doc = _mutate(draw, doc)
        return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "nan", "twice", "deep", "latin1", "empty"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        i = draw(st.integers(0, len(original) - 1))
        return original[:i] + bytes([original[i] ^ draw(st.integers(1, 255))]) + original[i + 1 :]
    if kind == "insert":
        i = draw(st.integers(0, len(original)))
        return original[:i] + draw(st.binary(min_size=1, max_size=4)) + original[i:]
    if kind == "nan":
        return original.replace(b'"version": "3"', b'"version": NaN')
    if kind == "twice":
        return original.replace(b'"version": "3"', b'"version": "3", "version": "4"')
    if kind == "deep":
        depth = draw(st.sampled_from([100, 10_000, 200_000]))
        return original.replace(b'"version": "3"', b'"version": "3", "x": ' + b"[" * depth + b"]" * depth)
    if kind == "latin1":
        return original.replace(b'"name": "demo"', '"name": "démo"'.encode("latin-1"))
    return b""


def _check_refused(hub: Hub, path: Path, *at_fault: str) -> ModelLoadError | None:
    """Load ``path`` both ways (open_package, then the runtime): either it loads, or the runtime
    refuses it with a PackageError naming a file ``at_fault``, and nothing is served. (Or with a
    ModelLoadError saying the factory named cannot be imported: not installed here, as for a
    factory given directly; docs/serving.md, "Model packages".)"""
    opened: PackageError | None = None
    refused: ModelLoadError | None = None
    try:
        open_package(path)
    except PackageError as exc:
        opened = exc
    with MLRuntime(hub) as rt:
        try:
            rt.register_model("m", str(path))
        except ModelLoadError as exc:  # any other exception fails the test as it is
            refused = exc
        served = rt.registry.names()
    if refused is None:
        assert opened is None, f"open_package refused what the runtime served: {opened}"
        assert served == ["m"]
        return None
    assert served == [], "a refused package was served"
    if not isinstance(refused, PackageError):
        assert "cannot be imported" in refused.message, f"{type(refused).__name__}: {refused}"
        return refused
    assert refused.file in at_fault, f"the error names {refused.file!r}, not {at_fault}: {refused}"
    assert refused.file in str(refused), refused
    return refused


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), zipped=st.booleans())
def test_a_changed_manifest_is_refused_naming_it_or_loads(
    hub: Hub,
    written: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    zipped: bool,
) -> None:
    original = written[".zip" if zipped else ""]
    files = _read(original)
    files[MANIFEST] = data.draw(manifest_texts(files[MANIFEST]), label="manifest.json")
    path = _write(tmp_path_factory.mktemp("m") / ("pkg.zip" if zipped else "pkg"), files, zipped)
    # the weights at fault too: the manifest's factory_kwargs build a module they do not fit
    _check_refused(hub, path, MANIFEST, WEIGHTS)
    shutil.rmtree(path.parent)


@st.composite
def weights(draw: st.DrawFn, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "append", "header", "random"]))
    if kind == "flip":
        i = draw(st.integers(0, len(original) - 1))
        return original[:i] + bytes([original[i] ^ draw(st.integers(1, 255))]) + original[i + 1 :]
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "append":
        return original + draw(st.binary(min_size=1, max_size=16))
    if kind == "header":  # the first bytes: the length of the JSON header, then the header
        i = draw(st.integers(0, min(len(original) - 1, 200)))
        return original[:i] + bytes([original[i] ^ draw(st.integers(1, 255))]) + original[i + 1 :]
    return draw(st.binary(max_size=64))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), zipped=st.booleans(), rehash=st.booleans())
def test_changed_weights_are_refused_naming_them(
    hub: Hub,
    written: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    zipped: bool,
    rehash: bool,
) -> None:
    """Changed weights fail their checksum; with the manifest's sha256 changed to match (no
    checksum covers the manifest), they are still refused, naming the weights."""
    original = written[".zip" if zipped else ""]
    files = _read(original)
    files[WEIGHTS] = data.draw(weights(files[WEIGHTS]), label="weights")
    if rehash:
        doc = json.loads(files[MANIFEST])
        doc["files"][WEIGHTS] = hashlib.sha256(files[WEIGHTS]).hexdigest()
        files[MANIFEST] = json.dumps(doc).encode()
    path = _write(tmp_path_factory.mktemp("w") / ("pkg.zip" if zipped else "pkg"), files, zipped)
    err = _check_refused(hub, path, WEIGHTS)
    assert err is not None or rehash  # a changed file never passes its checksum
    shutil.rmtree(path.parent)
