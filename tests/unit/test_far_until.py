"""`rules test --to` far after the last event: event time runs on the whole way, as the
backtest's `--to` does. It swept only the last 120 days before the `--to`, so a birthday
(or a silence, a window's close) due earlier made no task, with no word (analyst walk:
`--to 2027-02-20` found none of the four anniversaries of 2026-10-21 that `--to
2027-02-18` found)."""

from __future__ import annotations

from moments.models import EventType

from .rules.helpers import BIRTHDAY, NO_GATES, ev, rules_from, run

SILENCE = """
  - id: no_activity
    description: No usage for 7 days
    on: [usage]
    evaluate: daily
    condition: {absence: 7d}
    task: {family: anomaly, type: no_activity, channel: sms, priority: 3,
           action: reactivation_offer, ttl: 3d, description: "Silent {silent_days} days"}
"""


class TestAFarUntil:
    def test_a_birthday_more_than_120_days_before_it_is_greeted(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        profile = ev(EventType.PROFILE, "2026-10-01T08:00:00+08:00", birthday="10-21")
        near = run(rules, [profile], until="2026-10-22T00:00:00+08:00")
        far = run(rules, [profile], until="2027-11-01T00:00:00+08:00")
        assert [t.triggered_at.date().isoformat() for t in near.tasks] == ["2026-10-21"]
        assert [t.triggered_at.date().isoformat() for t in far.tasks] == [
            "2026-10-21",
            "2027-10-21",
        ]

    def test_a_silence_begun_long_before_it_is_found(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + SILENCE)
        used = ev(EventType.USAGE, "2026-10-01T08:00:00+08:00", kind="data")
        far = run(rules, [used], until="2027-06-01T00:00:00+08:00")
        assert [t.moment.rule_id for t in far.tasks] == ["no_activity"]
        assert far.tasks[0].triggered_at.date().isoformat() == "2026-10-09"
