"""Every command has --help with examples, and the README's command list names real ones."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from moments.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(words after `moments`, parser) for every command that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))


def test_every_command_has_help_with_examples_of_itself() -> None:
    found = dict(commands(build_parser()))
    assert ("events", "check") in found
    for path, parser in found.items():
        epilog = parser.epilog or ""
        assert epilog.startswith("examples:"), path
        assert f"moments {' '.join(path)}" in epilog, path
        assert parser.description, path


def test_the_readme_lists_every_command_and_no_other() -> None:
    found = {path for path, _ in commands(build_parser())}
    groups = {path[0] for path in found if len(path) > 1}
    block = (ROOT / "README.md").read_text().split("## Commands", 1)[1].split("```")[1]
    listed = set()
    for line in block.splitlines():
        words = line.split()
        if words[:1] == ["moments"]:
            listed.add(tuple(words[1:3]) if words[1] in groups else (words[1],))
    assert listed <= found, listed - found
    assert found <= listed, f"commands missing from the README: {found - listed}"
