"""Edges of the history readers (`backtest`, `rules test`, `state seed`) left by the
earlier work on bad lines (tests/unit/test_unreadable_lines.py, test_untyped_lines.py):

- a gzip file cut short (a copy or export that stopped) stopped the whole run (`events
  check`: a traceback): the whole lines before the cut now count, the cut is said (file,
  line, "the file ends early: gzip stream truncated", re-copy) and the command exits 1,
  the backtest after writing its report, the seed without writing anything;
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
import gzip
import zlib
from pathlib import Path

import orjson
import pytest

from moments import backtest_input
from moments.backtest_input import EventFile, history
from moments.cli import main
from moments.eventcheck import check_lines
from moments.models import EventType
from moments.rulecheck import EventFileError, MissingEventTypeError, check_rules
from rules.catalog import load_rules

from .calls import counted_calls
from .test_unreadable_lines import CATALOG, topup

TRUNCATED = "gzip stream truncated"


def lines_of(count: int) -> bytes:
    """`count` top-ups of distinct subscribers, a minute apart from 2026-11-10 10:00."""
    out = []
    for n in range(count):
        doc = orjson.loads(topup(1))
        doc |= {
            "event_id": f"t{n}",
            "subscriber_id": f"1380{n:07d}",
            "occurred_at": f"2026-11-10T{10 + n // 60:02d}:{n % 60:02d}:00+08:00",
        }
        out.append(orjson.dumps(doc) + b"\n")
    return b"".join(out)


def said(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


class TestCutGzip:
    def test_the_whole_lines_before_the_cut_are_read_and_the_cut_is_named(
        self, tmp_path: Path
    ) -> None:
        plain = lines_of(600)  # ~100 KB: the cut falls past the reader's first 64 KiB
        packed = gzip.compress(plain)
        path = tmp_path / "h.jsonl.gz"
        for keep in (len(packed) // 3, len(packed) * 2 // 3, len(packed) - 30):
            path.write_bytes(packed[:keep])
            # What the cut copy still holds: zlib, given every byte left, gives it all.
            held = zlib.decompressobj(31).decompress(packed[:keep])
            whole = held.count(b"\n")
            file = EventFile(path)
            events = list(file)
            assert len(events) == whole, keep
            assert [e.value for e in events] == held.splitlines()[:whole]
            cut = file.cut
            assert cut is not None
            assert (cut.line, cut.partial, cut.why) == (
                whole + 1,
                len(held) - len(held[: held.rfind(b"\n") + 1]),
                TRUNCATED,
            )
            last = orjson.loads(held.splitlines()[whole - 1])
            assert cut.last_at == last["occurred_at"]
            # The cut line is the copy's loss, not a record the stream refused.
            assert (file.unreadable_count, file.untyped_count) == (0, 0)
            assert cut.said().startswith(
                f"{path}:{whole + 1}: the file ends early: gzip stream truncated; "
            )
            assert "re-copy the file" in cut.said()

    def test_a_cut_between_two_lines_names_the_first_missing(self, tmp_path: Path) -> None:
        """Two gzip members (`cat a.gz b.gz`), the second cut in its header: every line of
        the first is read, none is partial; a blank line is a line of the count."""
        path = tmp_path / "h.jsonl.gz"
        path.write_bytes(gzip.compress(lines_of(3) + b"\n") + gzip.compress(lines_of(3))[:6])
        file = EventFile(path)
        assert len(list(file)) == 3
        assert file.cut is not None
        assert (file.cut.line, file.cut.partial) == (5, 0)

    def test_junk_after_the_gzip_data_is_said_too(self, tmp_path: Path) -> None:
        path = tmp_path / "h.jsonl.gz"
        path.write_bytes(gzip.compress(lines_of(3)) + b"junk appended")
        file = EventFile(path)
        assert len(list(file)) == 3
        assert file.cut is not None
        assert file.cut.line == 4
        assert "the gzip data cannot be read on" in file.cut.why

    def test_a_whole_file_has_no_cut_and_no_gzip_is_still_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "h.jsonl.gz"
        path.write_bytes(gzip.compress(lines_of(3)[:-1]))  # no newline at the end: whole
        file = EventFile(path)
        assert len(list(file)) == 3
        assert file.cut is None
        path.write_bytes(lines_of(3))
        with pytest.raises(EventFileError, match=r"h\.jsonl\.gz: not gzip"):
            list(EventFile(path))

    def test_a_line_longer_than_a_block_is_read_whole(self, tmp_path: Path) -> None:
        """A line over the reader's 64 KiB blocks (refused as too large, as the stream
        refuses it) among others: the same events as the plain file."""
        long_line = topup(5, note="x" * 150_000) + b"\n"
        plain = lines_of(300) + long_line + lines_of(300)
        (tmp_path / "h.jsonl").write_bytes(plain)
        (tmp_path / "h.jsonl.gz").write_bytes(gzip.compress(plain))
        unzipped = EventFile(tmp_path / "h.jsonl.gz")
        plain_events = [e._replace(source=unzipped.source) for e in EventFile(tmp_path / "h.jsonl")]
        assert list(unzipped) == plain_events  # the same, named after their own file
        assert unzipped.cut is None

    def test_a_csv_too(self, tmp_path: Path) -> None:
        header = b"type,event_id,subscriber_id,occurred_at,amount,channel\n"
        rows = b"".join(
            f"topup,t{n},1380{n:07d},2026-11-10T10:{n % 60:02d}:00+08:00,50,app\n".encode()
            for n in range(2000)
        )
        packed = gzip.compress(header + rows)
        path = tmp_path / "h.csv.gz"
        path.write_bytes(packed[: len(packed) // 2])
        held = zlib.decompressobj(31).decompress(packed[: len(packed) // 2])
        file = EventFile(path)
        assert len(list(file)) == held.count(b"\n") - 1  # the header
        assert file.cut is not None
        assert file.cut.line == held.count(b"\n") + 1


class TestCutGzipCommands:
    @pytest.fixture
    def cut(self, tmp_path: Path) -> tuple[Path, int]:
        packed = gzip.compress(lines_of(600))
        path = tmp_path / "h.jsonl.gz"
        path.write_bytes(packed[: len(packed) // 2])
        whole = zlib.decompressobj(31).decompress(packed[: len(packed) // 2]).count(b"\n")
        return path, whole

    def test_the_backtest_reports_what_it_read_then_exits_1(
        self,
        cut: tuple[Path, int],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")
        path, whole = cut
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(path), "--out", str(out)]) == 1
        report = orjson.loads((out / "report.json").read_bytes())
        assert report["summary"]["events"] == whole
        assert report["summary"]["files_ended_early"] == [
            {
                "file": str(path),
                "line": whole + 1,
                "last_event": report["summary"]["files_ended_early"][0]["last_event"],
                "why": TRUNCATED,
            }
        ]
        assert report["warnings"][0].startswith(f"{path}:{whole + 1}: the file ends early")
        assert "the file ends early: gzip stream truncated" in (out / "report.md").read_text()
        text = said(capsys)
        assert f"moments: {path}:{whole + 1}: the file ends early: gzip stream truncated" in text
        assert "files ended early (read to the line)" in text  # the Summary table's row
        assert f"{path}:{whole + 1} (gzip stream truncated)" in text
        assert text.count("the file ends early") == 1  # at the end, not among the warnings too

    def test_rules_test_prints_the_tasks_of_what_it_read_then_exits_1(
        self, cut: tuple[Path, int], capsys: pytest.CaptureFixture[str]
    ) -> None:
        path, whole = cut
        assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 1
        captured = capsys.readouterr()
        assert "task(s)" in captured.out
        assert f"{path}:{whole + 1}: the file ends early: gzip stream truncated" in captured.err

    def test_events_check_checks_what_it_read_then_exits_1(
        self,
        cut: tuple[Path, int],
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """It ended in a traceback (EOFError), and in another for a .gz that is no gzip."""
        monkeypatch.setenv("COLUMNS", "400")  # paths unwrapped
        path, whole = cut
        argv = ["events", "check", "--now", "2026-12-01T00:00:00Z", str(path)]
        assert main(argv) == 1
        text = said(capsys)
        assert f"{whole:,} line(s) checked, 0 refused" in text
        assert f"moments: {path}:{whole + 1}: the file ends early: gzip stream truncated" in text
        plain = path.with_name("plain.jsonl.gz")
        plain.write_bytes(lines_of(2))
        assert main(["events", "check", str(plain)]) == 2
        assert f"{plain}: not gzip data" in said(capsys)

    def test_the_seed_counts_what_it_read_and_writes_nothing(
        self,
        cut: tuple[Path, int],
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")
        path, whole = cut
        assert main(["state", "seed", "--events", str(path), "--dry-run"]) == 1
        text = said(capsys)
        assert f"events │ {whole:,}" in text
        assert f"{path}:{whole + 1}: the file ends early" in text
        assert "nothing written" in text


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


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "America/New_York"])
def test_a_time_with_no_offset_is_placed_nowhere_whatever_the_machines_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """The stream refuses an `occurred_at` with no UTC offset; the file reader read it in
    the machine's zone, so whether `--to` left it out depended on where the backtest ran
    (a backtest in UTC and one in Shanghai counted different dead letters)."""
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        path = tmp_path / "h.jsonl"
        naive = topup(2).replace(b'+08:00"', b'"')
        path.write_bytes(topup(1) + b"\n" + naive + b"\n")
        first, second = list(EventFile(path))
        assert first.at > 0
        assert second.at == 0.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_line_naming_no_type_is_told_the_words_of_events_check(tmp_path: Path) -> None:
    """`events check` said "no event type: give --type (...)"; the backtest, `rules test`
    and `state seed` said `add "type": one of ... (got None)` of the same line. The same
    words, but for `task_outcome`, a type `events check` alone reads."""
    path = tmp_path / "h.jsonl"
    for line in (b'{"type": null, "event_id": "x"}', b"null", b'{"type": "top-up"}'):
        path.write_bytes(line + b'\n{"event_id": "y"}\n')  # a JSON lines file of no type
        with path.open("rb") as lines:
            verdict = next(check_lines(lines, None))
        with pytest.raises(MissingEventTypeError) as refused:
            list(EventFile(path))
        assert "profile, task_outcome)" in verdict.message
        said = verdict.message.replace(", task_outcome)", ")")
        assert str(refused.value).startswith(f"{path}:1: {said}; "), line
        assert "task_outcome" not in str(refused.value)


class TestProfilesFirst:
    """`--profiles` is read whole before the events, as the profiles when the history
    begins. A snapshot dated after the history's first event (a CRM export dated the day
    it was taken) moved event time on to its date before any event: the hours before
    went unswept, and the report began at the snapshot (`2026-12-08 from 12:00 to 19:10:
    the history is shorter than a day` over two days of tasks)."""

    def profile(self, n: int, when: str) -> dict[str, object]:
        return {
            "event_id": f"p{n}",
            "subscriber_id": f"1380{n:07d}",
            "occurred_at": when,
            "region": "NJ",
            "timezone": "Asia/Shanghai",
        }

    def write(self, path: Path, whens: list[str]) -> Path:
        docs = [self.profile(n, when) for n, when in enumerate(whens)]
        if path.suffix == ".csv":
            head = ",".join(docs[0])
            rows = [",".join(str(v) for v in d.values()) for d in docs]
            path.write_text("\r\n".join([head, *rows]) + "\r\n")
        else:
            path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
        return path

    @pytest.mark.parametrize("command", ["backtest", "rules test", "state seed"])
    @pytest.mark.parametrize("name", ["crm.jsonl", "crm.csv"])
    def test_an_event_of_another_type_in_the_snapshot_stops_the_run_naming_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, name: str
    ) -> None:
        """The history's own file given to --profiles (a top-up first) was told its line
        is "dated after the first event of the history: date the snapshot at or before",
        or, dated before, its events were applied as the snapshot (analyst walk)."""
        events = tmp_path / "h.jsonl"
        events.write_bytes(lines_of(3))
        crm = tmp_path / name
        doc = self.profile(0, "2026-11-10T09:00:00+08:00")
        if name.endswith(".csv"):
            crm.write_text(
                "type," + ",".join(doc) + "\ntopup," + ",".join(map(str, doc.values())) + "\n"
            )
        else:
            crm.write_bytes(orjson.dumps({"type": "topup", **doc}) + b"\n")
        argv = [*command.split(), "--events", str(events), "--profiles", str(crm)]
        argv += {
            "backtest": ["--out", str(tmp_path / "o")],
            "rules test": [str(CATALOG)],
            "state seed": ["--dry-run"],
        }[command]
        assert main(argv) != 0
        said = " ".join(capsys.readouterr().err.split())
        line = 2 if name.endswith(".csv") else 1
        assert f"{crm}:{line}: a topup event in the --profiles snapshot, which holds profiles" in (
            said
        )
        assert "give this file with --events" in said

    @pytest.mark.parametrize(("name", "line"), [("crm.jsonl", 2), ("crm.csv", 3)])
    def test_a_profile_dated_after_the_first_event_stops_the_run_naming_its_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, line: int
    ) -> None:
        events = tmp_path / "h.jsonl"
        events.write_bytes(lines_of(5))  # from 2026-11-10 10:00
        crm = self.write(
            tmp_path / name, ["2026-11-10T09:00:00+08:00", "2026-11-10T12:00:00+08:00"]
        )
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(events), "--profiles", str(crm), "--out", str(out)]
        assert main(argv) == 1
        text = said(capsys)
        assert f"moments: {crm}:{line}: dated 2026-11-10T04:00:00Z, after the first event" in text
        assert "(2026-11-10T02:00:00Z)" in text
        assert "give the file with --events" in text
        assert not (out / "report.json").exists()
        seed = ["state", "seed", "--events", str(events), "--profiles", str(crm), "--dry-run"]
        assert main(seed) == 1
        assert f"moments: {crm}:{line}: dated" in said(capsys)

    def test_a_snapshot_dated_at_the_history_start_or_before_is_read(self, tmp_path: Path) -> None:
        events = tmp_path / "h.jsonl"
        events.write_bytes(lines_of(5))
        crm = self.write(
            tmp_path / "crm.jsonl", ["2026-11-10T09:00:00+08:00", "2026-11-10T10:00:00+08:00"]
        )
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(events), "--profiles", str(crm), "--out", str(out)]
        assert main(argv) == 0
        summary = orjson.loads((out / "report.json").read_bytes())["summary"]
        assert summary["events"] == 7
        assert summary["first_event"] == "2026-11-10T10:00:00+08:00"  # the snapshot's there

    def test_a_snapshot_dated_long_before_is_applied_at_the_history_start(
        self, tmp_path: Path
    ) -> None:
        """A CRM snapshot dated when each profile last changed (January) began event time
        there: the backtest swept every hour since, greeted June's birthday in a history
        of November, and reported every day from January (analyst recheck: 2,899 days,
        926 tasks for 507)."""
        events = tmp_path / "h.jsonl"
        events.write_bytes(lines_of(5))  # 2026-11-10 from 10:00, subscriber 13800000000 first
        doc = self.profile(0, "2026-01-05T10:00:00+08:00") | {"birthday": "06-01"}
        crm = tmp_path / "crm.jsonl"
        crm.write_bytes(orjson.dumps(doc) + b"\n")
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(events), "--profiles", str(crm), "--out", str(out)]
        assert main(argv) == 0
        report = orjson.loads((out / "report.json").read_bytes())
        assert report["days"] == ["2026-11-10"]
        assert report["summary"]["first_event"] == "2026-11-10T10:00:00+08:00"
        assert report["summary"]["events"] == 6
        tasks = [orjson.loads(line) for line in (out / "tasks.jsonl").read_bytes().splitlines()]
        assert [t for t in tasks if t["moment"]["type"] == "birthday"] == []
        assert {t["region"] for t in tasks} >= {"NJ"}  # the profile was applied

    @pytest.mark.parametrize("first", [b"junk, no JSON", topup(1, occurred_at="yesterday")])
    def test_a_first_line_with_no_time_does_not_begin_the_history(
        self, tmp_path: Path, first: bytes
    ) -> None:
        """A line with no readable time (read at 0) first in the history began it in 1970:
        the snapshot was placed at its own date (January), and the report ran from there
        (310 days for one). The history begins at its first line with a time; the line
        is refused as ever."""
        events = tmp_path / "h.jsonl"
        events.write_bytes(first + b"\n" + lines_of(5))
        doc = self.profile(0, "2026-01-05T10:00:00+08:00") | {"birthday": "06-01"}
        crm = tmp_path / "crm.jsonl"
        crm.write_bytes(orjson.dumps(doc) + b"\n")
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(events), "--profiles", str(crm), "--out", str(out)]
        assert main(argv) == 0
        report = orjson.loads((out / "report.json").read_bytes())
        assert report["days"] == ["2026-11-10"]
        assert report["summary"]["first_event"] == "2026-11-10T10:00:00+08:00"
        assert sum(report["summary"]["dead_letters"].values()) == 1

    def test_a_snapshot_with_no_event_is_applied_at_its_latest_date(self, tmp_path: Path) -> None:
        """With no event to begin at (an empty --events file: seeding profiles alone), the
        snapshot was placed at each profile's own date: event time began at the oldest
        (years back) and ran on hour by hour to --to, greeting every birthday and holiday
        since (2,105 days and 78 tasks for two profiles). It is the profiles as of its
        latest date, and applied there."""
        events = tmp_path / "none.jsonl"
        events.write_bytes(b"")
        docs = [
            self.profile(0, "2021-03-01T10:00:00+08:00") | {"birthday": "03-15"},
            self.profile(1, "2023-07-01T10:00:00+08:00"),
        ]
        crm = tmp_path / "crm.jsonl"
        crm.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
        out = tmp_path / "out"
        argv = ["backtest", "--events", str(events), "--profiles", str(crm), "--to"]
        assert main([*argv, "2023-07-03", "--out", str(out)]) == 0
        report = orjson.loads((out / "report.json").read_bytes())
        assert report["summary"]["first_event"] == "2023-07-01T10:00:00+08:00"
        assert report["days"] == ["2023-07-01", "2023-07-02"]
        assert (out / "tasks.jsonl").read_bytes() == b""

    def test_rules_test_applies_a_snapshot_dated_long_before_at_the_history_start(
        self, tmp_path: Path
    ) -> None:
        """`moments rules test --profiles` reads the snapshot as the backtest and `state
        seed` do: dated in January, it began event time there and swept every hour since,
        greeting June's birthday (and the holidays between) in a history of November."""
        events = tmp_path / "h.jsonl"
        events.write_bytes(lines_of(5))  # 2026-11-10 from 10:00, subscriber 13800000000 first
        doc = self.profile(0, "2026-01-05T10:00:00+08:00") | {"birthday": "06-01"}
        crm = tmp_path / "crm.jsonl"
        crm.write_bytes(orjson.dumps(doc) + b"\n")
        tested = check_rules(load_rules(CATALOG), events, crm)
        assert [t.triggered_at for t in tested.tasks if t.moment.family == "special_day"] == []
        assert {t.region for t in tested.tasks} >= {"NJ"}  # the profile was applied
        assert min(t.triggered_at for t in tested.tasks).date() == dt.date(2026, 11, 10)

    def test_rules_test_stops_at_a_profile_dated_after_the_first_event(
        self, tmp_path: Path
    ) -> None:
        """Merged by time in `rules test` alone, a snapshot dated the day it was exported
        came after every event: the events were judged with no profile."""
        events = tmp_path / "h.jsonl"
        events.write_bytes(lines_of(5))  # from 2026-11-10 10:00
        crm = self.write(
            tmp_path / "crm.jsonl", ["2026-11-10T09:00:00+08:00", "2026-11-10T12:00:00+08:00"]
        )
        with pytest.raises(EventFileError, match=f"{crm}:2: dated 2026-11-10T04:00:00Z, after"):
            check_rules(load_rules(CATALOG), events, crm)


class TestCsvQuotes:
    """A quote a CSV cell opens and never closes (a hand edit, `"49.90` for `49.90`) took
    every line after it into that cell: the rows after it were gone without a word (5
    events read of 92, exit 0)."""

    HEAD = "type,event_id,subscriber_id,occurred_at,amount,channel"

    def rows(self) -> list[str]:
        return [f"topup,t{n},1380000000{n},2026-11-10T1{n}:00:00+08:00,50,app" for n in range(1, 6)]

    @pytest.mark.parametrize(
        ("cell", "why"),
        [('"50', "unexpected end of data"), ('"50"0', "',' expected after '\"'")],
    )
    def test_a_quote_not_closed_stops_the_run_naming_the_row(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], cell: str, why: str
    ) -> None:
        rows = self.rows()
        rows[1] = rows[1].replace(",50,", f",{cell},")  # line 3
        path = tmp_path / "h.csv"
        path.write_text("\r\n".join([self.HEAD, *rows]) + "\r\n")
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(path), "--out", str(out)]) == 1
        text = said(capsys)
        assert f"moments: {path}:3: cannot read the CSV row that begins here ({why})" in text
        assert "a quote opened in it is not closed" in text
        assert not (out / "report.json").exists()

    def test_spaces_after_the_commas_are_not_part_of_the_cells(self, tmp_path: Path) -> None:
        """A header written `type, event_id, subscriber_id` named the columns " event_id",
        " subscriber_id": every row was refused for a missing subscriber_id, and the report
        said nothing of the spaces. Spaces after a comma are dropped, a quoted cell after
        them is still read as quoted."""
        rows = [r.replace(",", ", ") for r in self.rows()]
        rows[1] = rows[1].replace(", app", ', "a, b"')
        path = tmp_path / "h.csv"
        path.write_text("\r\n".join([self.HEAD.replace(",", ", "), *rows]) + "\r\n")
        events = list(EventFile(path))
        plain = tmp_path / "plain.csv"
        plain.write_text("\r\n".join([self.HEAD, *self.rows()]) + "\r\n")
        assert [e.value for e in events[:1]] == [e.value for e in list(EventFile(plain))[:1]]
        assert len(events) == 5
        assert orjson.loads(events[1].value)["channel"] == "a, b"

    def test_quotes_written_as_csv_writes_them_are_read(self, tmp_path: Path) -> None:
        """A cell in quotes holding a comma, a doubled quote or a line break is CSV."""
        rows = self.rows()
        rows[1] = rows[1].replace(",app", ',"a,""b""\r\nc"')
        path = tmp_path / "h.csv"
        path.write_text("\r\n".join([self.HEAD, *rows]) + "\r\n")
        events = list(EventFile(path))
        assert len(events) == 5
        assert orjson.loads(events[1].value)["channel"] == 'a,"b"\r\nc'


@pytest.mark.parametrize("name", ["h.csv", "h.csv.gz"])
def test_a_byte_not_utf8_is_named_by_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """The text reader decodes a block ahead of the CSV reader: a latin-1 `é` on line
    150 was said `not UTF-8 text (near line 1)`, or near whatever line the block began."""
    head = "type,event_id,subscriber_id,occurred_at,amount,channel"
    rows = [
        f"topup,t{n},1380{n:07d},2026-11-10T{10 + n // 60:02d}:{n % 60:02d}:00+08:00,50,app"
        for n in range(200)
    ]
    data = "\r\n".join([head, *rows]).encode() + b"\r\n"
    lines = data.split(b"\r\n")
    lines[149] = lines[149].replace(b",app", b",caf\xe9")  # line 150
    data = b"\r\n".join(lines)
    assert len(data) > 8192  # more than the one block the text reader decodes ahead
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(EventFileError, match=rf"{name}:150: not UTF-8 text \(byte 0xe9 "):
        list(EventFile(path))
    out = tmp_path / "out"
    assert main(["backtest", "--events", str(path), "--out", str(out)]) == 1
    assert f"{name}:150: not UTF-8 text" in said(capsys)


class TestTimeOrder:
    """Each file must be in event-time order, and nothing said so when one was not: a
    warehouse export ordered by subscriber, or one line dated a year ahead of the rest,
    replayed with the backtest's one event time run on past the lines after it, gave other
    figures than the history (a simulated day: 371 tasks for 507, 330 SMS on its last day
    for 47), with no warning."""

    def write(self, path: Path, times: list[str]) -> Path:
        out = []
        for n, when in enumerate(times):
            doc = orjson.loads(topup(1)) | {
                "event_id": f"t{n}",
                "subscriber_id": f"1380{n % 3:07d}",
                "occurred_at": f"2026-11-{when}:00+08:00",
            }
            out.append(orjson.dumps(doc) + b"\n")
        path.write_bytes(b"".join(out))
        return path

    def warnings(self, tmp_path: Path, path: Path, *more: str) -> list[str]:
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(path), "--out", str(out), *more]) == 0
        report = orjson.loads((out / "report.json").read_bytes())
        return [w for w in report["warnings"] if "event-time order" in w]

    def test_a_file_ordered_by_subscriber_is_said_with_its_first_line_out_of_order(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")  # the path whole on one line
        times = ["10T10:00", "10T12:00", "11T09:00", "10T10:30", "10T11:00", "11T10:00"]
        path = self.write(tmp_path / "h.jsonl", times)
        (warning,) = self.warnings(tmp_path, path)
        assert warning.startswith(
            f"{path}:4: dated 2026-11-10T02:30:00Z, 22.5 hours before line 3 above it "
            "(2026-11-11T01:00:00Z); 2 line(s) of the file are dated over 1 h before"
        )
        assert "Sort the file by occurred_at" in warning
        assert warning in said(capsys)
        md = (tmp_path / "out" / "report.md").read_text()
        assert f"> **Warning:** {warning}" in md
        capsys.readouterr()
        assert main(["state", "seed", "--events", str(path), "--dry-run"]) == 0
        assert f"{path}:4: dated 2026-11-10T02:30:00Z" in said(capsys)

    def test_rules_test_says_it_too(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`moments rules test` replays a file in its order with one event time as the
        backtest does (its sweeps run on past the lines behind), and said nothing of it: a
        rule author read, and `--expect`ed, figures that were not the history's."""
        monkeypatch.setenv("COLUMNS", "400")
        times = ["10T10:00", "10T12:00", "11T09:00", "10T10:30", "10T11:00", "11T10:00"]
        path = self.write(tmp_path / "h.jsonl", times)
        assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 0
        text = said(capsys)
        assert f"{path}:4: dated 2026-11-10T02:30:00Z, 22.5 hours before line 3 above it" in text
        assert "Sort the file by occurred_at" in text

    @pytest.mark.parametrize("newline", ["\n", "\r\n"])
    def test_a_csv_row_over_several_lines_is_named_by_the_line_it_begins_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str
    ) -> None:
        """A cell holding a line break (a note typed over two lines, quoted as CSV does)
        made the row end a line later than it begins: the warning named the row's last
        line, and the line above by its last too, where an editor shows the row's start
        (a quote not closed is named by the line its row begins on already)."""
        monkeypatch.setenv("COLUMNS", "400")
        head = "type,event_id,subscriber_id,occurred_at,amount,channel,note"
        rows = [
            'topup,t0,13800000000,2026-11-10T10:00:00+08:00,50,app,"first\nsecond"',
            'topup,t1,13800000001,2026-11-11T09:00:00+08:00,50,app,"one\ntwo\nthree"',
            "",  # a blank line (line 7), which the reader skips
            'topup,t2,13800000002,2026-11-10T10:30:00+08:00,50,app,"a\nb"',
        ]
        path = tmp_path / "h.csv"
        path.write_bytes(("\n".join([head, *rows]) + "\n").replace("\n", newline).encode())
        (warning,) = self.warnings(tmp_path, path)
        assert warning.startswith(
            f"{path}:8: dated 2026-11-10T02:30:00Z, 22.5 hours before line 4 above it"
        )

    def test_a_line_dated_far_ahead_names_itself_as_the_line_above(self, tmp_path: Path) -> None:
        times = ["10T10:00", "10T10:05", "10T10:10", "10T10:15", "10T10:20"]
        path = self.write(tmp_path / "h.jsonl", times)
        # Line 3 a month ahead (a year, the case reported, swept 12 times the hours to the
        # same warning): lines 4 and 5 are behind it.
        text = path.read_bytes().replace(b"2026-11-10T10:10", b"2026-12-10T10:10")
        path.write_bytes(text)
        (warning,) = self.warnings(tmp_path, path)
        assert warning.startswith(f"{path}:4: dated 2026-11-10T02:15:00Z, 30.0 days before line 3")
        assert "2 line(s)" in warning

    def test_a_topics_records_read_with_type_are_checked_too(self, tmp_path: Path) -> None:
        """Records of one topic (no `type` field, `--type` given) take the reader's other
        path, every line of them."""
        times = ["10T10:00", "11T12:00", "10T10:30"]
        path = self.write(tmp_path / "h.jsonl", times)
        path.write_bytes(path.read_bytes().replace(b'"type":"topup",', b""))
        (warning,) = self.warnings(tmp_path, path, "--type", "topup")
        assert warning.startswith(f"{path}:3: dated 2026-11-10T02:30:00Z, 1.1 days before line 2")

    def test_a_late_line_within_the_lateness_or_past_to_is_no_disorder(
        self, tmp_path: Path
    ) -> None:
        """Events up to the lateness late are the stream's every day; a line dated from
        `--to` on is not replayed, so the lines after it are not behind the history."""
        times = ["10T10:00", "10T11:00", "10T10:05", "10T12:00", "12T09:00", "10T13:00"]
        path = self.write(tmp_path / "h.jsonl", times)
        assert self.warnings(tmp_path, path, "--to", "2026-11-11") == []
        assert len(self.warnings(tmp_path, path)) == 1  # without --to, line 6 is behind


def test_json_lines_named_csv_are_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments simulate --to-file h.csv` wrote JSON lines, which the backtest read as CSV
    and told to add a `type` column (now: a quote not closed); simulate refuses the name."""
    path = tmp_path / "h.csv"
    path.write_bytes(lines_of(3))
    with pytest.raises(EventFileError, match=r"h\.csv:1: a JSON object, not a CSV header row"):
        list(EventFile(path))
    argv = ["simulate", "--subscribers", "5", "--rate", "10", "--duration", "2"]
    assert main([*argv, "--to-file", str(tmp_path / "s.csv.gz")]) == 2
    assert "--to-file writes JSON lines: name the file .jsonl" in said(capsys)
    assert not (tmp_path / "s.csv.gz").exists()


class TestOneFileReadDirectly:
    """The backtest reads every event through `history`: with one events file and no
    `--to` (most runs), each event comes as the file reads it, not passed through a merge
    of one file and a window test that cannot leave anything out."""

    def test_one_file_without_to_is_neither_merged_nor_windowed(self, tmp_path: Path) -> None:
        path = tmp_path / "h.jsonl"
        path.write_bytes(lines_of(50))
        events, calls = counted_calls(lambda: list(history([EventFile(path)], False)))
        assert [e.key for e in events] == [str(13800000000 + n).encode() for n in range(50)]
        assert not [name for name in calls if name.endswith("heapq.py:merge")]
        # A string id is encoded in place: `_key` only for the first line, read on its own
        # to learn the file's type.
        assert calls[f"{backtest_input.__file__}:_key"] == 1

    def test_files_merged_and_a_window_read_as_before(self, tmp_path: Path) -> None:
        early, late = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        early.write_bytes(lines_of(4))
        late.write_bytes(lines_of(4).replace(b'"1380', b'"1390'))  # the same times, others
        both = list(history([EventFile(early), EventFile(late)], False))
        assert [e.at for e in both] == sorted(e.at for e in both)
        cut = both[2].at
        windowed = list(history([EventFile(early), EventFile(late)], False, cut))
        assert windowed == [e for e in both if e.at < cut]
