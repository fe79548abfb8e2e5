"""The Python examples in docs/plugins.md run, in order, and their assertions hold; the relative
links of every page (docs/, the READMEs) name files and headings that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_plugins_guide_examples_run() -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5, "the guide lost its examples"
    namespace: dict[str, object] = {"__name__": "docs_plugins"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["calls"] == ["greet"]  # the wrap example really ran through the wrapper


ROOT = DOC.parents[1]
MARKDOWN = [
    *sorted(ROOT.glob("docs/**/*.md")),
    ROOT / "README.md",
    *sorted(ROOT.glob("plugins/*/README.md")),
    *sorted(ROOT.glob("transports/*/README.md")),
    *sorted(ROOT.glob("clients/*/README.md")),
]
CODE_BLOCK = re.compile(r"^```.*?^```", flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    """The #anchors of a page's headings, as GitHub makes them (a repeated one gets -1, -2, ...)."""
    made: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.*)$", CODE_BLOCK.sub("", page.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        made.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
        counts[slug] = counts.get(slug, 0) + 1
    return made


def test_anchors_follow_githubs_rule(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n## A b\n## A b\n```\n## not a heading\n```\n### 8.1 `x` [--y] / z\n")
    assert anchors(page) == {"title", "a-b", "a-b-1", "81-x---y--z"}


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", CODE_BLOCK.sub("", page.read_text())):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = page.parent / path if path else page
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {', '.join(broken)}"


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every installed plugin, as a user's shell has them (no selection variable)."""
    pytest.importorskip("foundation_retry")
    pytest.importorskip("foundation_shm")
    for var in ("FOUNDATION_PLUGINS", "FOUNDATION_DISABLE_PLUGINS", "FOUNDATION_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


def _plugins_output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from foundation_core._cli import main

    assert main(["plugins", *args]) == 0
    return capsys.readouterr().out


def test_readme_plugins_listing_is_what_foundation_plugins_prints(
    plugin_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README.md's tour: `$ foundation plugins` prints the lines shown, one run of them ("..." stands
    for the rest), and `FOUNDATION_DISABLE_PLUGINS=shm foundation plugins --json` one JSON object."""
    (block,) = re.findall(
        r"```console\n(\$ foundation plugins\n.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    lines = block.splitlines()
    shown = lines[1 : lines.index("...")]
    printed = _plugins_output(capsys).splitlines()
    starts = [i for i in range(len(printed)) if printed[i : i + len(shown)] == shown]
    assert starts, "README.md's lines are not printed as shown:\n" + "\n".join(printed)
    (json_command,) = [line for line in lines if "--json" in line]
    assert json_command.startswith("$ FOUNDATION_DISABLE_PLUGINS=shm foundation plugins --json ")
    monkeypatch.setenv("FOUNDATION_DISABLE_PLUGINS", "shm")
    document = json.loads(_plugins_output(capsys, "--json"))
    assert document["selection"]["disabled"] == ["shm"]


def test_cli_reference_plugins_json_is_what_foundation_plugins_prints(
    plugin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/cli.md's `--json` example: the top level as printed, and its plugin the `retry`
    entry as printed, field for field."""
    section = (ROOT / "docs" / "cli.md").read_text().split("## foundation plugins [--json]")[1]
    (example,) = re.findall(r"```json\n(.*?)```", section.split("\n## ")[0], re.S)
    shown = json.loads(example)
    printed = json.loads(_plugins_output(capsys, "--json"))
    assert list(printed) == list(shown)
    assert {k: printed[k] for k in shown if k != "plugins"} == {
        k: v for k, v in shown.items() if k != "plugins"
    }
    (retry,) = [p for p in printed["plugins"] if p["name"] == "retry"]
    assert shown["plugins"] == [retry]
