"""Edges of the history readers (`backtest`, `rules test`, `state seed`) left by the
earlier work on bad lines (tests/unit/test_unreadable_lines.py, test_untyped_lines.py):

- a line that is no JSON object was read at time 0, so `--to` never left it out, though
  it left out every other line dated after it: such a line is now placed at the time its
  top-level object still names, and one with no readable time is counted and named
  whatever the window (it cannot be placed; it is still a defect of the file);
- the `"type"` of a nested object chose the topic of a cut line: only the top-level
  object's counts;
- a line naming no type was told other words by the backtest than by `events check`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from moments.backtest_input import EventFile
from moments.cli import main
from moments.eventcheck import check_lines
from moments.models import EventType
from moments.rulecheck import MissingEventTypeError

from .test_unreadable_lines import topup


def said(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def test_a_nested_type_does_not_choose_the_topic_of_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    nested_first = b'{"device": {"type": "complaint"}, "type": "roaming", "event_id": "r'
    nested_only = b'{"event_id": "u1", "device": {"type": "complaint"}, "subscri'
    in_text = b'{"note": "\\"type\\": \\"complaint\\"", "event_id": "x'
    path.write_bytes(b"\n".join([topup(1), nested_first, nested_only, in_text, topup(2)]))
    events = list(EventFile(path))
    assert [e.event_type for e in events[1:4]] == [
        EventType.ROAMING,  # the top-level "type"
        EventType.USAGE,  # none at the top level: the file's default
        EventType.USAGE,
    ]
    assert [e.event_type for e in EventFile(path, EventType.TOPUP)][2] is EventType.TOPUP
    path.write_bytes(
        b"\n".join([topup(1), b'[{"type": "topup"}]', b'{"type": null, "t": "topup"', topup(2)])
    )
    # An array has no top-level object; a null type names none (not the next string).
    assert [e.event_type for e in EventFile(path)][1:3] == [EventType.USAGE] * 2


class TestWindow:
    """`--to` leaves out the lines dated from then on; a line with no readable time
    cannot be placed, and is counted and named whatever the window."""

    TO = "2026-11-10T15:00:00+08:00"

    def write(self, path: Path) -> Path:
        lines = [
            topup(1),  # 11:00
            topup(2)[:-20],  # 12:00, cut after its time: in the window
            topup(3),  # 13:00
            topup(4)[:30],  # cut before its time: cannot be placed
            topup(7)[:-20],  # 17:00, cut after its time: past --to
            topup(8)[:-1].replace(b'"type":"topup",', b"") + b"}",  # no type, 18:00
            b'{"event_id": "x"}',  # no type, no time
            topup(9),  # 19:00
        ]
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    def test_backtest_and_seed_agree(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")
        path = self.write(tmp_path / "h.jsonl")
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(path), "--to", self.TO, "--out", str(out)]) == 0
        summary = orjson.loads((out / "report.json").read_bytes())["summary"]
        assert summary["unreadable_lines"] == {"count": 2, "first": [f"{path}:2", f"{path}:4"]}
        assert summary["untyped_lines"] == {"count": 1, "first": [f"{path}:7"]}
        assert summary["dead_letters"] == {"invalid_json": 2}
        capsys.readouterr()
        argv = ["state", "seed", "--events", str(path), "--to", self.TO, "--dry-run"]
        assert main(argv) == 0
        text = said(capsys)
        assert "dead letters │ 2 " in text
        assert f"lines no JSON object (dead letters) │ 2: {path}:2, {path}:4 " in text
        assert f"lines with no event type (left out) │ 1: {path}:7 " in text

    def test_without_a_window_every_line_is_judged(self, tmp_path: Path) -> None:
        """`rules test` has no window (`--until` runs event time on, it cuts nothing), nor
        has a backtest without `--to`: every bad line is counted."""
        path = self.write(tmp_path / "h.jsonl")
        file = EventFile(path)
        assert len(list(file)) == 6
        assert (file.unreadable, file.untyped) == ([2, 4, 5], [6, 7])

    def test_a_cut_line_is_placed_at_the_time_it_still_names(self, tmp_path: Path) -> None:
        path = self.write(tmp_path / "h.jsonl")
        events = list(EventFile(path))
        iso = orjson.loads(topup(2))["occurred_at"]
        assert events[1].at == dt.datetime.fromisoformat(iso).timestamp()
        assert events[2].at > 0
        assert events[3].at == 0.0  # line 4 names no time


def test_a_line_naming_no_type_is_told_the_words_of_events_check(tmp_path: Path) -> None:
    """`events check` said "no event type: give --type (...)"; the backtest, `rules test`
    and `state seed` said `add "type": one of ... (got None)` of the same line."""
    path = tmp_path / "h.jsonl"
    for line in (b'{"type": null, "event_id": "x"}', b"null", b'{"type": "top-up"}'):
        path.write_bytes(line + b'\n{"event_id": "y"}\n')  # a JSON lines file of no type
        with path.open("rb") as lines:
            verdict = next(check_lines(lines, None))
        with pytest.raises(MissingEventTypeError) as refused:
            list(EventFile(path))
        assert str(refused.value).startswith(f"{path}:1: {verdict.message}; "), line
