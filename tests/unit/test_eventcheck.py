"""`moments events check`: each line judged as a worker judges a record of its topic."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import sys
from pathlib import Path

import orjson
import pytest

from moments.cli import main
from moments.eventcheck import NO_TYPE, check_lines
from moments.models import EventType
from moments.progresslines import PROGRESS_EVERY_S

from .catalogs import default_rules

GOOD_TOPUP = {
    "type": "topup",
    "event_id": "e1",
    "subscriber_id": "13800000001",
    "occurred_at": "2026-11-22T09:30:00+08:00",
    "amount": 50,
    "channel": "app",
}


def line(**changes: object) -> bytes:
    doc = {**GOOD_TOPUP, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


class TestVerdicts:
    def test_a_valid_event_is_taken_and_blank_lines_keep_the_numbering(self) -> None:
        verdicts = list(check_lines([b"\n", line(), b"   \n", line(event_id="e2")], None))
        assert [(v.line, v.event_type, v.reason) for v in verdicts] == [
            (2, "topup", None),
            (4, "topup", None),
        ]

    def test_a_field_out_of_the_contract_gets_the_workers_reason_and_message(self) -> None:
        (verdict,) = check_lines([line(amount=-5)], None)
        assert verdict.reason == "invalid_event"
        assert verdict.message == "amount: Input should be greater than 0"

    def test_a_number_as_subscriber_id_is_refused_as_by_a_worker(self) -> None:
        (verdict,) = check_lines([line(subscriber_id=13800000001)], None)
        assert verdict.reason == "invalid_event"
        assert verdict.message.startswith("subscriber_id: write the subscriber number as a JSON")

    def test_type_from_the_option_wins_and_the_type_field_is_ignored(self) -> None:
        (as_usage,) = check_lines([line()], EventType.USAGE)
        assert as_usage.event_type == "usage"
        assert as_usage.reason == "invalid_event"  # a top-up has no `kind`
        assert "kind: Field required" in as_usage.message
        (untyped,) = check_lines([line(type=None)], EventType.TOPUP)
        assert untyped.reason is None

    def test_an_event_ahead_of_the_clock_is_future_as_for_a_worker(self) -> None:
        """The check took a 2030 time and local time written with Z; a worker refused
        both as `future` (producer review)."""
        now = dt.datetime.fromisoformat("2026-11-22T09:30:00+08:00").timestamp()
        lines = [
            line(occurred_at="2026-11-22T09:44:00+08:00"),  # 14 min ahead: taken
            line(occurred_at="2026-11-22T09:30:00Z"),  # local time written with Z
            line(occurred_at="2030-01-01T00:00:00+08:00"),
        ]
        verdicts = list(check_lines(lines, None, now))
        assert [v.reason for v in verdicts] == [None, "future", "future"]
        assert verdicts[1].message.startswith("occurred_at 2026-11-22T09:30:00Z is 28800 s ahead")
        assert "local time written with Z?" in verdicts[1].message
        assert [v.reason for v in check_lines(lines, None)] == [None, None, None]  # no clock

    def test_the_cli_reads_by_the_clock_it_is_given(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "day.jsonl"
        path.write_bytes(line(occurred_at="2026-11-22T18:00:00+08:00") + b"\n")
        assert main(["events", "check", str(path)]) == 0  # by the wall clock: long past
        assert main(["events", "check", "--now", "2026-11-22T09:30:00+08:00", str(path)]) == 1
        assert ": future (topup): occurred_at" in capsys.readouterr().out

    def test_without_a_type_it_says_how_to_give_one(self) -> None:
        missing, unknown = check_lines([line(type=None), line(type="topups")], None)
        assert missing.reason == unknown.reason == NO_TYPE
        assert missing.message.startswith("no event type: give --type (topup, roaming")
        assert unknown.message.startswith("unknown type 'topups'")

    @pytest.mark.parametrize(
        ("written", "meant"), [("TopUp", "topup"), ("top_up", "topup"), ("Usage", "usage")]
    )
    def test_a_type_in_another_spelling_names_the_one_meant(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str, meant: str
    ) -> None:
        """`"type": "TopUp"` (a serializer's class name) was told "give --type (...) or a
        "type" field", of a line that has one, in `events check`, the backtest and `rules
        test` alike (analyst walk): the type meant is named."""
        (unknown,) = check_lines([line(type=written)], None)
        assert unknown.message.startswith(
            f"unknown type {written!r}; did you mean {meant!r}? Write it so, or give --type"
        ), unknown.message
        path = tmp_path / "e.jsonl"
        path.write_bytes(line(type=written) + b"\n")
        assert main(["backtest", "--events", str(path), "--out", str(tmp_path / "o")]) == 1
        assert f"did you mean {meant!r}?" in capsys.readouterr().err

    def test_text_that_is_not_json_is_invalid_json_with_or_without_a_type(self) -> None:
        (untyped,) = check_lines([b"{not json"], None)
        (typed,) = check_lines([b"{not json"], EventType.TOPUP)
        assert untyped.reason == typed.reason == "invalid_json"
        assert untyped.message == typed.message
        assert typed.message.startswith("Invalid JSON")
        assert (untyped.event_type, typed.event_type) == ("", "topup")

    def test_json_that_is_no_object_gets_the_workers_verdict_without_a_type(self) -> None:
        """As the file readers (`backtest`) dead-letter it: the worker refuses an array
        or a number on every topic; `null` is a profile deletion, so it needs its type."""
        verdicts = list(check_lines([b"[1, 2]", b"42", b"null"], None))
        assert [(v.event_type, v.reason) for v in verdicts] == [
            ("", "invalid_event"),
            ("", "invalid_event"),
            ("", NO_TYPE),
        ]
        assert verdicts[0].message.startswith("value: a JSON array, not one event: send")

    def test_an_oversized_record_is_too_large(self) -> None:
        (verdict,) = check_lines([line(note="x" * 70_000)], None)
        assert verdict.reason == "too_large"

    def test_a_subscriber_named_twice_is_duplicate_key_as_for_a_worker(self) -> None:
        """The check keyed the line by the last subscriber_id (as orjson reads it) and took
        it, as a worker did: the event of whichever subscriber the template wrote last."""
        twice = line()[:-1] + b',"subscriber_id":"13900000002"}'
        (verdict,) = check_lines([twice], None)
        assert verdict.reason == "duplicate_key"
        assert verdict.message.startswith('"subscriber_id" appears twice in the event')


class TestCommand:
    @pytest.fixture
    def events(self, tmp_path: Path) -> Path:
        path = tmp_path / "events.jsonl.gz"
        with gzip.open(path, "wb") as file:
            file.write(b"\n".join([line(), line(amount=0), b"oops", line(event_id="e3")]))
        return path

    def test_refused_lines_are_named_by_file_and_line_and_the_exit_code_says_so(
        self, events: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["events", "check", str(events)]) == 1
        out, err = capsys.readouterr()
        refused = out.splitlines()
        assert refused[0] == (
            f"{events}:2: invalid_event (topup): amount: Input should be greater than 0"
        )
        assert refused[1].startswith(f"{events}:3: invalid_json: Invalid JSON: ")
        assert len(refused) == 2
        assert "4 line(s) checked, 2 refused" in err
        assert "schemas/<type>-event.schema.json" in err

    def test_lines_with_no_type_are_said_to_be_unchecked_not_dead_letters(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A producer's payloads checked without --type were summed up as "a worker would
        send these lines to the dead-letter topic": a worker reads the type from the topic
        and might take them all (new user's walk)."""
        path = tmp_path / "payloads.jsonl"
        path.write_bytes(line(type=None) + b"\n")
        assert main(["events", "check", str(path)]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "dead-letter topic" not in err
        assert "1 line(s) with no event type were not checked: give --type" in err

    def test_json_output_and_a_cap_on_the_lines_shown(
        self, events: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["events", "check", "--json", str(events)]) == 1
        docs = [orjson.loads(text) for text in capsys.readouterr().out.splitlines()]
        assert [(d["line"], d["reason"]) for d in docs] == [
            (2, "invalid_event"),
            (3, "invalid_json"),
        ]
        assert main(["events", "check", "--max-shown", "1", str(events)]) == 1
        out, err = capsys.readouterr()
        assert len(out.splitlines()) == 1
        assert "1 more refused line(s) not shown" in err

    def test_stdin_with_a_type_and_all_accepted_exits_0(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        payloads = line(type=None) + b"\n" + line(type=None, event_id="e2") + b"\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payloads)))
        assert main(["events", "check", "--type", "topup", "-"]) == 0
        out, err = capsys.readouterr()
        assert out == ""
        assert "2 line(s) checked, 0 refused" in err

    def test_a_missing_file_is_exit_2_before_anything_is_checked(
        self, events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """It said only "no such file: nope.jsonl", where every other command reading
        files names what to pass (journey review)."""
        assert main(["events", "check", str(events), str(tmp_path / "nope.jsonl")]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        said = "".join(err.split())  # however the console wrapped it
        wanted = (
            f"no such file: {tmp_path / 'nope.jsonl'}; check the path, or pass - to read the "
            "payloads from stdin (kcat ... | moments events check -)"
        )
        assert "".join(wanted.split()) in said

    def test_a_named_pipe_is_read_as_a_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`moments events check <(kcat ... | head)` names a pipe (/dev/fd/63); it was
        refused as "no such file" though it is there, and is read once, as a file is."""
        import os
        import threading

        pipe = tmp_path / "events.jsonl"
        os.mkfifo(pipe)

        def write() -> None:
            with pipe.open("wb") as file:
                file.write(line() + b"\n" + line(event_id="e2") + b"\n")

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert main(["events", "check", str(pipe)]) == 0
        finally:
            writer.join(timeout=10)
            if writer.is_alive():  # the check never opened it: let the writer's open return
                # A blocking open for reading here waited for ever when the writer had
                # just closed its end and not yet ended (seen once under load); one that
                # does not block frees a writer still waiting to open.
                os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
                writer.join()
        assert "2 line(s) checked, 0 refused" in capsys.readouterr().err

    def test_a_folder_is_named_as_one(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A folder was "no such file", which sent the user looking for a typo."""
        assert main(["events", "check", str(tmp_path)]) == 2
        err = " ".join(capsys.readouterr().err.split())  # rich wraps it at the terminal width
        assert f"{tmp_path}: a folder; pass the files in it" in err
        assert "no such file" not in err

    def test_a_csv_export_is_pointed_to_the_commands_that_read_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each CSV row was refused as invalid JSON, which told the producer nothing."""
        table = tmp_path / "topups.csv"
        table.write_text("type,event_id,subscriber_id\ntopup,e1,13800138001\n")
        assert main(["events", "check", str(table)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert "one JSON payload per line" in err.replace("\n", " ")
        assert "`moments backtest`" in err.replace("\n", " ")


class TestUtf16:
    """A file of UTF-16 text (Excel's "Unicode Text", Notepad's "Unicode") had every line
    refused as invalid_json, the first as "not UTF-8 (byte 0: ...; GBK, Latin-1 or
    UTF-16?)" and the rest as bare parse errors (each line after the first starts with
    the zero byte of the newline before it). It is named, with how to save or convert it,
    in the words the backtest's reader says it (one `utf16_said` for both)."""

    PAYLOADS = (line() + b"\n" + line(event_id="e2") + b"\n").decode()

    @pytest.mark.parametrize(
        ("name", "data", "convert"),
        [
            (
                "events.jsonl",
                PAYLOADS.encode("utf-16"),
                "iconv -f UTF-16 -t UTF-8 {path} > events-utf8.jsonl",
            ),
            (
                "events.jsonl",
                PAYLOADS.encode("utf-16-le"),
                "iconv -f UTF-16LE -t UTF-8 {path} > events-utf8.jsonl",
            ),
            (
                "events.jsonl",
                PAYLOADS.encode("utf-16-be"),
                "iconv -f UTF-16BE -t UTF-8 {path} > events-utf8.jsonl",
            ),
            # Notepad's "Unicode" .txt: events check reads JSON lines, so to a .jsonl
            (
                "payloads.txt",
                PAYLOADS.encode("utf-16"),
                "iconv -f UTF-16 -t UTF-8 {path} > payloads-utf8.jsonl",
            ),
            (
                "events.jsonl.gz",
                gzip.compress(PAYLOADS.encode("utf-16")),
                "zcat {path} | iconv -f UTF-16 -t UTF-8 | gzip > events-utf8.jsonl.gz",
            ),
        ],
    )
    def test_a_utf16_file_is_named_with_the_way_to_save_or_convert_it(
        self,
        tmp_path: Path,
        name: str,
        data: bytes,
        convert: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path = tmp_path / name
        path.write_bytes(data)
        assert main(["events", "check", "--type", "topup", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""  # no line judged: none was read as what it holds
        said = " ".join(err.split())
        assert f"{path}: UTF-16 text" in said
        assert convert.format(path=path) in said
        assert "invalid_json" not in said

    def test_utf16_on_stdin_says_how_to_convert_it_on_its_way_in(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        data = self.PAYLOADS.encode("utf-16")
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert main(["events", "check", "--type", "topup", "-"]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        said = " ".join(err.split())
        assert "-: UTF-16 text on standard input (a byte-order mark, FF FE)" in said
        assert "piped through `iconv -f UTF-16 -t UTF-8` on its way in" in said

    def test_utf16_from_a_named_pipe_is_told_no_file_to_convert(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`<(kcat ...)` names /dev/fd/63: it was told `iconv ... /dev/fd/63 >
        63-utf8.jsonl`, a file that is gone once read."""
        import os
        import threading

        pipe = tmp_path / "records"
        os.mkfifo(pipe)

        def write() -> None:
            with pipe.open("wb") as file:
                file.write(self.PAYLOADS.encode("utf-16"))

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert main(["events", "check", "--type", "topup", str(pipe)]) == 2
        finally:
            writer.join(timeout=10)
            if writer.is_alive():  # as in test_a_named_pipe_is_read_as_a_file
                os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
                writer.join()
        said = " ".join(capsys.readouterr().err.split())
        assert f"{pipe}: UTF-16 text from a pipe (a byte-order mark, FF FE)" in said
        assert "piped through `iconv -f UTF-16 -t UTF-8` on its way in" in said
        assert "utf8.jsonl" not in said

    def test_the_files_before_it_are_checked_and_utf8_ones_read_as_before(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """UTF-8, with its mark or not, is read as before (the test looks at the first
        line's first bytes only): the file before the UTF-16 one is checked."""
        utf8 = tmp_path / "bom.jsonl"
        utf8.write_bytes(b"\xef\xbb\xbf" + self.PAYLOADS.encode())
        assert main(["events", "check", "--type", "topup", str(utf8)]) == 0
        assert "2 line(s) checked, 0 refused" in capsys.readouterr().err
        wide = tmp_path / "wide.jsonl"
        wide.write_bytes(self.PAYLOADS.encode("utf-16"))
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(line(amount=0) + b"\n")
        assert main(["events", "check", "--type", "topup", str(bad), str(wide)]) == 2
        out, err = capsys.readouterr()
        assert out.startswith(f"{bad}:1: invalid_event")
        assert f"{wide}: UTF-16 text" in " ".join(err.split())

    def test_the_totals_are_said_and_the_files_after_it_checked(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """It stopped at the UTF-16 file: the refusals printed before had no totals, and
        the files after it were not checked. Now it is named and left out, the others
        checked and counted, and the exit status is still 2 (a file went unchecked)."""
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(line(amount=0) + b"\n")
        wide = tmp_path / "wide.jsonl"
        wide.write_bytes(self.PAYLOADS.encode("utf-16"))
        good = tmp_path / "good.jsonl"
        good.write_bytes(line(event_id="e3") + b"\n")
        files = [str(bad), str(wide), str(good)]
        assert main(["events", "check", "--type", "topup", *files]) == 2
        out, err = capsys.readouterr()
        assert out.startswith(f"{bad}:1: invalid_event")
        said = " ".join(err.split())
        assert f"{wide}: UTF-16 text" in said
        assert "2 line(s) checked, 1 refused" in said
        assert said.endswith(f"moments: not checked, UTF-16 text (see above): {wide}")

    @pytest.mark.parametrize(
        ("encoding", "form"),
        [
            ("utf-16-le", "no byte-order mark, little-endian"),
            ("utf-16-be", "no byte-order mark, big-endian"),
        ],
    )
    @pytest.mark.parametrize("blank", ["\n", "\r\n", "\n\n"])
    def test_a_file_without_the_mark_whose_first_line_is_blank_is_named(
        self,
        tmp_path: Path,
        encoding: str,
        form: str,
        blank: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Its first line is `\\n` (the `\\x00` after it begins the next), of which the
        first four bytes told nothing: every line was refused as invalid_json."""
        path = tmp_path / "events.jsonl"
        path.write_bytes((blank + self.PAYLOADS).encode(encoding))
        assert main(["events", "check", "--type", "topup", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        said = " ".join(err.split())
        assert f"{path}: UTF-16 text ({form})" in said
        assert "invalid_json" not in out + said

    def test_utf8_with_blank_first_lines_is_read_as_before(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "events.jsonl"
        path.write_bytes(b"\n\n" + self.PAYLOADS.encode())
        assert main(["events", "check", "--type", "topup", str(path)]) == 0
        assert "2 line(s) checked, 0 refused" in capsys.readouterr().err


class TestProfileDeletions:
    """A profile record whose value is JSON `null` (kafka-python's JSON value_serializer
    given None writes it) is a deletion to a worker: keyed by the subscriber id, as the
    contract asks, it erases that subscriber and warns that compaction keeps such a record.
    `events check --type profile` refused the same bytes as `missing_key` ("a profile
    tombstone needs the subscriber id as its key"), exit 1, though a line carries no key
    and every other line is judged as keyed by its subscriber (found producing as the CRM
    and checking `kcat -C -t telecom.profile -e | moments events check --type profile -`)."""

    def test_a_json_null_profile_line_is_a_deletion_a_worker_takes(self) -> None:
        (verdict,) = check_lines([b"null"], EventType.PROFILE)
        assert (verdict.event_type, verdict.reason) == ("profile", None)
        assert verdict.deletion

    def test_on_other_topics_and_without_a_type_null_stays_refused(self) -> None:
        (topup,) = check_lines([b"null"], EventType.TOPUP)
        (untyped,) = check_lines([b"null"], None)
        assert (topup.reason, untyped.reason) == ("empty_value", NO_TYPE)
        assert not topup.deletion
        assert not untyped.deletion

    def test_the_command_takes_it_and_says_what_a_worker_does_with_it(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        update = {k: v for k, v in GOOD_TOPUP.items() if k not in ("type", "amount", "channel")}
        payloads = orjson.dumps(update) + b"\nnull\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payloads)))
        assert main(["events", "check", "--type", "profile", "-"]) == 0
        out, err = capsys.readouterr()
        assert out == ""
        err = " ".join(err.split())
        assert "2 line(s) checked, 0 refused" in err
        assert "1 line(s) `null`: a deletion" in err
        assert "send a null value (a tombstone)" in err


class TestTheWorkersTolerance:
    """`events check` took events up to 15 minutes ahead whatever MOMENTS_LATENESS_SECONDS
    said, where a worker takes them up to the shorter of the two (`allowed_ahead`): with a
    lateness of 300 s, a line 10 minutes ahead passed the check and was a `future` dead
    letter on the stream. The check reads the same setting now."""

    NOW = "2026-11-22T09:30:00+08:00"
    AHEAD_MIN = (4, 6, 14, 16)

    def lines(self) -> list[bytes]:
        at = dt.datetime.fromisoformat(self.NOW)
        return [
            line(event_id=f"e{m}", occurred_at=(at + dt.timedelta(minutes=m)).isoformat())
            for m in self.AHEAD_MIN
        ]

    def checked(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> set[int]:
        """The lines `events check --json` refuses as `future` (numbered from 1)."""
        path = tmp_path / "ahead.jsonl"
        path.write_bytes(b"\n".join(self.lines()) + b"\n")
        main(["events", "check", "--json", "--now", self.NOW, str(path)])
        refused = [orjson.loads(out) for out in capsys.readouterr().out.splitlines()]
        assert {r["reason"] for r in refused} <= {"future"}
        return {r["line"] for r in refused}

    def on_the_stream(self, lateness_s: int) -> set[int]:
        """The same lines as a worker with that lateness judges them at the same clock."""
        from moments.engine import Detector
        from moments.records import RawRecord
        from moments.store import DictStateStore

        detector = Detector(
            default_rules(),
            {t.value: t for t in EventType},
            lateness=dt.timedelta(seconds=lateness_s),
        )
        records = [
            RawRecord("topup", 0, n, b"13800000001", value)
            for n, value in enumerate(self.lines(), 1)
        ]
        now = dt.datetime.fromisoformat(self.NOW)
        result = detector.process(records, DictStateStore().load, now)
        return {dl.record.offset for dl in result.dead_letters if dl.reason.value == "future"}

    @pytest.mark.parametrize("lateness_s", [300, 600, 3600])
    def test_the_check_refuses_what_a_worker_with_the_same_setting_refuses(
        self,
        lateness_s: int,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("MOMENTS_LATENESS_SECONDS", str(lateness_s))
        refused = self.checked(tmp_path, capsys, monkeypatch)
        assert refused == self.on_the_stream(lateness_s)
        limit_min = min(15, lateness_s // 60)
        assert refused == {n for n, m in enumerate(self.AHEAD_MIN, 1) if m > limit_min}

    def test_the_note_names_the_limit_in_force(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MOMENTS_LATENESS_SECONDS", "300")
        path = tmp_path / "ahead.jsonl"
        path.write_bytes(self.lines()[1] + b"\n")  # 6 minutes ahead
        assert main(["events", "check", str(path)]) == 0  # the wall clock: long past
        assert main(["events", "check", "--now", self.NOW, str(path)]) == 1
        said = capsys.readouterr().out
        assert "is 360 s ahead of the worker's clock" in said
        assert "at most 300 s" in said


class TestCrOnlyLineEndings:
    """A file whose lines end in CR alone (old Mac OS text, some legacy exporters) reads
    as one line: it was told "more than one JSON value in the record", the line endings
    not named. It is named, with the conversion to run."""

    CR = line() + b"\r" + line(event_id="e2") + b"\r" + line(event_id="e3") + b"\r"

    @pytest.mark.parametrize(
        ("name", "data", "convert"),
        [
            ("old.jsonl", CR, "tr '\\r' '\\n' < {path} > old-lf.jsonl"),
            (
                "old.jsonl.gz",
                gzip.compress(CR),
                "zcat {path} | tr '\\r' '\\n' | gzip > old-lf.jsonl.gz",
            ),
        ],
    )
    def test_the_line_endings_are_named_with_the_fix(
        self,
        tmp_path: Path,
        name: str,
        data: bytes,
        convert: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        path = tmp_path / name
        path.write_bytes(data)
        assert main(["events", "check", "--now", "2026-11-22T10:00:00+08:00", str(path)]) == 1
        (said,) = capsys.readouterr().out.splitlines()
        assert said.startswith(f"{path}:1: invalid_json: ")
        assert "lines end in CR alone" in said
        assert convert.format(path=path) in said

    def test_on_stdin_it_says_to_convert_on_the_way_in(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(self.CR)))
        assert main(["events", "check", "--now", "2026-11-22T10:00:00+08:00", "-"]) == 1
        said = capsys.readouterr().out
        assert "lines end in CR alone" in said
        assert "tr '\\r' '\\n'" in said

    def test_the_converted_file_is_taken(self) -> None:
        converted = self.CR.replace(b"\r", b"\n").splitlines(keepends=True)
        assert [v.reason for v in check_lines(converted, None)] == [None] * 3

    def test_crlf_and_a_lone_value_with_a_cr_are_read_as_before(self) -> None:
        """CRLF lines are taken; one value whose CR is whitespace inside it is a worker's
        value like any other, not a file's line ending."""
        crlf = [line() + b"\r\n", line(event_id="e2") + b"\r\n"]
        assert [v.reason for v in check_lines(crlf, None)] == [None, None]
        inside = line().replace(b',"amount"', b',\r"amount"')
        assert [v.reason for v in check_lines([inside], None)] == [None]
        (cut,) = check_lines([b'{"type": "topup",\r"event_id": '], None)
        assert cut.reason == "invalid_json"
        assert "CR alone" not in cut.message


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_a_file_with_no_line_to_check_is_said_so_not_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    """An empty file (a producer's sample cut to nothing, `head` of a topic that had none)
    passed with exit 0 and an empty table: a CI step checking it was green on nothing."""
    path = tmp_path / "sample.jsonl"
    path.write_bytes(content)
    assert main(["events", "check", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"nothing was checked: {path} holds no payload" in err
    assert "one JSON object a line" in err


def test_a_negative_max_shown_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`--max-shown -1` was taken and printed no refused line, as 0 does: a typo for 1
    that read as "nothing to show"."""
    from moments.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["events", "check", "--max-shown", "-1", "events.jsonl"])
    assert exit_.value.code == 2
    said = capsys.readouterr().err
    assert "'-1': write a whole number of 0 or more, 0 to print no refused line" in said


def test_an_empty_file_among_checked_ones_is_named_without_saying_nothing_was_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With several files, one empty: 'nothing was checked: b.jsonl holds no payload'
    stood under the table of the lines checked in the others."""
    good = tmp_path / "a.jsonl"
    good.write_bytes(b'{"a": 1}\n')
    empty, blank = tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n")
    assert main(["events", "check", str(good), str(empty), str(blank)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "nothing was checked" not in err
    assert f"{empty}, {blank} hold no payload" in err


class TestProgressInALog:
    """A new user's first hour (review): `events check` is for a producer's CI, and drew its
    progress only on a terminal (a spinner); in a CI log a day's export of millions of
    lines checked for minutes without a word, where `rules test` and the backtest say how
    far they are every 10 s. A check of a few lines still says nothing more than before."""

    def file(self, tmp_path: Path) -> Path:
        path = tmp_path / "day.jsonl"
        path.write_bytes(b"\n".join(line(event_id=f"e{i}") for i in range(6)) + b"\n")
        return path

    def clock(self, monkeypatch: pytest.MonkeyPatch, step_s: float) -> None:
        readings: list[float] = []

        def clock() -> float:
            readings.append(len(readings) * step_s)
            return readings[-1]

        monkeypatch.setattr("moments.progresslines.CLOCK", clock)

    def test_a_long_check_says_how_far_it_is(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = self.file(tmp_path)
        monkeypatch.setattr("moments.events_cli.PROGRESS_EVERY", 2)  # a count every 2 lines
        self.clock(monkeypatch, step_s=PROGRESS_EVERY_S)  # each reading: a line is due
        assert main(["events", "check", "--now", "2026-11-22T10:00:00+08:00", str(path)]) == 0
        err = capsys.readouterr().err
        assert "events check: 2 lines in " in err
        assert f"/s), reading {path}\n" in err
        assert "events check: 4 lines in " in err
        assert err.count("events check: 6 lines in ") == 1  # the last: all of them, once

    def test_a_short_one_says_nothing_of_progress(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = self.file(tmp_path)
        monkeypatch.setattr("moments.events_cli.PROGRESS_EVERY", 2)
        self.clock(monkeypatch, step_s=0.001)
        assert main(["events", "check", "--now", "2026-11-22T10:00:00+08:00", str(path)]) == 0
        assert "events check: " not in capsys.readouterr().err
