"""One exit code for a file given that is not there, whatever the command: 2, "it could
not run as set up" (README, exit codes), as a bad option; 1 is for an input read and
found wanting. `events check` exited 2 and the rest 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

CATALOG = str(Path(__file__).parents[2] / "src" / "rules" / "catalog" / "default.yaml")


COMMANDS = {
    "events check": ["events", "check", "{missing}"],
    "rules validate": ["rules", "validate", "{missing}"],
    "rules validate --together": ["rules", "validate", "--together", "{missing}", CATALOG],
    "rules test, its rules": ["rules", "test", "{missing}", "--events", "{missing}"],
    "rules test, its events": ["rules", "test", CATALOG, "--events", "{missing}"],
    "rules explain --rules": ["rules", "explain", "--rules", "{missing}"],
    "rules diff": ["rules", "diff", "{missing}", CATALOG],
    "backtest --events": ["backtest", "--events", "{missing}", "--out", "{out}"],
    "backtest --events, a folder": ["backtest", "--events", "{folder}", "--out", "{out}"],
    "state seed": ["state", "seed", "--events", "{missing}", "--dry-run"],
    "state decode": ["state", "decode", "{missing}"],
}


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_file_given_that_is_not_there_exits_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jsonl"
    paths = {"missing": missing, "out": tmp_path / "out", "folder": tmp_path}
    assert main([a.format(**paths) for a in argv]) == 2
    said = capsys.readouterr()
    assert "nope.jsonl" in said.out + said.err or str(tmp_path) in said.out + said.err
