"""Every command has --help with examples, the README's command list names real ones, and
`--version` and `moments_build_info` say what runs."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from moments.buildinfo import build_labels
from moments.cli import build_parser, main
from sinks.metrics import Metrics

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


def test_version_names_this_package_and_what_it_runs_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"moments {version('moments')} (Python {platform.python_version()}; ")
    assert f"faust-streaming {version('faust-streaming')}" in out


def test_the_build_info_metric_carries_the_versions() -> None:
    metrics = Metrics()
    metrics.build_info.labels(**build_labels()).set(1)
    text = generate_latest(metrics.registry).decode()
    expected = f'moments_build_info{{aiokafka="{version("aiokafka")}",'
    assert expected in text
    assert f'version="{version("moments")}"}} 1.0' in text
