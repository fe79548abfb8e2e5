"""Model packages are verified eagerly: every file's sha256, no missing or unlisted file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from foundation_ml import PackageError, TensorSpec, open_package, parse_signature, write_package

SIG = parse_signature({"x": "FP32[-1, 4]"}), parse_signature({"y": "FP32[-1, 2]"})


def make(path: Path, **overrides: Any) -> Path:
    fields: dict[str, Any] = {
        "name": "m",
        "version": "3",
        "backend": "torch",
        "factory": "pkg.mod:build",
        "inputs": SIG[0],
        "outputs": SIG[1],
        "files": {"weights.safetensors": b"weights", "extra/tokenizer.json": b"{}"},
    }
    return write_package(path, **{**fields, **overrides})


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    pkg = open_package(make(tmp_path / f"m{suffix}"))
    assert (pkg.name, pkg.version) == ("m", "3")
    assert pkg.inputs == (TensorSpec.from_dict({"name": "x", "datatype": "FP32", "shape": [-1, 4]}),)
    assert pkg.files["weights.safetensors"] == b"weights"
    assert pkg.manifest["factory"] == "pkg.mod:build"


def test_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    (path / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(PackageError, match=r"m/weights\.safetensors fails its checksum") as info:
        open_package(path)
    assert info.value.file == "weights.safetensors"


def test_checksum_mismatch_in_a_zip_names_the_member(tmp_path: Path) -> None:
    src = make(tmp_path / "m")
    manifest = (src / "manifest.json").read_text()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("manifest.json", manifest)
        zf.writestr("weights.safetensors", b"other")
        zf.writestr("extra/tokenizer.json", b"{}")
    with pytest.raises(PackageError, match=r"bad\.zip:weights\.safetensors fails its checksum"):
        open_package(bad)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    (path / "extra" / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match=r"extra/tokenizer\.json is listed in manifest\.json but missing"):
        open_package(path)


def test_unlisted_file_is_refused(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    (path / "surprise.py").write_text("import os")
    with pytest.raises(PackageError, match=r"surprise\.py is not listed"):
        open_package(path)


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"format": "foundation-model-package/1"}', "lacks name, version"),
    ],
)
def test_bad_manifest_is_named(tmp_path: Path, manifest: str, problem: str) -> None:
    path = make(tmp_path / "m")
    (path / "manifest.json").write_text(manifest)
    with pytest.raises(PackageError, match=rf"manifest\.json.*{problem}|{problem}") as info:
        open_package(path)
    assert info.value.file == "manifest.json"


def test_invalid_signature_in_manifest(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    doc = json.loads((path / "manifest.json").read_text())
    doc["inputs"] = [{"name": "x", "datatype": "FP33", "shape": [1]}]
    (path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(PackageError, match=r"invalid signature.*FP33"):
        open_package(path)


def test_zip_member_escaping_the_package_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../etc/x", b"")
    with pytest.raises(PackageError, match="escapes the package"):
        open_package(bad)


def test_existing_target_is_not_overwritten(tmp_path: Path) -> None:
    make(tmp_path / "m")
    with pytest.raises(FileExistsError):
        make(tmp_path / "m")


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("m" * 64, "1", "the package's model name 'm{64}' must be"),
        ("m", "v" * 16, "the package's version 'v{16}' must be"),
    ],
)
def test_a_name_or_version_no_transport_can_carry_is_not_written(
    tmp_path: Path, name: str, version: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path / "p", name=name, version=version)
    assert not (tmp_path / "p").exists()


def test_a_write_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    files = {"a": b"1", "a/b": b"2"}  # "a" is written as a file, so "a/b" cannot be
    with pytest.raises(OSError):
        make(tmp_path / "p", files=files)
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    pkg = open_package(make(tmp_path / "deep" / "er" / "p.zip"))
    assert pkg.name == "m" and [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["p.zip"]
