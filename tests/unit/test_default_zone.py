"""The rules' `gating.timezone` is the local time of every subscriber whose profile names
no zone: their days (daily windows, absence), special days and quiet hours alike. Windows
and special days used Asia/Shanghai whatever it said, while quiet hours followed it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from moments.backtest import run_backtest
from moments.backtest_input import EventFile, merged
from moments.engine import Detector
from moments.models import EventType
from moments.state import SubscriberState
from moments.sweep import next_sweep
from rules.explain import explain

from .rules.helpers import BIRTHDAY, ev, rules_from, run

LONDON = ZoneInfo("Europe/London")
RULES = (
    """
gating:
  timezone: Europe/London
  quiet_hours: ["21:00-08:00"]
  quiet_hours_channels: [sms]  # the day's close is at night: its push goes at once
  frequency_cap: null
special_days: {local_hour: 9}
series:
  calls: {on: [usage], when: {kind: voice}, period: day}
rules:
  - id: busy_day
    description: Two calls in a day, told when the day closes
    on: [usage]
    evaluate: daily
    condition: {series: calls, gte: 2}
    task: {family: anomaly, type: busy_day, channel: app_push, priority: 3,
           action: a, ttl: 30d, description: "busy"}"""
    + BIRTHDAY
)
# 23:30 and 00:30 in Shanghai (two days there), 15:30 and 16:30 in London (one day).
CALLS = ("2026-11-02T15:30:00+00:00", "2026-11-02T16:30:00+00:00")
LONDON_MIDNIGHT = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)  # London is on UTC in November


def calls(**profile: Any) -> list[tuple[EventType, dict[str, Any]]]:
    """A profile (when given) a day before, then the two calls."""
    head = [ev(EventType.PROFILE, "2026-11-01T12:00:00+00:00", **profile)] if profile else []
    return head + [ev(EventType.USAGE, at, kind="voice") for at in CALLS]


def triggered(result: Any, rule_id: str) -> list[dt.datetime]:
    return [t.triggered_at for t in result.tasks if t.moment.rule_id == rule_id]


class TestEngine:
    def test_a_day_closes_at_the_configured_zone_s_midnight(self) -> None:
        rules = rules_from(RULES)
        before = run(rules, calls(), until="2026-11-02T23:30:00+00:00")
        assert triggered(before, "busy_day") == []  # Shanghai's midnight passed, London's not
        after = run(rules, calls(), until="2026-11-03T00:30:00+00:00")
        assert triggered(after, "busy_day") == [LONDON_MIDNIGHT]
        assert triggered(after, "busy_day")[0].utcoffset() == dt.timedelta(0)

    def test_the_profile_s_own_zone_still_wins(self) -> None:
        events = calls(timezone="Asia/Shanghai")
        result = run(rules_from(RULES), events, until="2026-11-03T00:30:00+00:00")
        assert triggered(result, "busy_day") == []  # one call on each Shanghai day

    def test_a_special_day_is_looked_at_at_the_configured_zone_s_hour(self) -> None:
        rules = rules_from(RULES)
        profile = [ev(EventType.PROFILE, "2026-11-02T12:00:00+00:00", birthday="11-03")]
        early = run(rules, profile, until="2026-11-03T08:30:00+00:00")
        assert triggered(early, "birthday_greeting") == []  # 09:00 in Shanghai was 01:00
        late = run(rules, profile, until="2026-11-03T09:30:00+00:00")
        assert triggered(late, "birthday_greeting") == [dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)]
        task = late.tasks[0]
        assert task.deferred is None  # 09:00 London: past the quiet hours of London
        assert task.quiet_hours is not None
        assert task.quiet_hours.zone == "Europe/London"

    def test_the_next_sweep_of_a_silent_subscriber_is_at_the_configured_midnight(
        self,
    ) -> None:
        detector = Detector(rules_from(RULES), {})
        state = SubscriberState()
        noon = int(dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC).timestamp())
        state.closed["checked"] = dt.date(2026, 11, 2).toordinal()
        state.special_day = dt.date(2026, 11, 2).toordinal()
        assert next_sweep(detector, state, noon) == LONDON_MIDNIGHT.timestamp()

    def test_explain_names_the_zone_of_special_days(self) -> None:
        text = "\n".join(explain(rules_from(RULES)))
        assert "in each subscriber's time zone (Europe/London when the profile names none)" in text


def test_the_backtest_closes_the_day_at_the_configured_zone_s_midnight(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    docs = [{"type": kind.value, **fields} for kind, fields in calls()]
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in docs) + b"\n")
    rules = rules_from(RULES)
    before = run_backtest(
        rules, merged([EventFile(path)]), until=dt.datetime(2026, 11, 2, 23, 30, tzinfo=dt.UTC)
    )
    assert [t["moment"]["rule_id"] for t in before.tasks()] == []
    after = run_backtest(
        rules, merged([EventFile(path)]), until=dt.datetime(2026, 11, 3, 0, 30, tzinfo=dt.UTC)
    )
    published = [dt.datetime.fromisoformat(t["triggered_at"]) for t in after.tasks()]
    assert published == [LONDON_MIDNIGHT]
