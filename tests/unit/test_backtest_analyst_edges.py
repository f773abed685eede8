"""Edges an analyst met running `moments backtest` on their own files:

- `--top 0` printed an empty "Top rules" table and `--top -1` one without its last rule
  (a slice `[:-1]`), without a word: a number of rules below 1 is refused with the fix;
- a file named in capitals (`EVENTS.CSV`, `EVENTS.JSONL.GZ`, as Windows tools and
  mainframe exports write them) was read as JSON lines and uncompressed: refused as "no
  JSON lines file: name a CSV file .csv" (it was), or read as binary junk. The
  extension is read whatever its case;
- a CSV header written as a spreadsheet writes it (`Type`, `Region`, `Balance_After`,
  `type ` with a space before the comma) named no field of the contract: `Type` stopped
  the run ("add a `type` column", beside one), a required field's every row was refused
  ("event_id: Field required") and an optional one was dropped without a word (the
  region: every task under `(none)`, the capacity of no region; `balance_after`: no low
  balance ever). A header cell is the field it names whatever its case and spaces, and
  cells separated by `;` or a tab are read (one column "add a `type` column" before);
- `rules test --expect low_balance=1 --expect low_balance=0` kept the last count and
  dropped the first without a word: a test file repeating a rule passed on either;
- `--from 20261207` was told to add an offset (`20261207+08:00`, refused in its turn);
- `events check` of a history dated ahead of the machine's clock (every file `moments
  simulate --to-file` writes) refused nearly every line as `future`, telling each to
  "check the producer's clock": it now says once that a history is checked with `--now`;
- `rules test` said nothing while it ran (a minute on a simulated week), nor of a `--to`
  before its last event (read as the backtest's, it left nothing out);
- a folder given to `--events` was "no such file", an `--out` that cannot be written
  was said after the whole replay, and a file given twice was replayed twice.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from moments.backtest_input import EventFile
from moments.cli import main
from moments.cliparts import parse_when
from moments.exceptions import ConfigError
from moments.models import EventType
from moments.progresslines import PROGRESS_EVERY_S
from moments.rulecheck import EventFileError

from .rules.helpers import BIRTHDAY, NO_ACTIVITY, NO_GATES, at, ev
from .test_unreadable_lines import CATALOG, topup


class TestTop:
    @pytest.mark.parametrize("top", ["0", "-1"])
    def test_a_top_below_one_is_refused_with_the_fix(
        self, tmp_path: Path, top: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Not a table short of rules: argparse's exit 2, saying what to write."""
        events = tmp_path / "e.jsonl"
        events.write_bytes(topup(1) + b"\n")
        argv = ["backtest", "--events", str(events), "--top", top, "--out", str(tmp_path / "o")]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "--top" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


CSV = b"type,event_id,subscriber_id,occurred_at,amount,channel\r\n" + b"".join(
    f"topup,t{n},1380000000{n},2026-11-10T1{n}:00:00+08:00,50,app\r\n".encode() for n in range(1, 4)
)
JSONL = b"".join(topup(n) + b"\n" for n in range(1, 4))


class TestSuffixCase:
    @pytest.mark.parametrize(
        ("name", "data"),
        [
            ("EVENTS.CSV", CSV),
            ("Events.Csv", CSV),
            ("EVENTS.CSV.GZ", gzip.compress(CSV)),
            ("events.csv.GZ", gzip.compress(CSV)),
            ("EVENTS.JSONL.GZ", gzip.compress(JSONL)),
        ],
    )
    def test_the_extension_is_read_whatever_its_case(
        self, tmp_path: Path, name: str, data: bytes
    ) -> None:
        """Three top-ups, read as the lower-case name reads them."""
        path = tmp_path / name
        path.write_bytes(data)
        events = list(EventFile(path))
        assert [e.event_type for e in events] == [EventType.TOPUP] * 3
        assert [e.key for e in events] == [f"1380000000{n}".encode() for n in range(1, 4)]

    def test_a_backtest_of_a_capital_csv_reports_its_events(self, tmp_path: Path) -> None:
        path = tmp_path / "EXPORT.CSV"
        path.write_bytes(CSV)
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(path), "--out", str(out)]) == 0
        assert b'"events":3' in (out / "report.json").read_bytes().replace(b" ", b"")

    def test_events_check_reads_a_capital_gz_as_gzip(self, tmp_path: Path) -> None:
        path = tmp_path / "EVENTS.JSONL.GZ"
        path.write_bytes(gzip.compress(JSONL))
        assert main(["events", "check", str(path)]) == 0

    def test_events_check_refuses_a_capital_csv_as_it_does_a_csv(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "EXPORT.CSV"
        path.write_bytes(CSV)
        assert main(["events", "check", str(path)]) == 2
        said = " ".join(capsys.readouterr().err.split())
        assert "a CSV export is read by `moments backtest`" in said


RULE = """
  - id: {id}
    description: Any top-up
    on: [topup]
    condition: {{field: amount, gte: {amount}}}
    task: {{family: anomaly, type: {id}, channel: sms, priority: 4, action: thanks,
           ttl: 24h, description: Thanks}}
"""


class TestPolicyOfTwoCatalogs:
    """`--baseline-rules`: one dispatch policy serves both runs, so an `overflow:` key
    may name a rule of either catalog. A key naming the rule the candidate removes (the
    production policy's) stopped the comparison (`no rule id 'legacy' in the rules`), and
    dropping it from the policy ran the baseline under another policy than production's."""

    def write(self, tmp_path: Path, overflow: str) -> list[str]:
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        baseline = tmp_path / "baseline.yaml"
        baseline.write_text(
            "rules:" + RULE.format(id="thanks", amount=1) + RULE.format(id="legacy", amount=40)
        )
        candidate = tmp_path / "candidate.yaml"
        candidate.write_text("rules:" + RULE.format(id="thanks", amount=1))
        policy = tmp_path / "policy.yaml"
        policy.write_text(f"overflow:\n  {overflow}: {{policy: drop}}\n")
        return [
            "backtest", "--events", str(events), "--rules", str(candidate),
            "--baseline-rules", str(baseline), "--policy", str(policy),
            "--out", str(tmp_path / "out"),
        ]  # fmt: skip

    def test_a_key_of_the_rule_the_candidate_removes_is_taken_and_said(
        self, tmp_path: Path
    ) -> None:
        assert main(self.write(tmp_path, "legacy")) == 0
        report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
        assert report["comparison"]["per_rule"] == [
            {"rule_id": "legacy", "added": 0, "removed": 3, "changed": 0, "rule": "removed"}
        ]
        said = [w for w in report["warnings"] if "legacy" in w]
        assert len(said) == 1
        assert "overflow.legacy" in said[0]
        assert "only the baseline rules" in said[0]

    def test_a_key_of_neither_catalog_is_still_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # 1, a file read and found wanting (README, exit codes); it was 2, as a setting
        assert main(self.write(tmp_path, "legacyy")) == 1
        said = " ".join(capsys.readouterr().err.split())
        assert "overflow.legacyy: no rule id 'legacyy'" in said
        assert "did you mean 'legacy'?" in said


def write_three_days(tmp_path: Path) -> Path:
    """Three days (2026-11-10 to 12) of 11 first top-ups each, one an hour from 09:30 to
    19:30 (outside quiet hours)."""
    lines = [
        orjson.dumps(
            {
                "type": "topup",
                "event_id": f"t{day}{hour}",
                "subscriber_id": f"13800{day}{hour:02d}000",
                "occurred_at": f"2026-11-1{day}T{hour:02d}:30:00+08:00",
                "amount": 50,
                "channel": "app",
            }
        )
        for day in range(3)
        for hour in range(9, 20)
    ]
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    return events


def three_days_backtest(tmp_path: Path, *flags: str) -> dict[str, Any]:
    """The report of a backtest, with `flags`, of `write_three_days`."""
    events = write_three_days(tmp_path)
    out = tmp_path / "out"
    assert main(["backtest", "--events", str(events), *flags, "--out", str(out)]) == 0
    report: dict[str, Any] = orjson.loads((out / "report.json").read_bytes())
    return report


class TestLiveFromDays:
    """`--live-from` without `--from`: the report's days begin at the cut-over. They
    began at the first event, so each day before it was a row of zeros that the means
    per day counted: two days of warm-up and one live day showed a third of the live
    day's tasks as the mean a day, in a rehearsal of what going live would bring."""

    def run(self, tmp_path: Path, live_from: str) -> dict[str, Any]:
        return three_days_backtest(tmp_path, "--live-from", live_from)

    def test_the_days_before_the_cut_over_are_no_days_of_the_report(self, tmp_path: Path) -> None:
        report = self.run(tmp_path, "2026-11-12")
        assert report["days"] == ["2026-11-12"]
        assert report["partial_days"] == {"2026-11-12": "to 19:30"}
        assert report["tasks_per_day"]["family"] == [
            {"day": "2026-11-12", "family": "first_time", "tasks": 11}
        ]

    def test_the_tables_count_the_live_days_only(self, tmp_path: Path) -> None:
        """The tables read from the counters (shadow moments, suppressed, deferred,
        merged) counted from the first event: every moment before the cut-over was listed
        in "Shadow rules: what they would have done", 22 first top-ups of the two days
        before, beside 11 tasks of the live day."""
        report = self.run(tmp_path, "2026-11-12")
        assert report["shadow"] == []
        summary = report["summary"]
        assert summary["events"] == 11
        assert summary["events_before_live_from"] == 22
        tasks = sum(r["tasks"] for r in report["tasks_per_day"]["family"])
        assert tasks == 11

    def test_every_event_before_the_cut_over_is_said(self, tmp_path: Path) -> None:
        """An empty report period: the command fails (`test_backtest_empty_period`), and
        report.json says why, its tables empty (no moment before it listed as a shadow's)."""
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(write_three_days(tmp_path)), "--out", str(out)]
        assert main([*argv, "--live-from", "2026-11-20"]) == 1
        report = orjson.loads((out / "report.json").read_bytes())
        assert report["summary"]["events"] == 0
        assert report["shadow"] == []
        assert any("every event is before --live-from" in w for w in report["warnings"])

    def test_a_cut_over_within_a_day_makes_it_a_day_in_part(self, tmp_path: Path) -> None:
        report = self.run(tmp_path, "2026-11-11T14:00:00+08:00")
        assert report["days"] == ["2026-11-11", "2026-11-12"]
        assert report["partial_days"] == {"2026-11-11": "from 14:00", "2026-11-12": "to 19:30"}


class TestLiveFromWithFrom:
    """`--live-from` and `--from` both given: the report begins at the later of the two.
    A cut-over after `--from` (the warm-up's end) rehearses going live then, its state
    built from the first event: no task before it. One before `--from` leaves `--from`
    the report's start, the days between a warm-up whose tasks are not reported."""

    def test_a_cut_over_after_from_begins_the_report(self, tmp_path: Path) -> None:
        report = three_days_backtest(tmp_path, "--from", "2026-11-11", "--live-from", "2026-11-12")
        summary = report["summary"]
        assert summary["report_start"] == "2026-11-12T00:00:00+08:00"
        assert report["days"] == ["2026-11-12"]
        assert report["tasks_per_day"]["family"] == [
            {"day": "2026-11-12", "family": "first_time", "tasks": 11}
        ]
        assert summary["tasks"] == 11
        assert summary["events"] == 11
        assert (summary["warmup_events"], summary["events_before_live_from"]) == (11, 22)
        assert report["shadow"] == []  # the moments before the cut-over are the warm-up's
        # Both as given: the summary's `report from` was the cut-over, --from said nowhere
        assert (report["run"]["--from"], report["run"]["--live-from"]) == (
            "2026-11-11",
            "2026-11-12",
        )

    def test_its_warm_up_is_measured_to_the_cut_over(self, tmp_path: Path) -> None:
        """The warning measured the warm-up to --from: "--from is at or before the first
        event: there is no warm-up" of a cut-over after two days of history, or a 0.6
        days' warm-up of one after 1.6 days, and told to move --from, which begins no
        report here."""
        early = three_days_backtest(tmp_path, "--from", "2026-11-09", "--live-from", "2026-11-12")
        (warning,) = early["warnings"]
        assert warning.startswith("The warm-up before --live-from is 1.6 days, shorter than")
        assert "--from" not in warning.replace("--live-from", "")
        later = three_days_backtest(tmp_path, "--from", "2026-11-11", "--live-from", "2026-11-12")
        assert later["warnings"] == [warning]

    def test_a_cut_over_before_from_leaves_the_report_at_from(self, tmp_path: Path) -> None:
        report = three_days_backtest(tmp_path, "--from", "2026-11-12", "--live-from", "2026-11-11")
        summary = report["summary"]
        assert summary["report_start"] == "2026-11-12T00:00:00+08:00"
        assert report["days"] == ["2026-11-12"]
        assert (summary["warmup_events"], summary["events_before_live_from"]) == (22, 11)
        assert summary["events"] == 11
        (warning,) = report["warnings"]
        assert warning.startswith("The warm-up before --from is 1.6 days, shorter than")


class TestCsvHeader:
    ROWS = "".join(
        f"topup,t{n},1380000000{n},2026-11-10T1{n}:00:00+08:00,50,app,SH,5\r\n" for n in range(1, 4)
    )

    @pytest.mark.parametrize(
        "head",
        [
            "Type,Event_ID,Subscriber_ID,Occurred_At,Amount,Channel,Region,Balance_After",
            "TYPE ,event_id , subscriber_id,occurred_at,amount,channel,region ,balance_after",
        ],
    )
    def test_a_header_cell_is_its_field_whatever_its_case_and_spaces(
        self, tmp_path: Path, head: str
    ) -> None:
        path = tmp_path / "export.csv"
        path.write_text(head + "\r\n" + self.ROWS)
        docs = [orjson.loads(e.value) for e in EventFile(path)]
        assert [d["region"] for d in docs] == ["SH"] * 3
        assert [d["balance_after"] for d in docs] == ["5"] * 3
        assert [d["event_id"] for d in docs] == ["t1", "t2", "t3"]

    def test_two_cells_naming_one_field_are_refused_naming_both(self, tmp_path: Path) -> None:
        path = tmp_path / "export.csv"
        path.write_text(
            "type,event_id,subscriber_id,occurred_at,amount,channel,region,Region\r\n" + self.ROWS
        )
        with pytest.raises(EventFileError, match=r"export.csv:1: columns 'region' and 'Region'"):
            list(EventFile(path))

    @pytest.mark.parametrize(
        ("column", "said"),
        [
            (
                "Subscriber",
                "'Subscriber' names no field of the events: did you mean 'subscriber_id'?",
            ),
            (
                "msisdn",
                "'msisdn' names no field of the events: if it holds the subscriber_id, name it "
                "subscriber_id in the header row",
            ),
        ],
    )
    def test_a_required_field_under_another_name_is_said_at_the_header(
        self, tmp_path: Path, column: str, said: str
    ) -> None:
        """A warehouse export's `Subscriber` (or `msisdn`) column: every row was refused for
        a missing subscriber_id, and the analyst was told to fix the rows, each of which
        held the number (analyst walk)."""
        path = tmp_path / "export.csv"
        path.write_text(
            f"type,event_id,{column},occurred_at,amount,channel,region,balance_after\r\n"
            + self.ROWS
        )
        with pytest.raises(EventFileError) as err:
            list(EventFile(path))
        assert str(err.value) == (
            f"{path}:1: the header row has no subscriber_id column, which every event needs "
            f"(each row would be refused); {said}"
        )

    def test_a_missing_column_with_no_other_is_left_to_the_rows(self, tmp_path: Path) -> None:
        """No column stands in for it: the rows are refused as a worker refuses them."""
        path = tmp_path / "export.csv"
        path.write_text("type,event_id,subscriber_id,amount,channel\r\ntopup,t1,138,5,app\r\n")
        assert len(list(EventFile(path))) == 1

    @pytest.mark.parametrize("between", [";", "\t"])
    def test_cells_separated_by_semicolons_or_tabs_are_read(
        self, tmp_path: Path, between: str
    ) -> None:
        """A spreadsheet in a European locale saves `;` between cells: the header was one
        column, told to "add a `type` column" beside one."""
        path = tmp_path / "export.csv"
        path.write_text(CSV.decode().replace(",", between))
        events = list(EventFile(path))
        assert [e.event_type for e in events] == [EventType.TOPUP] * 3
        assert [orjson.loads(e.value)["amount"] for e in events] == ["50"] * 3


class TestRulesTestOptions:
    def test_a_rule_given_two_counts_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)  # top-ups with no balance: no low balance
        argv = ["rules", "test", str(CATALOG), "--events", str(events)]
        assert main([*argv, "--expect", "low_balance=1", "--expect", "low_balance=0"]) == 2
        assert "--expect names low_balance twice, 1 and 0" in capsys.readouterr().err

    def test_a_to_before_the_last_event_is_said_to_change_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Read as the backtest's `--to` (which leaves later events out), it tested every
        event, without a word."""
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)  # 2026-11-10, 11:00 to 13:00 +08:00
        argv = ["rules", "test", str(CATALOG), "--events", str(events), "--to", "2026-11-10"]
        assert main(argv) == 0
        said = " ".join(capsys.readouterr().err.split())
        assert (
            "--to 2026-11-10 is before the last event (2026-11-10T13:00:00+08:00): rules test "
            "leaves no event out"
        ) in said

    def test_a_to_after_it_is_not_said(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        argv = ["rules", "test", str(CATALOG), "--events", str(events), "--to", "2026-11-11"]
        assert main(argv) == 0
        assert "before the last event" not in capsys.readouterr().err

    def test_the_same_count_twice_is_one_expectation(self, tmp_path: Path) -> None:
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        argv = ["rules", "test", str(CATALOG), "--events", str(events)]
        assert main([*argv, "--expect", "low_balance=0", "--expect", "low_balance=0"]) == 0


class TestCompactDates:
    """`--from 20261207` (a date as many exports and `date +%Y%m%d` write it) was read as
    an instant with no offset and told to write `20261207+08:00`, which is refused in its
    turn: a date in any ISO form is midnight in the policy's (or the rules') time zone."""

    ZONE = ZoneInfo("Asia/Shanghai")

    @pytest.mark.parametrize("text", ["20261207", "2026-12-07", "2026-W50-1"])
    def test_a_date_in_any_iso_form_is_its_midnight(self, text: str) -> None:
        when = parse_when(text, self.ZONE, "--from")
        assert when == dt.datetime(2026, 12, 7, tzinfo=self.ZONE)

    def test_a_to_not_after_from_names_both_as_read(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """It said "--to must be after --from" alone: a date, or a zone, to guess."""
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        argv = ["backtest", "--events", str(events), "--from", "2026-11-10"]
        assert main([*argv, "--to", "2026-11-10T01:00:00+09:00"]) == 2
        said = " ".join(capsys.readouterr().err.split())
        assert (
            "--to 2026-11-10T01:00:00+09:00 (2026-11-10T01:00:00+09:00) must be after --from "
            "2026-11-10 (2026-11-10T00:00:00+08:00): dates are midnights in the policy's zone, "
            "Asia/Shanghai"
        ) in said

    def test_an_instant_without_offset_is_still_told_to_add_one(self) -> None:
        with pytest.raises(ConfigError, match=r"add an offset, e.g. 2026-12-07T10:00\+08:00"):
            parse_when("2026-12-07T10:00", self.ZONE, "--from")


class TestEventsCheckOfAHistoryAhead:
    def lines(self, ahead: dt.timedelta) -> bytes:
        at = dt.datetime.now(dt.UTC) + ahead
        return b"".join(
            topup(n, occurred_at=(at + dt.timedelta(minutes=n)).isoformat()) + b"\n"
            for n in range(1, 4)
        )

    def test_lines_ahead_of_the_clock_are_told_of_now(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "week.jsonl"
        path.write_bytes(self.lines(dt.timedelta(days=2)))
        assert main(["events", "check", str(path)]) == 1
        said = " ".join(capsys.readouterr().err.split())
        assert "3 line(s) dated over 15 minutes ahead of this machine's clock" in said
        assert "--now" in said

    def test_with_now_given_there_is_nothing_to_tell(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "week.jsonl"
        path.write_bytes(self.lines(dt.timedelta(days=2)))
        now = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
        assert main(["events", "check", "--now", now, str(path)]) == 1
        assert "ahead of this machine's clock" not in capsys.readouterr().err


class TestRulesTestProgress:
    """`rules test` of a simulated week ran a minute with nothing on the terminal or in a
    log: it says how far it is every few seconds, and a test case of a few events (done
    before the first interval) says nothing more than before."""

    def events(self, tmp_path: Path) -> Path:
        path = tmp_path / "h.jsonl.gz"
        argv = ["simulate", "--subscribers", "20", "--rate", "5", "--seed", "2"]
        assert main([*argv, "--duration", "2400", "--to-file", str(path)]) == 0
        return path

    def clock(self, monkeypatch: pytest.MonkeyPatch, step_s: float) -> list[float]:
        """The progress lines' clock: `step_s` on at each reading, however fast or slow
        the machine runs the test (their readings, returned, are the test's to see)."""
        readings: list[float] = []

        def clock() -> float:
            readings.append(len(readings) * step_s)
            return readings[-1]

        monkeypatch.setattr("moments.progresslines.CLOCK", clock)
        return readings

    def test_a_long_test_says_how_far_it_is(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        path = self.events(tmp_path)
        capsys.readouterr()
        self.clock(monkeypatch, step_s=PROGRESS_EVERY_S)  # each reading: a line is due
        assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 0
        err = capsys.readouterr().err
        assert "rules test: " in err
        assert "% done, about " in err
        events = gzip.decompress(path.read_bytes()).count(b"\n")
        assert f"rules test: {events:,} events in " in err  # the last line: all of them

    def test_a_short_one_says_nothing_of_progress(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Done before the first interval (the clock moves a millisecond a reading): it
        failed on a loaded machine, where the same run took longer than the interval."""
        path = self.events(tmp_path)
        capsys.readouterr()
        readings = self.clock(monkeypatch, step_s=0.001)
        assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 0
        assert "rules test: " not in capsys.readouterr().err
        assert 1 < len(readings) < PROGRESS_EVERY_S / 0.001  # read, and never reached it

    def test_a_far_to_says_how_far_event_time_ran_on(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A --to years after the last event sweeps event time on the whole way (3741d16):
        2,000 subscribers' silences and birthdays to a --to two years on swept for
        minutes, and not a line was said after the events' last (run_pipeline's progress
        came after each batch only)."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(NO_GATES + "rules:" + NO_ACTIVITY + BIRTHDAY)
        path = tmp_path / "e.jsonl"
        path.write_bytes(
            b"\n".join(
                orjson.dumps({"type": t.value, **value})
                for t, value in (
                    ev(EventType.PROFILE, at("2026-01-01"), birthday="03-15"),
                    ev(EventType.USAGE, at("2026-01-02"), kind="data", quantity=1),
                )
            )
        )
        self.clock(monkeypatch, step_s=PROGRESS_EVERY_S)  # each reading: a line is due
        argv = ["rules", "test", str(rules), "--events", str(path), "--to", "2027-06-01"]
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "rules test: all 2 events in; event time run on to 2026-01-10 of the --to, " in err
        assert "event time run on to 2027-03-15 of the --to, 2027-06-01" in err


class TestPathsTold:
    def test_a_folder_of_exports_is_told_to_pass_its_files(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """It was told `no such file` of a folder that is there."""
        folder = tmp_path / "exports"
        folder.mkdir()
        (folder / "day1.jsonl").write_bytes(JSONL)
        code = main(["backtest", "--events", str(folder), "--out", str(tmp_path / "o")])
        assert code == 2  # 2, not 1: a path given wrong is set-up (README, exit codes)
        said = " ".join(capsys.readouterr().err.split())
        assert f"{folder}: a folder; pass the files in it" in said
        assert "no such file" not in said

    def test_an_out_that_cannot_be_written_stops_the_run_before_it_starts(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """It was said after the whole replay (minutes of a long history), lost."""
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        out = tmp_path / "report.txt"
        out.write_text("a file where the folder should go")
        assert main(["backtest", "--events", str(events), "--out", str(out)]) == 2  # set-up
        said = " ".join(capsys.readouterr().err.split())
        assert f"moments: cannot write the report to --out {out}" in said
        assert "events in" not in said  # no replay
        # It said "[Errno 17] File exists", no fix.
        assert f"{out} is a file: name a folder (created if need be), e.g. --out " in said
        assert "Errno" not in said

    def test_a_file_given_twice_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A glob and a name (`exports/*.gz exports/day1.gz`) replayed its events twice."""
        events = tmp_path / "e.jsonl"
        events.write_bytes(JSONL)
        again = tmp_path / "." / "e.jsonl"
        argv = ["--events", str(events), str(again), "--out", str(tmp_path / "o")]
        assert main(["backtest", *argv]) == 1
        said = " ".join(capsys.readouterr().err.split())
        assert f"{again}: given twice (as {events} too): each file is read once" in said


def test_a_refused_event_of_rules_test_is_named_by_its_event_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usage #14` (the 14th usage event, not a line) alone could not be found in the file;
    it is named by its line too (`test_refused_lines`)."""
    events = tmp_path / "e.jsonl"
    events.write_bytes(JSONL + topup(4, channel="atm", amount="lots") + b"\n")
    assert main(["rules", "test", str(CATALOG), "--events", str(events)]) == 0
    said = capsys.readouterr().out
    assert f"  {events}:4: topup (event_id t4): amount:" in said


class TestEventsCheckNowOfNoSuchDate:
    """`events check --now 2026-11-31T10:00:00+08:00` was told to write an RFC 3339 time,
    which it is: what is wrong is the day, as the other time options now say."""

    def test_a_day_the_month_has_not_is_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "e.jsonl"
        path.write_bytes(topup(1) + b"\n")
        with pytest.raises(SystemExit):
            main(["events", "check", "--now", "2026-11-31T10:00:00+08:00", str(path)])
        said = " ".join(capsys.readouterr().err.split())
        assert "2026-11-31 is no date: November has 30 days" in said, said

    def test_pages_of_digits_are_echoed_cut_short(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit):
            main(["events", "check", "--now", "9" * 5000, str(tmp_path / "e.jsonl")])
        said = capsys.readouterr().err
        assert "9" * 37 + "..." in said, said[-300:]
        assert len(said) < 1500, said[-300:]
