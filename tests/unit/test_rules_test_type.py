"""`moments rules test --type` reads records as a topic holds them (no `type` field), and
the MomentsNothingDetectedWhileEventsFlow runbook's commands run as written: it said to
run `rules test` on a topic sample, which failed `add "type": ... (got None)`."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import shlex
import shutil
from pathlib import Path

import orjson
import pytest

from moments.cli import main
from moments.models import EventType
from moments.partitioning import partition_of
from moments.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "src" / "rules" / "catalog" / "default.yaml"
START = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)


def topic_sample(path: Path, event_type: EventType = EventType.USAGE) -> int:
    """Records of one input topic as `kcat -C ... -e` prints them: each value on a line,
    no `type`, partition after partition (each in its own order)."""
    events = itertools.islice(simulate(60, 100, seed=11, start=START), 3000)
    values = [e for e in events if e.event_type is event_type]
    values.sort(key=lambda e: partition_of(e.key.encode(), 4))
    path.write_bytes(b"".join(orjson.dumps(e.value) + b"\n" for e in values))
    return len(values)


def test_type_names_the_type_of_lines_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = tmp_path / "usage-sample.jsonl"
    assert topic_sample(sample) > 1000
    argv = ["rules", "test", str(CATALOG), "--events", str(sample)]
    assert main([*argv, "--type", "usage"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^[1-9][0-9]* task\(s\)$", out, re.MULTILINE), out[-2000:]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no event type: give --type (topup" in err
    assert err.count("--type") == 1  # the fix, once


def runbook_commands(alert: str) -> list[list[str]]:
    """The `moments ...` lines of the first shell block in the runbook entry of `alert`."""
    text = (ROOT / "docs" / "operations.md").read_text()
    entry = text.split(f"\n### {alert}\n", 1)[1].split("\n### ", 1)[0]
    block = entry.split("```sh\n", 1)[1].split("```", 1)[0]
    return [
        shlex.split(line, comments=True)
        for line in block.splitlines()
        if line.startswith("moments ")
    ]


def test_the_nothing_detected_runbook_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the rules folder and the kcat dump it names in the working folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    shutil.copy(CATALOG, tmp_path / "rules")
    topic_sample(tmp_path / "usage-sample.jsonl")
    commands = runbook_commands("MomentsNothingDetectedWhileEventsFlow")
    assert [c[:3] for c in commands] == [
        ["moments", "rules", "test"],
        ["moments", "events", "check"],
    ]
    for command in commands:
        assert main(command[1:]) == 0, (command, capsys.readouterr())
    assert "task(s)" in capsys.readouterr().out


def test_the_backtest_takes_type_too(tmp_path: Path) -> None:
    """The same sample backtested: without --type it is refused, with it read."""
    sample = tmp_path / "usage-sample.jsonl"
    topic_sample(sample)
    argv = ["backtest", "--events", str(sample), "--out", str(tmp_path / "out")]
    assert main(argv) != 0
    assert main([*argv, "--type", "usage"]) == 0
    assert (tmp_path / "out" / "report.json").is_file()
