"""A JSON object naming no event type (no `"type"`, an unknown one, or `null`) in a history
file read without `--type`: it stopped the whole `backtest`, `rules test` or `state seed`
at that line, though the other lines name theirs. It is now left out, counted and named
(`file:line`); a file none of whose first lines names a type (records of one topic) is
still refused, with `--type` as the fix. `null` is such a line, as `events check` says (a
deletion on the profile topic, a dead letter on the others: the topic decides)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from moments.backtest import Backtest
from moments.backtest_input import READABLE_WITHIN, EventFile, untyped_lines
from moments.cli import main
from moments.eventcheck import NO_TYPE, check_lines
from moments.models import EventType
from moments.rulecheck import MissingEventTypeError
from moments.seed import build_states

from .catalogs import default_rules
from .test_unreadable_lines import CATALOG, topup


def write(path: Path) -> Path:
    """Typed lines around three that name no type: none (3), an unknown one (5), null (6)."""
    untyped = topup(3)[:-1].replace(b'"type":"topup",', b"") + b"}"
    lines = [topup(1), topup(2), untyped, topup(4), topup(5, type="top-up"), b"null", topup(7)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_line_with_no_type_is_left_out_counted_and_named(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl")
    file = EventFile(path)
    events = list(file)
    assert [e.key for e in events] == [f"1380000000{n}".encode() for n in (1, 2, 4, 7)]
    assert (file.untyped_count, file.untyped) == (3, [3, 5, 6])
    assert (file.unreadable_count, file.unreadable) == (0, [])  # no dead letter of its own
    assert untyped_lines([file]) == (3, [f"{path}:{n}" for n in (3, 5, 6)])
    result = asyncio.run(Backtest(default_rules()).run(EventFile(path)))
    assert result.events == 4
    assert not result.dead_letters


def test_the_backtest_goes_on_and_reports_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    path = write(tmp_path / "h.jsonl")
    out = tmp_path / "out"
    assert main(["backtest", "--events", str(path), "--out", str(out)]) == 0
    summary = orjson.loads((out / "report.json").read_bytes())["summary"]
    assert summary["untyped_lines"] == {"count": 3, "first": [f"{path}:{n}" for n in (3, 5, 6)]}
    captured = capsys.readouterr()  # the notes go to stderr
    said = " ".join((captured.out + captured.err).split())
    assert f'3 line(s) with no event type, left out (add their "type"): {path}:3,' in said
    assert f"{path}:6" in (out / "report.md").read_text()


def test_rules_test_and_state_seed_go_on_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    path = write(tmp_path / "h.jsonl")
    assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 0
    assert "3 line(s) with no event type, left out" in capsys.readouterr().out
    seeded = build_states(default_rules(), EventFile(path))
    assert sorted(seeded.records) == [f"1380000000{n}" for n in (1, 2, 4, 7)]
    assert main(["state", "seed", "--events", str(path), "--dry-run"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"lines with no event type (left out) │ 3: {path}:3, {path}:5, {path}:6" in said


class TestFirstLines:
    def test_a_file_whose_first_lines_name_no_type_is_refused_with_the_fix(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "topic.jsonl"
        no_type = b'{"event_id": "x", "subscriber_id": "13800000001"}\n'
        path.write_bytes(no_type * READABLE_WITHIN + topup(1) + b"\n")
        with pytest.raises(MissingEventTypeError) as caught:
            list(EventFile(path))
        said = str(caught.value)
        assert said.startswith(f"{path}:1: no event type: give --type (topup, ")
        assert said.count("--type") == 1
        assert f"first {READABLE_WITHIN} line(s)" in said
        path.write_bytes(no_type * (READABLE_WITHIN - 1) + topup(1) + b"\n")
        file = EventFile(path)
        assert len(list(file)) == 1
        assert file.untyped_count == READABLE_WITHIN - 1

    def test_a_short_file_with_no_type_at_all_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "short.jsonl"
        path.write_bytes(b'{"event_id": "x"}\nnull\n')
        with pytest.raises(MissingEventTypeError, match=r"short\.jsonl:1: no event type"):
            list(EventFile(path))

    def test_the_type_given_reads_them_all(self, tmp_path: Path) -> None:
        path = tmp_path / "topic.jsonl"
        path.write_bytes(b'{"event_id": "x", "subscriber_id": "13800000001"}\n' * 30)
        file = EventFile(path, EventType.USAGE)
        assert len(list(file)) == 30
        assert file.untyped_count == 0

    def test_the_command_says_the_fix_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "topic.jsonl"
        path.write_bytes(b'{"event_id": "x"}\n' * 30)
        assert main(["rules", "test", str(CATALOG), "--events", str(path)]) == 1
        assert capsys.readouterr().err.count("--type") == 1


def test_null_is_a_line_with_no_type_in_events_check_and_the_backtest(tmp_path: Path) -> None:
    """events check said "no event type"; the backtest dead-lettered it on `usage`."""
    path = tmp_path / "h.jsonl"
    path.write_bytes(topup(1) + b"\nnull\n")
    with path.open("rb") as lines:
        assert [v.reason for v in check_lines(lines, None)] == [None, NO_TYPE]
    file = EventFile(path)
    assert len(list(file)) == 1
    assert (file.untyped, file.unreadable) == ([2], [])
    # With a type, the topic decides, in both: a profile deletion (of no key: refused).
    with path.open("rb") as lines:
        assert [v.reason for v in check_lines(lines, EventType.PROFILE)][1] != NO_TYPE
    events = list(EventFile(path, EventType.PROFILE))
    assert events[1].event_type is EventType.PROFILE
    assert events[1].value == b"null"


class TestCsv:
    HEADER = b"type,event_id,subscriber_id,occurred_at,amount,channel\n"

    def row(self, n: int, kind: str = "topup") -> bytes:
        return f"{kind},t{n},1380000000{n},2026-11-10T1{n}:00:00+08:00,50,app\n".encode()

    def test_a_row_with_an_empty_or_unknown_type_is_left_out_and_named(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "h.csv"
        rows = [self.row(1), self.row(2, ""), self.row(3, "top-up"), self.row(4)]
        path.write_bytes(self.HEADER + b"".join(rows))
        file = EventFile(path)
        assert [e.key for e in file] == [b"13800000001", b"13800000004"]
        assert (file.untyped_count, file.untyped) == (2, [3, 4])  # the header is line 1

    def test_a_csv_whose_first_rows_name_no_type_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "h.csv"
        path.write_bytes(self.HEADER + self.row(1, "") * READABLE_WITHIN + self.row(2))
        with pytest.raises(MissingEventTypeError, match=r"h\.csv:2: no event type: give --type"):
            list(EventFile(path))
        path.write_bytes(self.HEADER + self.row(1, "") * 3)
        with pytest.raises(MissingEventTypeError, match="none of its first 3 line"):
            list(EventFile(path))
        assert len(list(EventFile(path, EventType.TOPUP))) == 3


def test_state_seed_takes_type_as_the_backtest_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal names `--type`, which `state seed` lacked: it now reads a topic's
    records as the backtest and `rules test` do."""
    path = tmp_path / "topups.jsonl"
    path.write_bytes(
        b"".join(topup(n)[:-1].replace(b'"type":"topup",', b"") + b"}\n" for n in (1, 2))
    )
    argv = ["state", "seed", "--events", str(path), "--dry-run"]
    assert main(argv) == 1
    assert "no event type: give --type (topup" in capsys.readouterr().err
    assert main([*argv, "--type", "topup"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "subscribers │ 2" in said
