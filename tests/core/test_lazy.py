"""``lazy_exports``: a package's names imported on first read, then kept; unknown names refused."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from foundation_core import lazy_exports


@pytest.fixture
def package(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A package ``lazy_pkg`` whose ``json_dumps`` is ``json.dumps``, imported lazily."""
    pkg = types.ModuleType("lazy_pkg")
    pkg.__path__ = []
    pkg.__getattr__, pkg.__dir__ = lazy_exports("lazy_pkg", {"dumps": "json", "nope": "json"})  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "lazy_pkg", pkg)
    return pkg


def test_a_name_is_imported_on_first_read_and_kept(package: types.ModuleType) -> None:
    import json

    assert "dumps" not in vars(package)
    assert package.dumps is json.dumps
    assert vars(package)["dumps"] is json.dumps  # kept: the next read is a plain attribute
    assert "dumps" in dir(package)


def test_unknown_and_missing_names_raise_attribute_error(package: types.ModuleType) -> None:
    with pytest.raises(AttributeError, match="module 'lazy_pkg' has no attribute 'other'"):
        package.other  # noqa: B018
    with pytest.raises(AttributeError, match="nope"):  # listed, but its module lacks it
        package.nope  # noqa: B018


PACKAGES = [
    ("foundation_retry", "foundation_retry._policy"),
    ("foundation_circuit_breaker", "foundation_circuit_breaker._breaker"),
    ("foundation_conformance", "foundation_conformance._runner"),
    ("foundation_config", "foundation_config._masking"),
    ("foundation_logging", "foundation_logging._processors"),
    ("foundation_shm", "foundation_shm._options"),
]


@pytest.mark.parametrize(("package", "part"), PACKAGES, ids=[p for p, _ in PACKAGES])
def test_importing_a_plugin_package_imports_none_of_its_parts(package: str, part: str) -> None:
    pytest.importorskip(package)
    code = f"import sys, {package}; print({part!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
