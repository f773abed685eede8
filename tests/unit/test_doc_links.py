"""The README and docs/ render as written: every code block is closed where it ends, and
every link to a heading (`[...](operations.md#scaling)`, `[...](#going-live)`) names one.
docs/performance.md left a ```` ```sh ```` block open, so GitHub showed the rest of the
file inside out (its prose as code, its commands as prose) and the README's link to
"Faults and scale-out" led nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(((?:docs/)?[\w-]+\.md)?#([\w-]+)\)")


def fence_problems(markdown: str) -> list[str]:
    """Where a fenced code block is left open: a fence with a language after its
    backticks opens a block, and cannot close one (CommonMark), so one met inside a
    block means the block before it was never closed; so does a block open at the end."""
    found, opened = [], 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if not line.startswith("```"):
            continue
        info = line.strip("`").strip()
        if opened and info:
            found.append(f"line {number}: ```{info} inside the block opened at line {opened}")
        elif opened:
            opened = 0
        else:
            opened = number
    if opened:
        found.append(f"the block opened at line {opened} is never closed")
    return found


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings outside code blocks (`### The procedure`:
    `the-procedure`)."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_code_block_is_closed(page: Path) -> None:
    assert fence_problems(page.read_text()) == []


def test_every_link_to_a_heading_names_one() -> None:
    headings = {page.name: anchors(page.read_text()) for page in PAGES}
    broken, seen = [], 0
    for page in PAGES:
        for target, anchor in LINK.findall(page.read_text()):
            seen += 1
            name = Path(target).name if target else page.name
            if anchor not in headings.get(name, {anchor}):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == []
    assert seen > 40  # the test reads the links


def test_the_check_finds_a_block_left_open() -> None:
    closed = "```sh\nmoments run\n```\n## Next\n```sh\nmake test\n```\n"
    assert fence_problems(closed) == []
    left_open = "```sh\nmoments run\n## Next\n```sh\nmake test\n```\n"
    assert fence_problems(left_open) == ["line 4: ```sh inside the block opened at line 1"]
    assert fence_problems("```\nx\n") == ["the block opened at line 1 is never closed"]
