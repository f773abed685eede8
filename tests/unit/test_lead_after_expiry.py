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


class TestCountedOnce:
    """The offer made again is the same moment: its first task's deferral and drop are
    counted, nothing of its later ones (the stream counts a re-judgement's deferral
    only when its task is new to the ledger)."""

    def counts(self, out: BacktestResult, name: str) -> dict[tuple[str, ...], int]:
        return {
            tuple(v for _, v in sorted(labels.items())): int(n) for labels, n in out.counter(name)
        }

    def test_taken_over_in_quiet_hours(self) -> None:
        """Reactivated at 22:00, in the night's quiet hours: the offer taken over waits
        for 08:00 and goes then; one deferral (the line's), one drop."""
        events = [
            profile("2026-11-01", "08:00", contract_end="2026-11-03", status="suspended"),
            profile("2026-11-02", "22:00", status="active"),
        ]
        gated = RULES.replace(
            NO_GATES, 'gating: {quiet_hours: ["21:00-08:00"], frequency_cap: null}\n'
        )
        out = backtest_of(gated, events, at("2026-11-05", "00:00"))
        assert published_at(out) == ["2026-11-03T08:00:00+08:00"]
        assert self.counts(out, "moments_tasks_deferred") == {("suspended",): 1}
        assert self.counts(out, "moments_tasks_suppressed") == {
            ("contract_expiry_near", "suspended"): 1
        }

    def test_not_taken_over_while_the_line_is_still_suspended(self) -> None:
        """A judgement while the line stays suspended would wait for it again, and expire
        again: the dropped entry stands 11-03's down, not counted again."""
        events = [
            profile("2026-11-01", "08:00", contract_end="2026-11-03", status="suspended"),
        ]
        out = backtest_of(RULES, events, at("2026-11-05", "00:00"))
        assert self.counts(out, "moments_tasks_deferred") == {("suspended",): 1}
        assert self.counts(out, "moments_tasks_suppressed") == {
            ("contract_expiry_near", "suspended"): 1
        }
