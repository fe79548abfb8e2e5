"""The Python examples in docs/plugins.md run, in order, and their assertions hold; the relative
links of every page (docs/, the READMEs) name files and headings that exist."""

from __future__ import annotations

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
