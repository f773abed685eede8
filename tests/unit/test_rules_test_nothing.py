"""`moments rules test` without `--expect` fails a run that tested nothing: one whose
every event was refused exited 0, so a CI job whose cases were all malformed passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from moments.cli import main

CATALOG = Path(__file__).parents[2] / "src" / "rules" / "catalog" / "default.yaml"

GOOD = (
    '{"type":"usage","event_id":"u1","subscriber_id":"13800138001","kind":"data",'
    '"occurred_at":"2026-11-02T10:00:00+08:00","balance_after":5}\n'
)
BAD = '{"type":"usage","event_id":"bad%d","subscriber_id":"x"}\n'
PROFILE = (
    '{"type":"profile","event_id":"p1","subscriber_id":"13800138001",'
    '"occurred_at":"2026-11-01T10:00:00+08:00","tier":"gold"}\n'
)


class TestNothingEvaluated:
    def test_every_event_refused_fails_naming_why_and_the_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "cases.jsonl"
        events.write_text(BAD % 1 + BAD % 2)
        assert main(["rules", "test", str(CATALOG), "--events", str(events)]) == 1
        captured = capsys.readouterr()
        assert "2 event(s) refused:" in captured.out  # the report is still printed
        assert f"nothing was tested: each of the 2 event(s) of {events} was refused" in (
            captured.err
        )
        assert f"moments events check {events}" in captured.err

    def test_every_csv_row_refused_is_not_sent_to_events_check(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`moments events check` reads JSON lines only and refuses a CSV file: named as
        the fix of a CSV whose every row was refused, it sent the analyst to a command
        that said it does not read CSV. The reasons printed above are the rows' own."""
        events = tmp_path / "cases.csv"
        events.write_text("type,event_id,subscriber_id\nusage,bad1,x\nusage,bad2,x\n")
        assert main(["rules", "test", str(CATALOG), "--events", str(events)]) == 1
        said = capsys.readouterr().err
        assert f"nothing was tested: each of the 2 event(s) of {events} was refused" in said
        assert "events check" not in said
        assert "fix the rows" in said

    def test_refused_events_beside_valid_profiles_still_fail(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The `--profiles` snapshot is applied, but no event of `--events` was judged."""
        events = tmp_path / "cases.jsonl"
        events.write_text(BAD % 1)
        profiles = tmp_path / "crm.jsonl"
        profiles.write_text(PROFILE)
        args = ["rules", "test", str(CATALOG), "--events", str(events)]
        assert main([*args, "--profiles", str(profiles)]) == 1
        assert "each of the 1 event(s)" in capsys.readouterr().err

    def test_one_event_judged_is_a_test(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "cases.jsonl"
        events.write_text(BAD % 1 + GOOD)
        assert main(["rules", "test", str(CATALOG), "--events", str(events)]) == 0
        assert "nothing was tested" not in capsys.readouterr().err

    def test_an_empty_file_fails_unless_profiles_are_tested(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "none.jsonl"
        events.write_text("")
        args = ["rules", "test", str(CATALOG), "--events", str(events)]
        assert main(args) == 1
        assert f"nothing was tested: {events} holds no event" in capsys.readouterr().err
        profiles = tmp_path / "crm.jsonl"
        profiles.write_text(PROFILE)
        assert main([*args, "--profiles", str(profiles), "--to", "2026-11-03"]) == 0

    def test_an_expectation_of_refusals_decides_instead(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A case may test that bad events are refused: `--expect refused=N` says so."""
        events = tmp_path / "cases.jsonl"
        events.write_text(BAD % 1)
        args = ["rules", "test", str(CATALOG), "--events", str(events)]
        assert main([*args, "--expect", "refused=1"]) == 0
        assert "nothing was tested" not in capsys.readouterr().err
