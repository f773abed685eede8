"""A line holding NaN or Infinity (not JSON, though Python's `json.dumps` and JavaScript
writers produce them) gets the stream's verdict everywhere: the live worker parses values
with pydantic's JSON parser, which reads them, so NaN in an unknown field is accepted and
in a contract field is an `invalid_event`. The file readers (`backtest`, `rules test`,
`state seed`) stopped at such a line with "file:line: not JSON", and `events check`
judged it without its key or type (a `missing_key`, or a usage event's missing `kind`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.cli import main
from moments.decoding import decode
from moments.eventcheck import check_lines
from moments.models import EventType
from moments.records import DeadLetter, RawRecord

from .catalogs import default_rules

EVENT = (
    '"event_id": "{id}", "subscriber_id": "{sub}", '
    '"occurred_at": "2026-11-10T10:00:00+08:00", "channel": "app"'
)


def topup(n: int, extra: str) -> str:
    return "{" + EVENT.format(id=f"t{n}", sub=f"1380000000{n}") + ", " + extra + "}"


LINES = [
    topup(1, '"amount": 50, "score": NaN'),  # an unknown field: the stream accepts it
    topup(2, '"amount": Infinity'),  # a contract field: invalid_event
    topup(3, '"amount": 50, "x": -Infinity'),
    topup(4, '"amount": 50'),  # plain JSON, for comparison
]


def stream_verdict(value: str) -> str | None:
    """The live worker's verdict on the value, keyed by its subscriber as a producer sends it."""
    sub = value.split('"subscriber_id": "')[1].split('"')[0]
    result = decode(RawRecord("telecom.topup", 0, 0, sub.encode(), value.encode()), EventType.TOPUP)
    return result.reason.value if isinstance(result, DeadLetter) else None


def test_the_stream_accepts_nan_in_an_unknown_field_and_refuses_it_in_a_contract_one() -> None:
    assert [stream_verdict(v) for v in LINES] == [None, "invalid_event", None, None]


def write(path: Path, typed: bool = True) -> Path:
    prefix = '{"type": "topup", ' if typed else "{"
    path.write_text("".join(prefix + line[1:] + "\n" for line in LINES))
    return path


class TestFileReaders:
    def test_the_backtest_takes_or_dead_letters_each_line_as_the_stream_does(
        self, tmp_path: Path
    ) -> None:
        events = list(EventFile(write(tmp_path / "h.jsonl")))
        assert [e.key for e in events] == [f"1380000000{n}".encode() for n in (1, 2, 3, 4)]
        assert all(e.at > 0 for e in events)
        assert all(e.event_type is EventType.TOPUP for e in events)
        result = asyncio.run(Backtest(default_rules()).run(EventFile(tmp_path / "h.jsonl")))
        assert result.dead_letters == {"invalid_event": 1}
        assert result.events == 4

    def test_a_line_of_a_file_without_types_is_read_as_the_default_type(
        self, tmp_path: Path
    ) -> None:
        path = write(tmp_path / "topic.jsonl", typed=False)
        events = list(EventFile(path, EventType.TOPUP))
        assert [e.event_type for e in events] == [EventType.TOPUP] * 4
        verdicts = [decode(RawRecord("t", 0, 0, e.key, e.value), EventType.TOPUP) for e in events]
        assert [v.reason.value if isinstance(v, DeadLetter) else None for v in verdicts] == [
            None,
            "invalid_event",
            None,
            None,
        ]

    def test_a_line_no_parser_reads_is_dead_lettered_as_on_the_stream(self, tmp_path: Path) -> None:
        path = tmp_path / "cut.jsonl"
        path.write_text(
            '{"type": "topup", ' + LINES[3][1:] + '\n{"type": "topup", "amount": NaN,\n'
        )
        file = EventFile(path)
        result = asyncio.run(Backtest(default_rules()).run(file))
        assert result.dead_letters == {"invalid_json": 1}
        assert file.unreadable == [2]

    def test_rules_test_reads_the_file_to_the_end(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(tmp_path / "h.jsonl")
        catalog = Path(__file__).resolve().parents[2] / "src" / "rules" / "catalog" / "default.yaml"
        assert main(["rules", "test", str(catalog), "--events", str(path)]) == 0
        captured = capsys.readouterr()
        assert "not JSON" not in captured.out + captured.err
        assert f"1 event(s) refused:\n  {path}:2: topup: amount: " in captured.out  # Infinity


class TestEventsCheck:
    @pytest.mark.parametrize("event_type", [None, EventType.TOPUP])
    def test_each_line_gets_the_streams_verdict(
        self, tmp_path: Path, event_type: EventType | None
    ) -> None:
        path = write(tmp_path / "h.jsonl", typed=event_type is None)
        verdicts = list(check_lines(path.read_bytes().splitlines(), event_type))
        assert [(v.event_type, v.reason) for v in verdicts] == [
            ("topup", stream_verdict(value)) for value in LINES
        ]
