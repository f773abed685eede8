"""The tables of settings in the README and docs/ (`| variable | meaning | default |`)
and the changelog's lists of the settings and commands this version adds say what the
code does: the README's table lists every setting, every row names real ones, and its
default column gives the code's default; the changelog names every setting and command
beyond the contract's. docs/security.md gave `default` as the default of
`MOMENTS_REDIS_USERNAME`, which is unset (Redis then logs in as its own `default` user,
but `moments config show` shows nothing there)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from moments.cli import build_parser
from moments.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAMED = re.compile(r"`MOMENTS_([A-Z0-9_<>]+)`")
PATTERNS = {"TOPICS__<NAME>", "<NAME>_FILE"}
"""Rows that stand for a family of variables: one topic renamed, any setting from a file."""
UNSET_WORDS = ("none", "off", "auto", "unset", "empty", "system CAs", "the packaged", "built-in")
"""How a default column says a setting is left unset (or empty)."""
CONTRACT = {
    *("KAFKA_BOOTSTRAP", "REDIS_URL", "RULES", "METRICS_PORT"),
    *("APP_ID", "DATA_DIR", "TOPIC_PREFIX"),
}
"""The settings the contract lists (its Configuration table, in shared/spec)."""


def setting_rows(markdown: str) -> list[tuple[list[str], str]]:
    """(variables, default cell) of each row of a table whose header ends in `default`."""
    rows, in_table = [], False
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif cells[-1] == "default":
            in_table = True
        elif in_table and (names := NAMED.findall(cells[0])):
            rows.append((names, cells[-1]))
    return rows


def said_default(cell: str) -> object:
    """The value a default cell gives: None for a word saying unset, else the text in
    its first backticks, or a duration in days as seconds (`400 days`)."""
    if cell.startswith(UNSET_WORDS):
        return "" if cell == "empty" else None
    if days := re.fullmatch(r"(\d+) days", cell):
        return int(days[1]) * 86400
    if quoted := re.match(r"`([^`]*)`", cell):
        return quoted[1]
    raise AssertionError(f"a default column reads {cell!r}: neither a value nor unset")


def same(said: object, default: object) -> bool:
    if said is None or default is None:
        return said is None and default is None
    if isinstance(default, bool):
        return said == str(default).lower()
    if isinstance(default, int | float):
        return float(str(said)) == float(default)
    if isinstance(default, Path):
        return Path(str(said)) == default
    return said == default


def test_the_readme_lists_every_setting_once() -> None:
    named = [name for names, _ in setting_rows((ROOT / "README.md").read_text()) for name in names]
    wanted = {name.upper() for name in Settings.model_fields if name != "topics"} | PATTERNS
    assert sorted(set(named) ^ wanted) == []
    assert len(named) == len(set(named))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_row_gives_the_codes_default(page: Path) -> None:
    wrong = []
    for names, cell in setting_rows(page.read_text()):
        for name in names:
            if name in PATTERNS:
                continue
            field = Settings.model_fields.get(name.lower())
            assert field is not None, f"{page.name}: MOMENTS_{name} is no setting"
            default = field.get_default(call_default_factory=True)
            if not same(said_default(cell), default):
                wrong.append(f"MOMENTS_{name}: {cell!r}, the code's {default!r}")
    assert wrong == []


def test_the_check_reads_the_tables() -> None:
    """It finds the rows, and a default column that differs from the code fails it."""
    table = (
        "| variable | meaning | default |\n|---|---|---|\n"
        "| `MOMENTS_PARTITIONS` | partitions | `4` |\n"
        "| `MOMENTS_METRICS_USERNAME` / `MOMENTS_METRICS_PASSWORD` | basic auth | off |\n"
        "| `MOMENTS_LEDGER_TTL_SECONDS` | ledger | 400 days |\n"
    )
    rows = setting_rows(table)
    assert rows == [
        (["PARTITIONS"], "`4`"),
        (["METRICS_USERNAME", "METRICS_PASSWORD"], "off"),
        (["LEDGER_TTL_SECONDS"], "400 days"),
    ]
    assert [said_default(cell) for _, cell in rows] == ["4", None, 400 * 86400]
    assert same("4", 4)
    assert not same("8", 4)
    assert not same("default", None)
    assert same(None, None)
    assert same("./.moments-data", Path(".moments-data"))
    assert same("false", False)
    readme = setting_rows((ROOT / "README.md").read_text())
    assert len(readme) > 40


def test_the_changelog_lists_every_setting_beyond_the_contract() -> None:
    """The changelog's Settings section tells the teams that deploy it what this version
    adds, as its Metrics section does for the metrics: nine settings were named nowhere in it
    (`MOMENTS_FETCH_WAIT_MS`, `MOMENTS_KAFKA_SSL_CAFILE`, ...) and nine more only under
    other headings."""
    text = (ROOT / "CHANGELOG.md").read_text()
    section = text.split("\n### Settings\n", 1)[1].split("\n### ", 1)[0]
    named = set(re.findall(r"MOMENTS_([A-Z0-9_]+?)(?:__<NAME>|_FILE)?`", section))
    added = {name.upper() for name in Settings.model_fields} - CONTRACT
    assert sorted(added - named) == []


def test_the_changelog_names_every_command_beyond_the_contract() -> None:
    """The changelog's Commands section: its list of what this version adds beyond the
    contract's `moments worker` and `moments rules validate` left out five commands
    (`moments check`, `rules diff`, `tasks pending`, `tasks deferred`, `state seed`)."""

    def paths(parser: argparse.ArgumentParser, path: str = "") -> list[str]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [path]
        return [
            found
            for action in subs
            for name, child in action.choices.items()
            for found in paths(child, f"{path} {name}".strip())
        ]

    text = (ROOT / "CHANGELOG.md").read_text()
    section = text.split("\n### Commands\n", 1)[1].split("\n### ", 1)[0]
    listing = section.split("\nBeyond `moments worker` and `moments rules validate`: ", 1)[1]
    listing = " ".join(listing.split(".\n", 1)[0].split())
    named = {name.removeprefix("moments ") for name in re.findall(r"`([a-z][a-z ]*)`", listing)}
    added = set(paths(build_parser())) - {"worker", "rules validate"}
    assert sorted(added - named) == []
