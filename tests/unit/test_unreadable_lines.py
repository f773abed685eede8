"""A line of a history file that is no JSON object (cut off by a truncated export, a
trailing comma, a lone surrogate, binary junk, a JSON array) gets the stream's verdict in
the file readers (`backtest`, `rules test`, `state seed`): the live worker dead-letters
such a value (`invalid_json`, or whatever `decode` says) and goes on; the readers stopped
the whole run at it with "file:line: not JSON". A file that is no JSON lines at all (a CSV
named .jsonl, a binary file, a wrong gzip) still stops, with a message naming the fix."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import orjson
import pytest

from moments import backtest_input
from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.cli import main
from moments.decoding import decode
from moments.models import EventType
from moments.records import DeadLetter, RawRecord
from moments.rulecheck import EventFileError
from moments.seed import build_states, describe

from .catalogs import default_rules

CATALOG = Path(__file__).resolve().parents[2] / "src" / "rules" / "catalog" / "default.yaml"


def topup(n: int, **fields: object) -> bytes:
    doc = {
        "type": "topup",
        "event_id": f"t{n}",
        "subscriber_id": f"1380000000{n}",
        "occurred_at": f"2026-11-10T1{n}:00:00+08:00",
        "amount": 50,
        "channel": "app",
    }
    return orjson.dumps({**doc, **fields})


BAD = [
    topup(2)[:40],  # cut off by a truncated export
    topup(3)[:-1] + b",}",  # a trailing comma
    b'{"type": "topup", "event_id": "\\ud800"}',  # a lone surrogate
    b"\x00\x9f\xff junk \x01",  # binary junk
    b"[1, 2]",  # JSON, but no object
]


def write(path: Path) -> Path:
    """Good lines around the bad ones (2, 4, 5, 6, 7); line 3 is blank."""
    lines = [topup(1), BAD[0], b"", BAD[1], BAD[2], BAD[3], BAD[4], topup(8), topup(9)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def stream_verdict(value: bytes, event_type: EventType = EventType.TOPUP) -> str | None:
    result = decode(RawRecord(event_type.value, 0, 0, None, value), event_type)
    return result.reason.value if isinstance(result, DeadLetter) else None


def test_the_stream_dead_letters_each_bad_line() -> None:
    assert [stream_verdict(v) for v in BAD] == ["invalid_json"] * 4 + ["invalid_event"]


class TestBacktest:
    def test_a_bad_line_is_dead_lettered_as_the_stream_does_and_the_run_goes_on(
        self, tmp_path: Path
    ) -> None:
        path = write(tmp_path / "h.jsonl")
        file = EventFile(path)
        events = list(file)
        assert len(events) == 8
        assert [e.value for e in events[1:6]] == BAD  # the bytes the stream would get
        # The type a cut line still names is its topic; else the file's default (usage).
        assert [e.event_type for e in events[1:6]] == [EventType.TOPUP] * 3 + [EventType.USAGE] * 2
        assert file.unreadable == [2, 4, 5, 6, 7]
        assert backtest_input.unreadable_lines([file]) == (
            5,
            [f"{path}:{n}" for n in (2, 4, 5, 6, 7)],
        )
        result = asyncio.run(Backtest(default_rules()).run(EventFile(path)))
        assert result.events == 8
        assert result.dead_letters == {"invalid_json": 4, "invalid_event": 1}

    def test_the_default_type_is_the_topic_of_a_line_that_names_none(self, tmp_path: Path) -> None:
        path = tmp_path / "p.jsonl"
        path.write_bytes(topup(1) + b"\nnull\n")
        events = list(EventFile(path, EventType.PROFILE))
        assert events[1].event_type is EventType.PROFILE
        assert events[1].value == b"null"

    def test_the_report_names_the_lines(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("COLUMNS", "400")  # paths unwrapped
        path = write(tmp_path / "h.jsonl")
        out = tmp_path / "out"
        assert main(["backtest", "--events", str(path), "--out", str(out)]) == 0
        summary = orjson.loads((out / "report.json").read_bytes())["summary"]
        assert summary["dead_letters"] == {"invalid_json": 4, "invalid_event": 1}
        assert summary["unreadable_lines"] == {
            "count": 5,
            "first": [f"{path}:{n}" for n in (2, 4, 5, 6, 7)],
        }
        captured = capsys.readouterr()
        said = " ".join((captured.out + captured.err).split())
        assert f"5 line(s) no JSON object, refused as the stream refuses them: {path}:2" in said
        assert "report.md" in said  # the run went to its end
        assert f"{path}:7" in (out / "report.md").read_text()

    def test_a_gzip_file_too(self, tmp_path: Path) -> None:
        path = tmp_path / "h.jsonl.gz"
        path.write_bytes(gzip.compress(write(tmp_path / "h.jsonl").read_bytes()))
        file = EventFile(path)
        assert len(list(file)) == 8
        assert file.unreadable == [2, 4, 5, 6, 7]


def test_rules_test_goes_on_and_names_the_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "h.jsonl")
    assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 0
    out = capsys.readouterr().out
    assert "5 event(s) refused:" in out
    assert f"5 line(s) no JSON object, refused as the stream refuses them: {path}:2, " in out


def test_state_seed_counts_and_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    path = write(tmp_path / "h.jsonl")
    seeded = build_states(default_rules(), EventFile(path))
    assert seeded.dead_letters == {"invalid_json": 4, "invalid_event": 1}
    assert sorted(seeded.records) == ["13800000001", "13800000008", "13800000009"]
    assert describe(seeded, 4)["dead letters"] == 5
    assert main(["state", "seed", "--events", str(path), "--dry-run"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"lines no JSON object (dead letters) │ 5: {path}:2, {path}:4" in said


class TestNotJsonLines:
    @pytest.mark.parametrize(
        ("name", "raw"),
        [
            ("export.jsonl", b"type,subscriber_id\n" + b"topup,13800000001\n" * 30),
            ("blob.jsonl", bytes(range(256)) * 40),
            ("short.jsonl", b"type,subscriber_id\ntopup,13800000001\n"),  # ends first
        ],
    )
    def test_a_file_with_no_json_object_in_its_first_lines_stops(
        self, tmp_path: Path, name: str, raw: bytes
    ) -> None:
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(EventFileError, match=f"{name}: none of its first .* a JSON object"):
            list(EventFile(path))

    def test_a_json_object_within_the_first_lines_is_a_json_lines_file(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "late.jsonl"
        path.write_bytes(b"junk\n" * (backtest_input.READABLE_WITHIN - 1) + topup(1) + b"\n")
        file = EventFile(path)
        assert len(list(file)) == backtest_input.READABLE_WITHIN
        assert len(file.unreadable) == backtest_input.READABLE_WITHIN - 1
        path.write_bytes(b"junk\n" * backtest_input.READABLE_WITHIN + topup(1) + b"\n")
        with pytest.raises(EventFileError, match=r"late\.jsonl: none of its first"):
            list(EventFile(path))

    def test_a_wrong_or_cut_gzip_names_the_fix(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain.jsonl.gz"
        plain.write_bytes(topup(1) + b"\n")
        with pytest.raises(EventFileError, match=r"plain\.jsonl\.gz: not gzip"):
            list(EventFile(plain))
        cut = tmp_path / "cut.jsonl.gz"
        cut.write_bytes(gzip.compress(b"".join(topup(n) + b"\n" for n in range(9)))[:-30])
        file = EventFile(cut)  # read up to the cut (tests/unit/test_history_edges.py)
        list(file)
        assert file.cut is not None
        assert "the file ends early: gzip stream truncated" in file.cut.said()
        assert "re-copy the file" in file.cut.said()

    def test_the_command_says_it(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "export.jsonl"
        path.write_bytes(b"type,subscriber_id\ntopup,13800000001\n")
        assert main(["backtest", "--events", str(path), "--out", str(tmp_path / "o")]) == 1
        assert "name a CSV file .csv" in capsys.readouterr().err


def test_a_seed_in_parts_counts_them_in_the_part_that_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line that is no JSON object has no key: with --partitions only the part holding
    the empty key's partition reads it (as any event without a subscriber id) and counts
    it among its dead letters; every other part said it had those 5 dead letters too."""
    from moments.partitioning import partition_of

    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("MOMENTS_PARTITIONS", "4")
    path = write(tmp_path / "h.jsonl")
    keyless = partition_of(b"", 4)
    others = ",".join(str(p) for p in range(4) if p != keyless)
    for part, expected in ((str(keyless), True), (others, False)):
        argv = ["state", "seed", "--events", str(path), "--dry-run", "--to", "2026-11-12"]
        argv += ["--partitions", part]
        assert main(argv) == 0
        said = " ".join(capsys.readouterr().out.split())
        assert ("lines no JSON object (dead letters) │ 5:" in said) is expected, (part, said)


def test_a_byte_order_mark_is_the_file_s_not_its_first_event_s(tmp_path: Path) -> None:
    """An editor or export that saves "UTF-8 with BOM" starts the file with EF BB BF: the
    CSV reader drops it (utf-8-sig); a JSON lines file had its first event refused as no
    JSON object, a dead letter the stream, which never sees the file, would not make.
    `events check` judges that line as the backtest reads it."""
    from moments.eventcheck import check_lines

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + topup(1) + b"\n" + topup(2) + b"\n")
    file = EventFile(path)
    events = list(file)
    assert (file.unreadable_count, file.unreadable) == (0, [])
    assert [e.key for e in events] == [b"13800000001", b"13800000002"]
    first = RawRecord("topup", 0, 0, events[0].key, events[0].value)
    assert not isinstance(decode(first, EventType.TOPUP), DeadLetter)
    with path.open("rb") as lines:
        assert [v.reason for v in check_lines(lines, None)] == [None, None]
    with path.open("rb") as lines:  # records from a topic keep it: the worker refuses them
        assert next(check_lines(lines, None, file=False)).reason is not None
    # Only at the start of the file: elsewhere the bytes are the line's, as the stream's.
    path.write_bytes(topup(1) + b"\n\xef\xbb\xbf" + topup(2) + b"\n")
    file = EventFile(path)
    assert len(list(file)) == 2
    assert file.unreadable == [2]
