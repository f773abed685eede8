"""Every YAML example in docs/rules.md is a rules file that loads and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rules.catalog import load_texts

DOC = Path(__file__).resolve().parents[3] / "docs" / "rules.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_loads(index: int) -> None:
    text = EXAMPLES[index]
    files = [(f"{DOC.name} example {index + 1}", text)]
    if "rules:" not in text:  # a file of a rules folder (gating.yaml): loaded with the first
        files.append((f"{DOC.name} example 1", EXAMPLES[0]))
    rules = load_texts(files)
    assert len(rules) >= 1
    if "gating:" in text:
        assert rules.gating.quiet_hours != ("21:00-08:00",)  # the section was read
