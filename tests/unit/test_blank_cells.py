"""A CSV row with a blank cell in a column its event needs (a top-up's `amount`, any
event's `occurred_at`): the refusal says the cell is blank, naming the column and the
line, in `moments rules test` (each refusal) and `moments backtest` (the most common
ones). Both said pydantic's "amount: Field required", of a column the file has, and the
backtest pointed at `moments events check`, which reads no CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.backtest_input import EventFile, blank_said
from moments.cli import main

from .test_unreadable_lines import CATALOG

HEADER = "type,event_id,subscriber_id,occurred_at,amount,channel,region\n"
ROWS = [
    "topup,b1,13900000007,2026-11-10T10:00:00+08:00,,app,\n",  # blank amount (and region)
    "topup,b2,13900000007,2026-11-10T11:00:00+08:00,20,app,NJ\n",
    "topup,b3,13900000008,,20,app,NJ\n",  # blank occurred_at
    "topup,b4,13900000009,2026-11-10T12:00:00+08:00,,,NJ\n",  # blank amount and channel
]


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "h.csv"
    path.write_text(HEADER + "".join(ROWS))
    return path


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr()
    return " ".join((out.out + out.err).split())


def test_rules_test_names_the_blank_cell_its_column_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _csv(tmp_path)
    main(["rules", "test", str(CATALOG), "--events", str(path)])
    said = _said(capsys)
    assert "Field required" not in said
    assert f"amount: blank cell in column amount ({path}:2)" in said
    assert f"occurred_at: blank cell in column occurred_at ({path}:4)" in said
    assert f"amount: blank cell in column amount ({path}:5)" in said
    assert f"channel: blank cell in column channel ({path}:5)" in said


def test_backtest_names_the_blank_cell_its_column_and_first_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # a long temporary path wraps before its ')'
    path = _csv(tmp_path)
    argv = ["backtest", "--rules", str(CATALOG), "--events", str(path)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    said = _said(capsys)
    assert "Field required" not in said
    assert f"1 x topup: amount: blank cell in column amount (first at {path}:2)" in said
    assert f"1 x topup: occurred_at: blank cell in column occurred_at (first at {path}:4)" in said


def test_an_optional_blank_cell_is_no_refusal_and_a_json_line_is_told_as_before(
    tmp_path: Path,
) -> None:
    """A blank `region` is an event without one (taken); a JSON line lacking `amount` has
    no cell: the worker's words stay."""
    events = list(EventFile(_csv(tmp_path)))
    assert [e.blank.columns if e.blank else () for e in events] == [
        ("amount",),
        (),
        ("occurred_at",),
        ("amount", "channel"),
    ]
    lines = tmp_path / "h.jsonl"
    lines.write_text(
        '{"type":"topup","event_id":"j","subscriber_id":"13900000007",'
        '"occurred_at":"2026-11-10T10:00:00+08:00","channel":"app"}\n'
    )
    [event] = EventFile(lines)
    assert event.blank is None
    assert blank_said("amount: Field required", None) == "amount: Field required"
