"""What `moments backtest` says of its counts and of a stop: "1 tasks reported" read as a
slip (new user's run); the project's lines count with "(s)" (`1 task(s) were still
waiting`, `1 day(s)`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

from .test_backtest import write_history, write_rules


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())


class TestSummaryCounts:
    """The summary line counts events and tasks as the other lines do: "(s)"."""

    def test_one_event_and_one_task(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        history = write_history(tmp_path / "h.jsonl")  # 7 top-ups, 2026-11-10 and 11
        one = tmp_path / "one.jsonl"
        one.write_text(history.read_text().splitlines()[0] + "\n")  # a big top-up
        rules = write_rules(tmp_path / "r.yaml")
        argv = ["backtest", "--events", str(one), "--rules", str(rules)]
        assert main([*argv, "--to", "2026-11-11", "--out", str(tmp_path / "out")]) == 0
        said = _said(capsys)
        assert "1 event(s) in " in said, said
        assert ", 1 task(s) reported; wrote " in said, said
        assert "1 tasks" not in said
        assert "1 events" not in said  # the progress line's too
