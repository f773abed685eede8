"""A line naming an identity field twice gets the stream's verdict in the backtest too:
the stream and `events check` refuse it (`duplicate_key`), but the backtest re-wrote each
line from its parsed object before the engine read it, which kept the last of the two
and applied the event (another subscriber's, another time). The engine now reads the
line's own bytes, as a producer would send them, so the money is as written too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.decoding import decode
from moments.eventcheck import check_lines
from moments.models import EventType
from moments.records import DeadLetter, RawRecord

from .catalogs import default_rules

WHEN = '"occurred_at": "2026-11-10T10:00:00+08:00"'


def topup(n: int, *fields: str) -> str:
    own = [f'"event_id": "t{n}"', f'"subscriber_id": "1380000000{n}"', WHEN, '"channel": "app"']
    return "{" + ", ".join([*own, '"amount": 1.50', *fields]) + "}"


LINES = [
    topup(1),
    topup(2, '"subscriber_id": "13900000009"'),  # who: the stream refuses it
    topup(3, '"event_id": "t9"'),
    topup(4, WHEN.replace("10T", "12T")),
    topup(5, '"note": {"subscriber_id": "x", "event_id": "y"}'),  # nested: no duplicate
]
VERDICTS = [None, "duplicate_key", "duplicate_key", "duplicate_key", None]


def stream_verdict(value: str) -> str | None:
    """The live worker's verdict on the value, keyed by its first subscriber id."""
    sub = value.split('"subscriber_id": "')[1].split('"')[0]
    result = decode(RawRecord("telecom.topup", 0, 0, sub.encode(), value.encode()), EventType.TOPUP)
    return result.reason.value if isinstance(result, DeadLetter) else None


def test_the_stream_refuses_a_repeated_identity_field() -> None:
    assert [stream_verdict(line) for line in LINES] == VERDICTS


def write(path: Path, typed: bool) -> Path:
    prefix = '{"type": "topup", ' if typed else "{"
    path.write_text("".join(prefix + line[1:] + "\n" for line in LINES))
    return path


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "one_topic"])
class TestBacktest:
    def test_a_repeated_identity_field_is_dead_lettered_as_on_the_stream(
        self, tmp_path: Path, typed: bool
    ) -> None:
        file = EventFile(write(tmp_path / "h.jsonl", typed), None if typed else EventType.TOPUP)
        result = asyncio.run(Backtest(default_rules()).run(file))
        assert result.events == len(LINES)
        assert result.dead_letters == {"duplicate_key": 3}

    def test_the_engine_reads_the_line_as_written(self, tmp_path: Path, typed: bool) -> None:
        """The bytes a producer would send: the repeated field and `1.50` as they are."""
        path = write(tmp_path / "h.jsonl", typed)
        events = list(EventFile(path, None if typed else EventType.TOPUP))
        assert [e.value for e in events] == path.read_bytes().splitlines()
        verdicts = [decode(RawRecord("t", 0, 0, e.key, e.value), e.event_type) for e in events]
        reasons = [v.reason.value if isinstance(v, DeadLetter) else None for v in verdicts]
        assert reasons == VERDICTS


def test_events_check_says_the_same(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", typed=True)
    verdicts = list(check_lines(path.read_bytes().splitlines(), None))
    assert [v.reason for v in verdicts] == VERDICTS
