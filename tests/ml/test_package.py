"""Model packages are verified eagerly: every file's sha256, no missing or unlisted file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import struct
import warnings
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


def test_a_zip_entry_named_with_backslashes_is_refused_though_listed(tmp_path: Path) -> None:
    """'..\\evil' is one name to zipfile on POSIX, so a manifest listing it loaded; a tool on
    Windows reads it as a path out of the package (zip slip), and write_package wrote such names."""
    listed = {"weights.safetensors": b"w", "..\\evil": b"x"}
    files = {n: hashlib.sha256(b).hexdigest() for n, b in listed.items()}
    bad = zipped(tmp_path / "p.zip", ("manifest.json", manifest_text(files=files)), *listed.items())
    with pytest.raises(PackageError, match=r"'files' names '\.\.\\\\evil', with a backslash") as info:
        open_package(bad)
    assert info.value.file == "manifest.json"
    with pytest.raises(ValueError, match="with a backslash"):
        write_package(
            tmp_path / "q",
            name="m",
            version="1",
            backend="torch",
            factory="m:build",
            inputs=parse_signature({"x": "FP32[-1, 4]"}),
            outputs=parse_signature({"y": "FP32[-1, 2]"}),
            files={"a\\b": b"x"},
        )
    assert not (tmp_path / "q").exists()


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


def test_a_write_that_fails_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_bytes

    def full_disk(self: Path, data: Any) -> int:
        if self.name == "tokenizer.json":  # the manifest and the weights are written by then
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        make(tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_a_file_named_as_another_files_directory_is_refused_unwritten(tmp_path: Path, suffix: str) -> None:
    """A directory cannot hold both "a" and "a/b" (the write failed half-way with a bare
    FileExistsError naming the temporary directory; a zip was written, one no directory can hold)."""
    with pytest.raises(ValueError, match=r"'files' names both 'a' and 'a/b/c': a file cannot be a directory"):
        make(tmp_path / f"p{suffix}", files={"a/b/c": b"2", "a": b"1"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["files", "format", "name", "inputs"])
def test_extra_cannot_replace_what_write_package_writes(tmp_path: Path, key: str) -> None:
    """``extra={"files": {}}`` wrote a manifest not listing the files written: unreadable."""
    with pytest.raises(ValueError, match=rf"extra may not set {key}: write_package writes them"):
        make(tmp_path / "p.zip", extra={key: {}, "framework": "x"})
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_symlink_at_the_target_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "p.zip").symlink_to(tmp_path / "elsewhere.zip")
    with pytest.raises(FileExistsError, match=r"p\.zip already exists"):
        make(tmp_path / "p.zip")
    assert (tmp_path / "p.zip").is_symlink() and not (tmp_path / "elsewhere.zip").exists()


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    pkg = open_package(make(tmp_path / "deep" / "er" / "p.zip"))
    assert pkg.name == "m" and [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["p.zip"]


# --- what a package holds is checked from the manifest and the zip's directory before any data ----


def manifest_text(**overrides: Any) -> str:
    """The manifest of a package holding ``weights.safetensors`` = ``b"weights"``."""
    doc: dict[str, Any] = {
        "format": "foundation-model-package/1",
        "name": "m",
        "version": "3",
        "backend": "torch",
        "factory": "pkg.mod:build",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
        "files": {"weights.safetensors": hashlib.sha256(b"weights").hexdigest()},
        **overrides,
    }
    return json.dumps(doc)


def zipped(path: Path, *entries: tuple[str, str | bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", method) as zf:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        for name, data in entries:
            zf.writestr(name, data)
    return path


def patched(path: Path, local: int, central: int, value: bytes, entry: int = 0) -> Path:
    """``path`` with ``value`` written at offset ``local`` of entry ``entry``'s local header and
    ``central`` of its central directory header (flags 6/8, method 8/10, size 22/24)."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = -1
        for _ in range(entry + 1):
            at = data.index(signature, at + 1)
        data[at + offset : at + offset + len(value)] = value
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the zip entries whose data is read (``ZipFile.open``), in order."""
    names: list[str] = []
    real = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "r":
            names.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return names


def test_an_unlisted_entry_is_refused_before_any_of_its_data_is_read(
    tmp_path: Path, opened: list[str]
) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", manifest_text())
        zf.writestr("weights.safetensors", b"weights")
        with zf.open("zeros.bin", "w") as f:  # 32 MiB that deflate to 32 KiB (within MAX_ZIP_RATIO)
            for _ in range(32):
                f.write(bytes(1 << 20))
    with pytest.raises(PackageError, match=r"bomb\.zip:zeros\.bin is not listed in manifest\.json"):
        open_package(bomb)
    assert opened == ["manifest.json"]


def test_a_manifest_that_is_not_one_is_refused_before_anything_else_is_read(
    tmp_path: Path, opened: list[str]
) -> None:
    bomb = zipped(tmp_path / "bomb.zip", ("manifest.json", "{}"), ("zeros.bin", bytes(1 << 20)))
    with pytest.raises(PackageError, match=r"bomb\.zip:manifest\.json lacks format, name"):
        open_package(bomb)
    assert opened == ["manifest.json"]


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("MAX_FILE_BYTES", r"p\.zip:weights\.safetensors is 7 bytes, more than a package file may be \(6\)"),
        ("MAX_PACKAGE_BYTES", r"p\.zip holds \d+ bytes, more than a package may \(6\)"),
        ("MAX_MANIFEST_BYTES", r"p\.zip:manifest\.json is \d+ bytes, more than a manifest may be \(6\)"),
    ],
)
def test_entries_over_the_size_limits_are_refused_from_their_declared_size(
    tmp_path: Path, opened: list[str], monkeypatch: pytest.MonkeyPatch, limit: str, message: str
) -> None:
    from foundation_ml import _package

    path = zipped(tmp_path / "p.zip", ("manifest.json", manifest_text()), ("weights.safetensors", b"weights"))
    monkeypatch.setattr(_package, limit, 6, raising=False)
    with pytest.raises(PackageError, match=message):
        open_package(path)
    assert "weights.safetensors" not in opened


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (100, r"p\.zip:weights\.safetensors holds 7 bytes, not the 100 declared for it"),
        (3, r"p\.zip:weights\.safetensors cannot be read: Bad CRC-32"),  # zipfile stops at 3 bytes
    ],
)
def test_an_entry_whose_declared_size_is_false_is_refused(tmp_path: Path, size: int, message: str) -> None:
    path = zipped(tmp_path / "p.zip", ("manifest.json", manifest_text()), ("weights.safetensors", b"weights"))
    patched(path, 22, 24, struct.pack("<I", size), entry=1)  # the uncompressed size, in both headers
    with pytest.raises(PackageError, match=message):
        open_package(path)


def test_a_directory_file_that_grows_while_read_is_stopped_at_its_listed_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from foundation_ml import _package

    path = make(tmp_path / "m")
    listed = _package._list_dir

    def listed_before_it_grew(root: Path) -> dict[str, int]:
        return {**listed(root), "weights.safetensors": 3}

    monkeypatch.setattr(_package, "_list_dir", listed_before_it_grew)
    with pytest.raises(PackageError, match=r"m/weights\.safetensors holds more than the 3 bytes declared"):
        open_package(path)


# --- a damaged or hostile zip or manifest is a PackageError naming the entry, never a crash --------


def encrypted(path: Path) -> Path:
    zipped(path, ("manifest.json", manifest_text()), ("weights.safetensors", b"weights"))
    return patched(path, 6, 8, b"\x01")  # flag bit 0: encrypted


def method_99(path: Path) -> Path:
    zipped(path, ("manifest.json", manifest_text()), ("weights.safetensors", b"weights"))
    return patched(path, 8, 10, struct.pack("<H", 99))


def corrupt_deflate(path: Path) -> Path:
    zipped(path, ("manifest.json", manifest_text()), method=zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    start = 30 + len("manifest.json")  # the first entry's data, after its local header
    data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


def raw_manifest(text: str) -> Any:
    return lambda path: zipped(path, ("manifest.json", text), ("weights.safetensors", b"weights"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (encrypted, r"p\.zip:manifest\.json is encrypted"),
        (method_99, r"p\.zip:manifest\.json uses compression method 99, which is not supported"),
        (corrupt_deflate, r"p\.zip:manifest\.json cannot be read: Error -3 while decompressing"),
        (raw_manifest("[" * 100_000 + "]" * 100_000), r"p\.zip:manifest\.json nests .* too deeply"),
        (
            raw_manifest(manifest_text().replace("[-1, 4]", "[-1, 1e400]")),
            r"p\.zip:manifest\.json is not valid JSON: the number 1e400 is out of range",
        ),
        (raw_manifest(b"\xff{}".decode("latin-1")), r"p\.zip:manifest\.json is not valid JSON"),
    ],
    ids=["encrypted", "method-99", "corrupt-deflate", "deep-json", "dim-1e400", "not-utf8"],
)
def test_a_damaged_zip_or_manifest_is_a_package_error_naming_the_entry(
    tmp_path: Path, build: Any, message: str
) -> None:
    path = build(tmp_path / "p.zip")
    with pytest.raises(PackageError, match=message) as info:
        open_package(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "entries",
    [
        [
            ("manifest.json", manifest_text()),
            ("weights.safetensors", b"other"),
            ("weights.safetensors", b"weights"),
        ],
        [("manifest.json", manifest_text()), ("manifest.json", manifest_text(version="666"))],
    ],
    ids=["weights", "manifest"],
)
def test_an_entry_that_appears_twice_is_refused_naming_it(
    tmp_path: Path, entries: list[tuple[str, Any]]
) -> None:
    path = zipped(tmp_path / "dup.zip", *entries)
    name = entries[-1][0].replace(".", r"\.")
    with pytest.raises(PackageError, match=rf"dup\.zip:{name} appears more than once in the zip"):
        open_package(path)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFLNK | 0o777, "a symbolic link"),
        (stat.S_IFIFO | 0o644, "a fifo"),
        (stat.S_IFDIR | 0o755, "a directory"),
    ],
)
def test_a_zip_entry_that_is_not_a_regular_file_is_refused_unread(
    tmp_path: Path, opened: list[str], mode: int, kind: str
) -> None:
    """A symlink entry (``zip -y``) was read as a file holding its target: extracted, the package
    would hold a link out of it, which a directory package refuses."""
    link = zipfile.ZipInfo("weights.safetensors")
    link.create_system, link.external_attr = 3, mode << 16
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", manifest_text())
        zf.writestr(link, b"weights")
    with pytest.raises(
        PackageError, match=rf"p\.zip:weights\.safetensors is {kind}, not a regular file"
    ) as info:
        open_package(path)
    assert info.value.file == "weights.safetensors" and opened == []


def test_a_zip_of_regular_files_with_their_unix_modes_opens(tmp_path: Path) -> None:
    regular = zipfile.ZipInfo("weights.safetensors")
    regular.create_system, regular.external_attr = 3, (stat.S_IFREG | 0o644) << 16
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", manifest_text())
        zf.writestr(regular, b"weights")
    assert open_package(path).files == {"weights.safetensors": b"weights"}


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_compressed_zip_declaring_far_more_than_its_size_is_refused_unread(
    tmp_path: Path, opened: list[str], method: int
) -> None:
    """A listed entry of 96 MiB of zeros deflates to ~100 KiB; its checksum failed only once all
    of it was in memory (16 GiB from a 16 MiB zip)."""
    zeros = bytes(96 << 20)
    text = manifest_text(files={"weights.safetensors": hashlib.sha256(zeros).hexdigest()})
    path = zipped(
        tmp_path / "bomb.zip", ("manifest.json", text), ("weights.safetensors", zeros), method=method
    )
    with pytest.raises(
        PackageError, match=r"bomb\.zip declares \d+ bytes uncompressed .* more than 64 times its \d+ bytes"
    ) as info:
        open_package(path)
    assert info.value.file == str(path) and opened == []


def test_a_stored_zip_or_a_compressed_one_within_the_ratio_opens(tmp_path: Path) -> None:
    data = bytes(range(256)) * (1 << 12)  # 1 MiB
    text = manifest_text(files={"weights.safetensors": hashlib.sha256(data).hexdigest()})
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = zipped(
            tmp_path / f"p{method}.zip", ("manifest.json", text), ("weights.safetensors", data), method=method
        )
        assert open_package(path).files["weights.safetensors"] == data


# --- a directory package holds regular files only ----------------------------------------------


def test_a_symlink_to_a_file_outside_the_package_is_refused_unread(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    outside = tmp_path / "secret"
    (path / "weights.safetensors").rename(outside)
    (path / "weights.safetensors").symlink_to(outside)
    with pytest.raises(PackageError, match=r"m/weights\.safetensors is a symbolic link") as info:
        open_package(path)
    assert info.value.file == "weights.safetensors"


@pytest.mark.parametrize("target", ["/etc", "."])
def test_a_symlinked_directory_is_refused(tmp_path: Path, target: str) -> None:
    path = make(tmp_path / "m")
    (path / "extra" / "link").symlink_to(target)
    with pytest.raises(PackageError, match=r"m/extra/link is a symbolic link"):
        open_package(path)


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    os.mkfifo(path / "pipe")  # opening it to read would block until a writer came
    with pytest.raises(PackageError, match=r"m/pipe is a fifo, not a regular file"):
        open_package(path)


def test_a_symlinked_manifest_is_refused(tmp_path: Path) -> None:
    path = make(tmp_path / "m")
    (path / "manifest.json").rename(tmp_path / "manifest.json")
    (path / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(PackageError, match=r"m/manifest\.json is a symbolic link"):
        open_package(path)


# --- every manifest field has its JSON type; nothing is coerced ----------------------------------

BAD_MANIFESTS = [
    ({"name": None}, r"'name' must be a string, not null"),
    ({"version": [1]}, r"'version' must be a string, not an array"),
    ({"version": 7}, r"'version' must be a string, not 7"),
    ({"backend": ["torch"]}, r"'backend' must be a string, not an array"),
    ({"factory": None}, r"'factory' must be a string, not null"),
    ({"factory": "a:b:c"}, r"'factory' 'a:b:c' is not a reference 'pkg\.module:build'"),
    ({"factory_kwargs": [1]}, r"'factory_kwargs' must be an object \(the factory's keyword arguments\)"),
    ({"files": ["weights.safetensors"]}, r"'files' must map file names to sha256 digests, not an array"),
    (
        {"files": {"weights.safetensors": "zz"}},
        r"'files' gives weights\.safetensors a malformed sha256 \"zz\"",
    ),
    ({"files": {"weights.safetensors": 5}}, r"'files' gives weights\.safetensors a malformed sha256 5"),
    ({"files": {"manifest.json": "0" * 64}}, r"'files' lists manifest\.json itself"),
    ({"files": {"../w": "0" * 64}}, r"'files' names '\.\./w', which escapes the package"),
    ({"files": {"..\\w": "0" * 64}}, r"'files' names '\.\.\\\\w', with a backslash"),
    ({"inputs": []}, r"invalid signature: 'inputs' is empty"),
    ({"outputs": []}, r"invalid signature: 'outputs' is empty"),
    ({"inputs": None}, r"invalid signature: 'inputs' must be a list of tensors, not null"),
    (
        {"inputs": {"x": "FP32[-1, 4]"}},
        r"invalid signature: 'inputs' must be a list of tensors, not an object",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_MANIFESTS, ids=[m for _, m in BAD_MANIFESTS])
def test_a_manifest_field_of_the_wrong_type_is_refused_naming_it(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    path = zipped(
        tmp_path / "p.zip", ("manifest.json", manifest_text(**overrides)), ("weights.safetensors", b"weights")
    )
    with pytest.raises(
        PackageError, match=rf"^p\.zip:manifest\.json:? {message}|p\.zip:manifest\.json.*{message}"
    ) as info:
        open_package(path)
    assert info.value.file == "manifest.json"
    assert "checksum" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (manifest_text()[:-1] + ', "version": "9"}', r"has the key 'version' more than once in one object"),
        (manifest_text().replace("[-1, 4]", "[NaN, 4]"), r"is not valid JSON: NaN is not a JSON number"),
    ],
    ids=["duplicate-key", "nan"],
)
def test_json_that_reads_two_ways_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = zipped(tmp_path / "p.zip", ("manifest.json", text), ("weights.safetensors", b"weights"))
    with pytest.raises(PackageError, match=rf"p\.zip:manifest\.json {message}"):
        open_package(path)


def test_an_upper_case_sha256_is_the_same_digest(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"weights").hexdigest().upper()
    text = manifest_text(files={"weights.safetensors": digest})
    pkg = open_package(
        zipped(tmp_path / "p.zip", ("manifest.json", text), ("weights.safetensors", b"weights"))
    )
    assert pkg.manifest["files"] == {"weights.safetensors": digest.lower()}


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([-5, 4], r"tensor 'x': dimension -5 is neither a size >= 0 nor -1"),
        ([-1.7, 4], r"tensor 'x': dimension -1\.7 is a float, not an integer"),
        ([True, 4], r"tensor 'x': dimension True is a bool, not an integer"),
        ("4", r"tensor 'x': shape must be a list of integers, not str"),
        ([1] * 9, r"tensor 'x': shape has 9 dimensions \(at most 8\)"),
        (
            [-1, 10**15],
            r"tensor x: FP32\[-1, 1000000000000000\]: its example .* would take 4000000000000000 bytes",
        ),
    ],
)
def test_a_bad_shape_in_the_manifest_is_named(tmp_path: Path, shape: Any, message: str) -> None:
    text = manifest_text(inputs=[{"name": "x", "datatype": "FP32", "shape": shape}])
    path = zipped(tmp_path / "p.zip", ("manifest.json", text), ("weights.safetensors", b"weights"))
    with pytest.raises(
        PackageError, match=rf"p\.zip:manifest\.json has an invalid signature: 'inputs': {message}"
    ):
        open_package(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"inputs": ()}, r"'inputs' is empty"),
        ({"outputs": ()}, r"'outputs' is empty"),
        ({"files": {"manifest.json": b"{}"}}, r"'files' lists manifest\.json itself"),
    ],
)
def test_a_package_open_package_would_refuse_is_not_written(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path / "p.zip", **overrides)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".ZIP", ".Zip"])
def test_a_zip_name_in_any_case_writes_and_opens_a_zip(tmp_path: Path, suffix: str) -> None:
    """``MODEL.ZIP`` was written as a directory named so, and a zip named so was not a package."""
    path = tmp_path / f"model{suffix}"
    make(path)
    assert path.is_file() and zipfile.is_zipfile(path)
    assert open_package(path).files == open_package(make(tmp_path / "model.zip")).files


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("m.tar", ".tar"),
        ("m.tar.gz", ".tar.gz"),
        ("m.TGZ", ".TGZ"),
        ("m.7z", ".7z"),
        ("m.tar.zst", ".tar.zst"),
    ],
)
def test_an_archive_name_other_than_zip_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str, suffix: str
) -> None:
    """``model.tar`` was written as a directory named so, which passes for an archive it is not."""
    with pytest.raises(
        ValueError, match=rf"^{tmp_path / name}: '{re.escape(suffix)}' names an archive format"
    ):
        make(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["v1.2", "m.safetensors.d", "model.d", "tar"])
def test_a_directory_name_with_dots_that_names_no_archive_is_written(tmp_path: Path, name: str) -> None:
    assert (make(tmp_path / name) / "manifest.json").is_file()
