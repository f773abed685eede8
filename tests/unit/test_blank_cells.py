"""A CSV row with a blank cell in a column its event needs (a top-up's `amount`, any
event's `occurred_at`): the refusal says the cell is blank, naming the column and the
line, in `moments rules test` (each refusal) and `moments backtest` (the most common
ones). Both said pydantic's "amount: Field required", of a column the file has, and the
backtest pointed at `moments events check`, which reads no CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.backtest_input import Blank, EventFile, blank_said
from moments.cli import main

from .catalogs import default_rules
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


SHORT = [
    "topup,s1,13900000007,2026-11-10T10:00:00+08:00\n",  # 4 cells: amount, channel, region gone
    "topup,s2,13900000007,2026-11-10T11:00:00+08:00,,app\n",  # 6: a blank amount, no region
    "topup,s3,13900000007,2026-11-10T12:00:00+08:00,,\n",  # 6: blank amount and channel
    "topup,s4,13900000008,2026-11-10T13:00:00+08:00,20\n",  # 5: channel gone
]


class TestShortRows:
    """A row with fewer cells than the header was told "Field required" for the columns
    past its last cell, which the file has: it is told the row has N cells where the
    header has M, with its line and the fix, once however many columns it lacks."""

    def test_rules_test_tells_the_cells_of_the_row_and_the_header(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "h.csv"
        path.write_text(HEADER + "".join(SHORT))
        main(["rules", "test", str(CATALOG), "--events", str(path)])
        said = _said(capsys)
        assert "Field required" not in said
        fix = "write a cell for each column of the header, in its order, an empty one (,,)"
        assert (
            f"(event_id s1): the row has 4 cell(s) where the header has 7 ({path}:2): {fix}" in said
        )
        assert f"the row has 5 cell(s) where the header has 7 ({path}:5): {fix}" in said
        assert f"the row has 6 cell(s) where the header has 7 ({path}:3): {fix}" in said
        assert said.count("the row has") == 4  # s2 lacks region only: ragged, refused too

    def test_backtest_tells_it_at_the_first_row_alike(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")
        path = tmp_path / "h.csv"
        path.write_text(HEADER + "".join(SHORT))
        argv = ["backtest", "--rules", str(CATALOG), "--events", str(path)]
        assert main([*argv, "--out", str(tmp_path / "o")]) == 0
        said = _said(capsys)
        assert "Field required" not in said
        assert (
            f"1 x topup: the row has 4 cell(s) where the header has 7 (first at {path}:2)" in said
        )


class TestRaggedRows:
    """A row with more cells than the header lost the extra ones, and one with fewer that
    left out only optional columns was taken, its values maybe in other columns: both
    made tasks without a word. A ragged row is refused, in each command that reads CSV."""

    ROWS = (
        "topup,r1,13900000007,2026-11-10T10:00:00+08:00,20,app,NJ,,extra\n",  # 9 cells
        "topup,r2,13900000008,2026-11-10T11:00:00+08:00,20,app\n",  # 6: region gone
        "topup,r3,13900000009,2026-11-10T12:00:00+08:00,20,app,NJ\n",  # as the header
    )

    def _path(self, tmp_path: Path) -> Path:
        path = tmp_path / "h.csv"
        path.write_text(HEADER + "".join(self.ROWS))
        return path

    def test_rules_test_refuses_a_long_and_a_short_row(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = self._path(tmp_path)
        main(["rules", "test", str(CATALOG), "--events", str(path)])
        said = _said(capsys)
        assert f"(event_id r1): the row has 9 cell(s) where the header has 7 ({path}:2)" in said
        assert f"(event_id r2): the row has 6 cell(s) where the header has 7 ({path}:3)" in said
        assert "event_id r3" not in said

    def test_backtest_counts_them_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")
        path = self._path(tmp_path)
        argv = ["backtest", "--rules", str(CATALOG), "--events", str(path)]
        assert main([*argv, "--out", str(tmp_path / "o")]) == 0
        said = _said(capsys)
        said_row = f"the row has 9 cell(s) where the header has 7 (first at {path}:2)"
        assert f"1 x topup: {said_row}" in said
        said_row = f"the row has 6 cell(s) where the header has 7 (first at {path}:3)"
        assert f"1 x topup: {said_row}" in said

    def test_state_seed_refuses_them_by_file_and_line(self, tmp_path: Path) -> None:
        from moments.seed import build_states

        path = self._path(tmp_path)
        seeded = build_states(default_rules(), EventFile(path))
        assert seeded.dead_letters == {"invalid_event": 2}
        assert [(where, told[:38]) for where, _, told in seeded.refused] == [
            (f"{path}:2", "topup: the row has 9 cell(s) where the"),
            (f"{path}:3", "topup: the row has 6 cell(s) where the"),
        ]

    def test_the_refusals_are_listed_in_the_order_of_their_rows(self, tmp_path: Path) -> None:
        """A ragged row's refusal is listed at its row, not ahead of the batch's others."""
        from moments.seed import build_states

        path = tmp_path / "h.csv"
        path.write_text(HEADER + ROWS[0] + self.ROWS[0])  # a blank amount, then a long row
        seeded = build_states(default_rules(), EventFile(path))
        assert [where for where, _, _ in seeded.refused] == [f"{path}:2", f"{path}:3"]


class TestOneMessage:
    """A blank cell's refusal carried the blank-cell words and, after them, the fix of a
    field left out ("a topup event must have amount: write it"), as if the column were
    missing: one message, whose fix is the cell's."""

    FIX = (
        "(a topup event must have a value there: fill the cell in; each type's fields are "
        "in docs/producing-events.md and schemas/topup-event.schema.json)"
    )

    def test_rules_test_tells_the_blank_cell_and_its_fix_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = _csv(tmp_path)
        main(["rules", "test", str(CATALOG), "--events", str(path)])
        said = _said(capsys)
        assert "must have amount" not in said
        assert "write it" not in said
        assert f"amount: blank cell in column amount ({path}:2) {self.FIX}" in said
        assert (
            f"amount: blank cell in column amount ({path}:5); channel: blank cell in column "
            f"channel ({path}:5) (a topup event must have a value there: fill the cells in;"
        ) in said

    def test_backtest_tells_it_once_at_the_first_row_alike(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")
        path = _csv(tmp_path)
        argv = ["backtest", "--rules", str(CATALOG), "--events", str(path)]
        assert main([*argv, "--out", str(tmp_path / "o")]) == 0
        said = _said(capsys)
        assert "must have amount" not in said
        first = f"1 x topup: amount: blank cell in column amount (first at {path}:2)"
        assert f"{first} {self.FIX}" in said

    def test_a_field_the_file_has_no_column_for_keeps_its_own_fix(self) -> None:
        """A blank `amount` in a file without a `channel` column: the cell is told to be
        filled in, the field to be written."""
        message = (
            "amount: Field required; channel: Field required (a topup event must have "
            "amount, channel: write them; each type's fields are in docs/producing-events.md "
            "and schemas/topup-event.schema.json)"
        )
        assert blank_said(message, Blank("h.csv:2", ("amount",))) == (
            "amount: blank cell in column amount (h.csv:2); channel: Field required (a topup "
            "event must have a value there: fill the cell in; it must have channel too: write "
            "it; each type's fields are in docs/producing-events.md and "
            "schemas/topup-event.schema.json)"
        )
