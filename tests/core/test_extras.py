"""A plugin that is not installed is named with the extra that installs it."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest

import foundation_core
from foundation_core import _extras
from foundation_core.errors import NotRegisteredError

_REQUIRES = [
    "pluggy>=1.5",
    'foundation-shm~=0.1.0; extra == "shm"',
    "foundation-torch~=0.1.0; extra == 'torch'",
    'foundation-rate-limit~=0.1.0; extra == "patterns"',
    'foundation[shm,torch]; extra == "all"',
    'pytest>=8; extra == "dev"',
]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Distributions the fake metadata says are installed (``foundation`` requires _REQUIRES)."""
    have: set[str] = {"foundation"}

    def requires(dist: str) -> list[str]:
        assert dist == "foundation"
        return _REQUIRES

    def distribution(dist: str) -> Any:
        if dist not in have:
            raise metadata.PackageNotFoundError(dist)
        return object()

    monkeypatch.setattr(_extras.metadata, "requires", requires)
    monkeypatch.setattr(_extras.metadata, "distribution", distribution)
    return have


def test_a_missing_sibling_is_named_with_its_extra(installed: set[str]) -> None:
    assert _extras.install_hint("torch") == '; pip install "foundation[torch]" provides it (foundation-torch)'
    assert _extras.install_hint("rate_limit") == (
        '; pip install "foundation[patterns]" provides it (foundation-rate-limit)'
    )


def test_an_installed_sibling_or_an_unknown_name_gets_no_hint(installed: set[str]) -> None:
    installed.add("foundation-shm")
    assert _extras.install_hint("shm") == ""  # installed yet not loaded: the plugin list says why
    assert _extras.install_hint("mine") == ""
    assert _extras.install_hint("dev") == ""


def test_without_foundations_metadata_there_is_no_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def requires(dist: str) -> list[str]:
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(_extras.metadata, "requires", requires)
    assert _extras.install_hint("torch") == ""


def test_the_registry_error_carries_the_hint(installed: set[str]) -> None:
    with foundation_core.start(plugins=[], entry_points=False) as hub:
        with pytest.raises(NotRegisteredError) as info:
            hub.model_backends.get("torch")
    assert str(info.value).endswith('; pip install "foundation[torch]" provides it (foundation-torch)')


def test_an_unknown_command_says_which_plugins_are_off_and_what_installs_it(
    installed: set[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``foundation conformance`` (docs/plugins.md) where foundation-conformance is not installed,
    or ``foundation config`` with the config plugin disabled, said only "unknown command"."""
    from foundation_core._cli import main

    monkeypatch.setenv("FOUNDATION_DISABLE_PLUGINS", "ml")
    monkeypatch.delenv("FOUNDATION_PLUGINS", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["torch", "--help"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'torch' (commands: " in err
    assert "; plugins not active: ml (disabled by FOUNDATION_DISABLE_PLUGINS)" in err
    assert err.rstrip().endswith('; pip install "foundation[torch]" provides it (foundation-torch)')
