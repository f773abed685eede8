"""Tasks still waiting when event time stops (quiet hours at night, a merge window, the
next day's capacity) are in no table and not in tasks.jsonl: one CSV top-up at night gave
`rules test` a task and `backtest` none, the count alone in the summary (analyst walk).
The report now says them by reason and channel, read from the deferral queue the sink
used (as the stream's), and the `--to` that lets event time run on to publish them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from moments.cli import main

from .test_backtest import DAY1, TopUp, write_rules

NIGHT = [
    TopUp("13900000001", "NJ", DAY1, 710, 150),  # 21:50: a manager call, held 30 min to merge
    TopUp("13900000002", "NJ", DAY1, 720, 30),  # 22:00: an SMS, quiet hours to 08:00
]


def _backtest(tmp_path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    rules = write_rules(tmp_path / "r.yaml")
    rules.write_text(rules.read_text().replace("quiet_hours: []", 'quiet_hours: ["22:00-08:00"]'))
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(orjson.dumps(t.event(n)) + b"\n" for n, t in enumerate(NIGHT)))
    out = tmp_path / "out"
    argv = ["backtest", "--events", str(history), "--rules", str(rules), "--out", str(out)]
    code = main([*argv, *flags])
    return code, orjson.loads((out / "report.json").read_bytes())


class TestWaitingAtEnd:
    def test_report_json_counts_them_by_reason_and_channel(self, tmp_path: Path) -> None:
        code, report = _backtest(tmp_path)
        assert code == 0
        assert report["summary"]["tasks"] == 0
        assert report["summary"]["waiting_at_end"] == 2
        assert report["summary"]["waiting_at_end_by"] == [
            {"reason": "merge_window", "channel": "manager", "tasks": 1},
            {"reason": "quiet_hours", "channel": "sms", "tasks": 1},
        ]

    def test_a_note_says_them_and_the_to_that_includes_them(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In the terminal and the shared files: how many, why, on which channel, and
        `--to` the day after the last is due (08:00 on day 2: --to day 3)."""
        monkeypatch.setenv("COLUMNS", "200")  # the summary's row on one line
        _, report = _backtest(tmp_path)
        printed = capsys.readouterr()
        said, err = (" ".join(text.split()) for text in (printed.out, printed.err))
        (note,) = [n for n in report["notes"] if "still waiting" in n]
        assert note == (
            "2 task(s) were still waiting when event time stopped at the last event "
            "(2026-11-10T22:00:00+08:00), by reason and channel: merge_window: manager 1; "
            "quiet_hours: sms 1. They are in neither tasks.jsonl nor the tasks per day: give "
            "--to 2026-11-12 (the last is due 2026-11-11T08:00:00+08:00) to let event time run "
            "on and publish them (a release may defer one again: a cap, capacity)."
        ), note
        markdown = (tmp_path / "out" / "report.md").read_text()
        assert f"> **Note:** {note}" in markdown
        row = "still waiting at the end | 2 (merge_window: manager 1; quiet_hours: sms 1)"
        assert row in markdown
        page = (tmp_path / "out" / "report.html").read_text()
        assert "2 (merge_window: manager 1; quiet_hours: sms 1)" in page
        assert "give --to 2026-11-12" in page
        assert "2 (merge_window: manager 1; quiet_hours: sms 1)" in said  # the summary
        assert "give --to 2026-11-12 (the last is due 2026-11-11T08:00:00+08:00)" in err

    def test_the_waiting_count_is_said_once(self, tmp_path: Path) -> None:
        """The partial-day note said "(2 task(s) still waited at the end)" beside the note
        of their own that says it with why and the `--to` that publishes them."""
        for flags in ((), ("--to", "2026-11-11T06:00:00+08:00")):
            _, report = _backtest(tmp_path, *flags)
            partial, waiting = report["notes"]
            assert partial.startswith("The "), partial  # the history's or the report's day
            assert "task(s)" not in partial, partial
            assert waiting.startswith("2 task(s) were still waiting"), waiting

    def test_the_to_it_names_publishes_them(self, tmp_path: Path) -> None:
        code, report = _backtest(tmp_path, "--to", "2026-11-12")
        assert code == 0
        assert report["summary"]["tasks"] == 2
        assert report["summary"]["waiting_at_end"] == 0
        assert report["summary"]["waiting_at_end_by"] == []
        assert not [n for n in report["notes"] if "still waiting" in n]

    def test_with_a_to_too_early_the_note_names_a_later_one(self, tmp_path: Path) -> None:
        """--to 06:00 on day 2: the SMS still waits for 08:00, and so does the call, whose
        merge window ended at 22:20, in the quiet hours."""
        _, report = _backtest(tmp_path, "--to", "2026-11-11T06:00:00+08:00")
        assert report["summary"]["tasks"] == 0
        (note,) = [n for n in report["notes"] if "still waiting" in n]
        assert note.startswith(
            "2 task(s) were still waiting when event time stopped at --to "
            "(2026-11-11T06:00:00+08:00), by reason and channel: quiet_hours: manager 1, "
            "sms 1. They are "
            "in neither tasks.jsonl nor the tasks per day: give --to 2026-11-12 (the last is "
            "due 2026-11-11T08:00:00+08:00)"
        ), note
