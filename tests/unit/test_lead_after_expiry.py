"""A moment judged again on each day of its span (a contract's end over its lead) whose
task expired unsent, its line suspended, is offered again on a later day once the line
is active, and sent once. The dropped task's ledger entry outlives its expiry by a day
(`sinks.ledger.DROPPED_KEPT_S`) and stood down every judgement in that day: the last days
of a lead, or the reactivation's own look, made nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.backtest import BacktestResult
from moments.models import EventType

from .rules.helpers import CONTRACT_LEAD, NO_GATES, at, backtest_of, ev

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
RULES = NO_GATES + "rules:" + CONTRACT_LEAD.replace("ttl: 48h", "ttl: 36h")


def profile(day: str, time: str, **fields: Any) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.PROFILE, at(day, time), **fields)


def published_at(out: BacktestResult) -> list[str]:
    """When each task was published (Shanghai time)."""
    return [dt.datetime.fromtimestamp(p.at, SHANGHAI).isoformat() for p in out.published]


class TestALeadWhoseTaskExpiredUnsent:
    def test_its_last_day_still_gets_the_offer(self) -> None:
        """The contract ends 11-03; its first task (11-01 09:00, 36h) is dropped at 21:00
        on 11-02, the line still suspended; reactivated at 22:00, the offer goes then
        (the update's judgement): the dropped entry stood it and 11-03's look down."""
        events = [
            profile("2026-11-01", "08:00", contract_end="2026-11-03", status="suspended"),
            profile("2026-11-02", "22:00", status="active"),
        ]
        out = backtest_of(RULES, events, at("2026-11-05", "00:00"))
        assert published_at(out) == ["2026-11-02T22:00:00+08:00"]

    def test_a_long_suspension_still_sends_one_offer(self) -> None:
        """Suspended over many of the task's lifetimes: each day's judgement makes the same
        task again (one id), sent once, when the line is reactivated (it went at the next
        day's look, the dropped entry standing the day's judgements down)."""
        events = [
            profile("2026-11-01", "08:00", contract_end="2026-11-20", status="suspended"),
            profile("2026-11-12", "10:00", status="active"),
        ]
        out = backtest_of(RULES, events, at("2026-11-21", "00:00"))
        assert published_at(out) == ["2026-11-12T10:00:00+08:00"]

    def test_a_line_never_reactivated_gets_none(self) -> None:
        events = [profile("2026-11-01", "08:00", contract_end="2026-11-20", status="suspended")]
        out = backtest_of(RULES, events, at("2026-11-21", "00:00"))
        assert published_at(out) == []
