"""A backtest report's table of counts with no row says so in a line: "Merged" printed its
headers alone, in the terminal and the files, which read as a table cut off."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

EVENT = (
    '{"type":"usage","event_id":"u1","subscriber_id":"13800138001","kind":"data",'
    '"occurred_at":"2026-11-02T10:00:00+08:00","balance_after":5}\n'
)
MERGED = "None were merged: no moment joined a waiting task."


class TestEmptyTables:
    @pytest.fixture
    def said(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> tuple[str, Path]:
        """One low balance: one task, nothing merged, suppressed or deferred."""
        monkeypatch.setenv("COLUMNS", "400")
        events = tmp_path / "e.jsonl"
        events.write_text(EVENT)
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(events), "--out", str(out)]) == 0
        return capsys.readouterr().out, out

    def test_the_terminal_says_none_were_merged(self, said: tuple[str, Path]) -> None:
        terminal, _ = said
        merged = terminal.split("Merged: moments that joined", 1)[1].split("Top rules", 1)[0]
        assert MERGED in merged
        assert "moment type of the one that joined" not in merged  # no header left alone
        assert "None were suppressed" in terminal
        assert "None were deferred" in terminal

    def test_the_files_say_it_too(self, said: tuple[str, Path]) -> None:
        _, out = said
        md = (out / "report.md").read_text()
        merged = md.split("## Merged: ", 1)[1].split("## ", 1)[0]
        assert MERGED in merged
        assert "|" not in merged
        page = (out / "report.html").read_text()
        assert f"<p>{MERGED}</p>" in page
        assert "moment type of the one that joined" not in page

    def test_a_table_with_rows_is_still_a_table(self, said: tuple[str, Path]) -> None:
        _, out = said
        md = (out / "report.md").read_text()
        assert "| rule | tasks | merged into others |" in md
        assert "| low_balance | 1 | 0 |" in md


def test_the_deferred_table_counts_deferrals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision a row, not a task: its column said `tasks`, and a task held by quiet
    hours and again by a cap counted twice under it (more "tasks" deferred than sent)."""
    monkeypatch.setenv("COLUMNS", "400")
    events = tmp_path / "e.jsonl"
    events.write_text(EVENT.replace("10:00:00", "02:00:00"))  # in quiet hours: held
    out = tmp_path / "out"
    assert main(["backtest", "--events", str(events), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    deferred = md.split("## Deferred by reason", 1)[1].split("## ", 1)[0]
    assert "| reason | deferrals |" in deferred
    assert "| quiet_hours | 1 |" in deferred


def compared_with_the_same_rules(
    tmp_path: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """`EVENT` backtested with the packaged catalog as both rule sets (`--baseline-rules`),
    its report written to `out`: the terminal's text."""
    events = tmp_path / "e.jsonl"
    events.write_text(EVENT)
    catalog = str(Path(__file__).parents[2] / "src/rules/catalog/default.yaml")
    args = ["backtest", "--events", str(events), "--out", str(out), "--baseline-rules", catalog]
    assert main(args) == 0
    return capsys.readouterr().out


def test_a_comparison_with_no_moment_type_changed_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `--baseline-rules` and the same moments from both rule sets, "Moments by type"
    was left out of the comparison without a word, while the other tables say "None...":
    it reads as a table lost, not as nothing changed."""
    monkeypatch.setenv("COLUMNS", "400")
    out = tmp_path / "out"
    terminal = compared_with_the_same_rules(tmp_path, out, capsys)
    title = "Moments by type, baseline -> candidate (the changed ones)"
    said = "No moment type changed: each was detected, suppressed and published as often"
    assert said in terminal.split(title, 1)[1]
    md = (out / "report.md").read_text()
    assert said in md.split(f"## {title}", 1)[1]
    assert "| moment type | detected |" not in md
    assert said in (out / "report.html").read_text()


def test_a_comparison_with_no_task_changed_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `--baseline-rules` and no task of both rule sets differing, "What changed in the
    changed tasks" was left out without a word (analyst brief): the analyst could not
    tell "nothing changed" from a table lost. It says so, in the terminal and the files."""
    monkeypatch.setenv("COLUMNS", "400")
    out = tmp_path / "out"
    terminal = compared_with_the_same_rules(tmp_path, out, capsys)
    title = "What changed in the changed tasks"
    said = "No task changed: every task both rule sets publish is the same, field for field"
    assert said in " ".join(terminal.split(title, 1)[1].split())
    md = (out / "report.md").read_text()
    assert said in md.split(f"## {title}", 1)[1]
    assert "| rule | field | tasks |" not in md
    assert said in (out / "report.html").read_text()
