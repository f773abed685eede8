"""A backtest whose report period holds no event of the history (every event before
`--from`, every one from `--to` on, or files with none) exited 0 with an empty report
and a warning among the tables: a script took the zeros for a quiet week. It now says
how many events the files hold, their dates, the option given and the fix, and exits 1,
as `events check` of an empty file does."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from moments.cli import main

from .test_backtest import write_history, write_rules


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())


class TestEmptyPeriod:
    def _args(self, tmp_path: Path) -> list[str]:
        history = write_history(tmp_path / "h.jsonl")  # 7 top-ups, 2026-11-10 and 11
        rules = write_rules(tmp_path / "r.yaml")
        out = str(tmp_path / "out")
        return ["backtest", "--events", str(history), "--rules", str(rules), "--out", out]

    def test_every_event_before_from_fails_naming_the_events_and_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The count, the first and last event's dates, the --from given, and an earlier
        --from or a longer history as the fix."""
        assert main([*self._args(tmp_path), "--from", "2027-01-01"]) == 1
        said = _said(capsys)
        assert "nothing to report: every event is before --from 2027-01-01" in said, said
        assert "the 7 events of the history run from 2026-11-10T10:00:00+08:00" in said
        assert "to 2026-11-11T10:00:00+08:00" in said
        assert "Give an earlier --from (2026-11-11 or before)" in said
        assert "or a history that reaches past 2027-01-01" in said
        # No warm-up advice about a report that does not exist.
        assert "warm-up before --from" not in said

    def test_every_event_from_to_on_fails_naming_the_events_and_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main([*self._args(tmp_path), "--to", "2026-11-01"]) == 1
        said = _said(capsys)
        assert "nothing to report: every event is from --to 2026-11-01 on" in said, said
        assert "the 7 events of the history run from 2026-11-10T10:00:00+08:00" in said
        assert "Give a later --to (after 2026-11-10)" in said
        assert "or a history that begins before 2026-11-01" in said

    def test_the_message_is_in_the_report_too(self, tmp_path: Path) -> None:
        """report.json still says it among its warnings, for a script that reads it."""
        assert main([*self._args(tmp_path), "--from", "2027-01-01"]) == 1
        report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
        assert any("nothing to report" in w for w in report["warnings"]), report["warnings"]

    def test_files_with_no_event_fail(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        empty = tmp_path / "e.jsonl"
        empty.write_bytes(b"")
        argv = ["backtest", "--events", str(empty), "--out", str(tmp_path / "out")]
        assert main(argv) == 1
        said = _said(capsys)
        assert f"nothing to report: {empty} holds no event" in said, said

    def test_a_period_with_events_still_exits_0(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main([*self._args(tmp_path), "--from", "2026-11-11"]) == 0
        assert "nothing to report" not in _said(capsys)

    def test_events_before_live_from_only_are_not_said_before_from(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A cut-over after the history, --from within it: the events are after --from,
        and what is said is that they are all before --live-from, where the report begins."""
        argv = [*self._args(tmp_path), "--from", "2026-11-10", "--live-from", "2027-01-01"]
        assert main(argv) == 1
        said = _said(capsys)
        assert "every event is before --from" not in said
        assert "nothing to report: every event is before --live-from 2027-01-01" in said, said

    @pytest.mark.parametrize("to", [None, "2027-01-05"])
    def test_every_event_before_live_from_fails_naming_the_events_and_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], to: str | None
    ) -> None:
        """A cut-over after the last event exited 0 with a warning among empty tables, as
        --from after every event did: it now fails the same way, with or without a --to
        that runs event time on past it."""
        argv = [*self._args(tmp_path), "--live-from", "2027-01-01"]
        assert main([*argv, *(["--to", to] if to else [])]) == 1
        said = _said(capsys)
        assert "nothing to report: every event is before --live-from 2027-01-01" in said, said
        assert "(2027-01-01T00:00:00+08:00)" in said
        assert "the 7 events of the history run from 2026-11-10T10:00:00+08:00" in said
        assert "to 2026-11-11T10:00:00+08:00" in said
        assert "Give an earlier --live-from (2026-11-11 or before)" in said
        assert "or a history that reaches past 2027-01-01" in said
        report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
        assert any("every event is before --live-from" in w for w in report["warnings"])

    def test_a_file_cut_short_is_said_beside_the_empty_period(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The cut may be why the period is empty: it is said too, not only in the report."""
        import gzip

        history = write_history(tmp_path / "h.jsonl")
        cut = tmp_path / "h.jsonl.gz"
        cut.write_bytes(gzip.compress(history.read_bytes())[:-12])
        argv = ["backtest", "--events", str(cut), "--out", str(tmp_path / "o")]
        assert main([*argv, "--from", "2027-01-01"]) == 1
        said = _said(capsys)
        assert "the file ends early" in said, said
        assert "nothing to report: every event is before --from 2027-01-01" in said
