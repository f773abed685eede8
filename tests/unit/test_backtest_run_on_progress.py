"""The backtest says how far event time has run on after the last event, as `rules test`
does: its bar stopped at the last event read, and a `--to` a year past a 300,000-event
history then swept for minutes without a word (throwaway timing on a loaded machine:
over 10 minutes)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from moments.backtest import Backtest
from moments.backtest_cli import FileLines
from moments.backtest_input import EventFile
from moments.models import EventType
from moments.progresslines import ProgressLines

from .rules.helpers import BIRTHDAY, NO_GATES, ev, rules_from
from .test_far_to import _lines

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def test_each_sweep_of_the_run_on_is_told_in_order() -> None:
    profile = ev(EventType.PROFILE, "2026-11-02T10:00:00+08:00", birthday="11-05")
    bt = Backtest(rules_from(NO_GATES + "rules:" + BIRTHDAY))
    told: list[int] = []
    until = dt.datetime(2026, 11, 6, tzinfo=SHANGHAI).timestamp()
    result = asyncio.run(bt.run(_lines([profile]), until=until, sweeping=told.append))
    assert [t["moment"]["type"] for t in result.tasks()] == ["birthday"]
    last = dt.datetime.fromisoformat("2026-11-02T10:00:00+08:00").timestamp()
    assert told == sorted(told)
    assert told[0] > last
    assert told[-1] < until
    days = {dt.datetime.fromtimestamp(t, SHANGHAI).date() for t in told}
    assert days == {dt.date(2026, 11, d) for d in (2, 3, 4, 5)}  # each midnight and look


def test_the_log_lines_say_the_day_reached_and_the_to(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    written: list[str] = []
    now = [0.0]
    lines = ProgressLines("backtest", written.append, every_s=10, clock=lambda: now[0])
    log = FileLines(lines, [EventFile(events)])
    log.show(300_000)
    now[0] = 11.0
    log.swept(dt.date(2027, 3, 1), dt.date(2027, 11, 6))
    now[0] = 12.0
    log.swept(dt.date(2027, 3, 2), dt.date(2027, 11, 6))  # within 10 s: not said
    assert written == [
        "backtest: all 300,000 events in; event time run on to 2027-03-01 of the --to, 2027-11-06"
    ]
