"""A plugin's distribution declaring a range of the core that the running core is not in fails,
unimported, naming everything; only requirements that apply count.

Each fixture is a distribution written by hand (a ``.dist-info`` with METADATA and
entry_points.txt, or an ``.egg-info``) in ``tmp_path``, put on ``sys.path``: importlib reads
it as it reads one pip installed. A plugin that must not be imported leaves a file when it is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from foundation_core import FoundationPluginWarning, Hub, __version__
from foundation_core._requirements import plainly_met
from foundation_core.errors import PluginLoadError

from .conftest import on_sys_path, run_cli

UNMET = "foundation>=99"


def _plugin(site: Path, name: str, requires: list[str], *, egg: bool = False) -> None:
    """Distribution ``foundation-fixture-NAME`` 1.0 with plugin ``NAME`` (module ``fixture_cv_NAME``),
    declaring ``requires``. Importing the module leaves ``NAME.imported`` in ``site``; the plugin
    registers pattern ``NAME``."""
    module = site / f"fixture_cv_{name}"
    module.mkdir()
    (module / "__init__.py").write_text(
        textwrap.dedent(f"""
        import pathlib

        from foundation_core import hookimpl

        pathlib.Path({str(site)!r}, {name + ".imported"!r}).touch()


        @hookimpl
        def foundation_register_patterns(register):
            register({name!r}, lambda policy: lambda fn: fn)
        """)
    )
    dist = f"foundation-fixture-{name}"
    entry_points = f"[foundation]\n{name} = fixture_cv_{name}\n"
    if egg:  # setuptools' older layout: PKG-INFO, and the requirements in requires.txt
        info = site / f"{dist.replace('-', '_')}-1.0.egg-info"
        info.mkdir()
        (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "requires.txt").write_text("".join(f"{r}\n" for r in requires))
    else:
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        lines = "".join(f"Requires-Dist: {r}\n" for r in requires)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n{lines}")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """An empty directory first on ``sys.path`` for the fixture distributions the test writes."""
    with on_sys_path(tmp_path, "fixture_cv_") as path:
        yield path


def _load(*names: str, **env: str) -> Hub:
    hub = Hub(env={"FOUNDATION_PLUGINS": ",".join(names), **env})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FoundationPluginWarning)
        hub.load_entry_points()
        hub.run_registration()
    return hub


def test_a_plugin_made_for_another_core_is_not_imported_and_its_error_names_everything(site: Path) -> None:
    _plugin(site, "stale", [UNMET, "attrs>=1"])
    _plugin(site, "fresh", [f"foundation~={__version__}"])
    with pytest.warns(FoundationPluginWarning, match="plugin 'stale' failed") as record:
        hub = Hub(env={"FOUNDATION_PLUGINS": "stale,fresh"})
        hub.load_entry_points()
    hub.run_registration()
    stale = hub.plugins["stale"]
    assert stale.status == "failed"
    assert not (site / "stale.imported").exists()  # never imported
    error = stale.error or ""
    assert "distribution foundation-fixture-stale 1.0 requires 'foundation>=99'" in error
    assert f"but foundation {__version__} is installed" in error
    assert "pip install -U foundation-fixture-stale" in error
    assert "pip install 'foundation>=99'" in error
    assert "FOUNDATION_DISABLE_PLUGINS=stale" in error
    assert any("plugin 'stale' failed" in str(w.message) for w in record)
    assert hub.plugins["fresh"].status == "loaded" and "fresh" in hub.patterns  # the others start


@pytest.mark.parametrize(
    "requires",
    [
        [UNMET],
        ["Foundation>=99"],  # the name as PEP 503 normalises it
        [f"foundation~={__version__}", "foundation<0.0.1"],  # every one that applies must be met
        ['foundation>=99; python_version >= "3"'],  # a marker that applies
        ['foundation>=99; extra == "old" or os_name != "no-such-os"'],  # true without the extra
        ["foundation[shm]>=99"],  # with extras of the core's own
        [f"foundation (>={__version__}, <0.0.1)"],  # the older form, in parentheses
    ],
    ids=["range", "name-case", "two-ranges", "marker", "extra-or-marker", "core-extras", "parentheses"],
)
def test_each_requirement_on_the_core_that_applies_is_checked(site: Path, requires: list[str]) -> None:
    _plugin(site, "stale", requires)
    hub = _load("stale")
    assert hub.plugins["stale"].status == "failed"
    assert f"but foundation {__version__} is installed" in (hub.plugins["stale"].error or "")
    assert not (site / "stale.imported").exists()


def test_an_egg_info_distributions_requires_txt_is_checked(site: Path) -> None:
    _plugin(site, "stale", [UNMET], egg=True)
    _plugin(site, "extra", ["[old]", UNMET], egg=True)  # requires.txt's section: an extra
    hub = _load("stale", "extra")
    assert hub.plugins["stale"].status == "failed" and not (site / "stale.imported").exists()
    assert hub.plugins["extra"].status == "loaded"


@pytest.mark.parametrize(
    "requires",
    [
        [f"foundation~={__version__}"],  # met, decided without packaging
        [f"foundation[shm]>={__version__}"],  # met, decided by packaging
        [f'foundation>={__version__}; python_version >= "3"'],  # met under a marker that applies
        [f"foundation~={__version__}", 'foundation>=99; extra == "old"'],  # unmet only under an extra
        ['foundation>=99; python_version < "3"'],  # unmet only where the marker is true
        ["foundation-shm>=99", "foundation_fixture>=99"],  # other distributions, not the core
        ["attrs>=1"],
        [],
    ],
    ids=[
        "plain",
        "with-extras",
        "marker-true",
        "under-extra",
        "marker-false",
        "other-dists",
        "none",
        "empty",
    ],
)
def test_a_plugin_whose_core_requirements_are_met_or_do_not_apply_loads(
    site: Path, requires: list[str]
) -> None:
    _plugin(site, "ok", requires)
    _plugin(site, "stale", [UNMET])  # in the same hub: the check did run
    hub = _load("ok", "stale")
    assert hub.plugins["ok"].status == "loaded", hub.plugins["ok"].error
    assert "ok" in hub.patterns and (site / "ok.imported").exists()
    assert hub.plugins["stale"].status == "failed"


def test_a_requirement_on_the_core_that_cannot_be_read_fails_the_plugin(site: Path) -> None:
    _plugin(site, "garbled", ["foundation>=0.1.*"])  # '.*' only goes with == and !=
    hub = _load("garbled")
    error = hub.plugins["garbled"].error or ""
    assert hub.plugins["garbled"].status == "failed" and not (site / "garbled.imported").exists()
    assert "declares a requirement on foundation that cannot be read ('foundation>=0.1.*'" in error


def test_two_plugins_of_one_stale_distribution_both_fail(site: Path) -> None:
    _plugin(site, "stale", [UNMET])
    entry_points = site / "foundation_fixture_stale-1.0.dist-info" / "entry_points.txt"
    entry_points.write_text("[foundation]\nstale = fixture_cv_stale\nstale_too = fixture_cv_stale\n")
    hub = _load("stale", "stale_too")
    assert [hub.plugins[n].status for n in ("stale", "stale_too")] == ["failed", "failed"]
    assert not (site / "stale.imported").exists()


def test_strict_mode_makes_an_unmet_core_requirement_fatal(site: Path) -> None:
    _plugin(site, "stale", [UNMET])
    hub = Hub(env={"FOUNDATION_PLUGINS": "stale", "FOUNDATION_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginLoadError, match=r"plugin 'stale' failed: .* requires 'foundation>=99'"):
        hub.load_entry_points()
    assert not (site / "stale.imported").exists()


def test_foundation_plugins_shows_the_unmet_requirement(tmp_path: Path) -> None:
    _plugin(tmp_path, "stale", [UNMET])
    _plugin(tmp_path, "fresh", [f"foundation~={__version__}"])
    listing = run_cli(tmp_path, "plugins", FOUNDATION_PLUGINS="stale,fresh")
    assert listing.returncode == 0, listing.stderr
    assert "stale  [failed]  foundation-fixture-stale 1.0" in listing.stdout
    assert "requires 'foundation>=99'" in listing.stdout
    assert "fresh  [loaded]" in listing.stdout
    doc = json.loads(run_cli(tmp_path, "plugins", "--json", FOUNDATION_PLUGINS="stale,fresh").stdout)
    [stale] = [p for p in doc["plugins"] if p["name"] == "stale"]
    assert stale["status"] == "failed" and f"foundation {__version__} is installed" in stale["error"]
    strict = run_cli(tmp_path, "--strict-plugins", "plugins", FOUNDATION_PLUGINS="stale,fresh")
    assert strict.returncode == 1
    assert (
        "plugin 'stale' failed" in strict.stderr
        and "pip install -U foundation-fixture-stale" in strict.stderr
    )
    assert not (tmp_path / "stale.imported").exists()


def test_plain_requirements_are_checked_without_importing_packaging(tmp_path: Path) -> None:
    """Start-up stays fast: ``packaging`` (some 20 ms to import) is not needed for a bare range."""
    _plugin(tmp_path, "fresh", [f"foundation~={__version__}", "attrs>=1"])
    probe = (
        "import sys, warnings\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from foundation_core import Hub\n"
        "hub = Hub(env={'FOUNDATION_PLUGINS': 'fresh'})\n"
        "hub.load_entry_points()\n"
        "info = hub.plugins['fresh']\n"
        "print(info.status, info.core_requirements, 'packaging' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == f"loaded ('foundation~={__version__}',) False", out.stderr


_RELEASES = st.lists(st.integers(0, 12), min_size=1, max_size=4).map(lambda p: ".".join(map(str, p)))


@given(
    core=_RELEASES,
    clauses=st.lists(
        st.tuples(st.sampled_from(["~=", "==", "!=", "<=", ">=", "<", ">"]), _RELEASES), max_size=3
    ),
    spaced=st.booleans(),
)
def test_the_plain_check_agrees_with_packaging(
    core: str, clauses: list[tuple[str, str]], spaced: bool
) -> None:
    """The shortcut says met exactly where packaging does, for every range of releases it takes."""
    clauses = [(op, v) for op, v in clauses if op != "~=" or "." in v]  # '~=1' is no valid clause
    sep = " " if spaced else ""
    spec = ",".join(f"{sep}{op}{sep}{v}" for op, v in clauses)
    met = SpecifierSet(spec).contains(Version(core), prereleases=True)
    assert plainly_met(f"foundation{sep}{spec}", core) is met


@pytest.mark.parametrize(
    ("requirement", "core"),
    [
        ("foundation~=0.1.0", "0.1.1.dev0"),  # a development core: packaging's rules
        ("foundation>=0.1", "0.2.0+local"),
        ("foundation==0.1.*", "0.1.3"),
        ("foundation[shm]>=0.1", "0.1.0"),
        ("foundation>=0.1; extra == 'x'", "0.1.0"),
        ("foundation-shm>=0.1", "0.1.0"),
        ("foundation~=1", "1.0"),
    ],
)
def test_the_plain_check_leaves_anything_else_to_packaging(requirement: str, core: str) -> None:
    assert plainly_met(requirement, core) is False
