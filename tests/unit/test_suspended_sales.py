"""A `sales` task that waited for something else (quiet hours) and finds the line
suspended at its release waits for the line, as a `service` task does, and goes when a
profile update reactivates it: dispatch knows no task's purpose, and a suspension is
do-not-disturb, not a refusal (docs/gating.md "Suspended line", docs/consuming-tasks.md
"A suspended line withdraws nothing"). The rules' `suspended: {sales: suppress}` is
gating's, for a task made while the line is suspended; it is pinned beside."""

from __future__ import annotations

import datetime as dt

import orjson

from moments.models import EventType

from .rules.helpers import at, backtest_of, ev

RULES = """
gating: {quiet_hours: ["21:00-08:00"], frequency_cap: null,
         suspended: {service: wait, sales: suppress}}
rules:
  - id: retention
    description: A call to a competitor's hotline
    on: [usage]
    when: {kind: voice, counterparty: "10010"}
    condition: {first_time: counterparty}
    task: {family: anomaly, type: competitor_hotline_call, channel: sms,
           priority: 2, action: retention_offer, ttl: 24h, purpose: sales,
           description: "Retention offer"}
"""


def hotline(when: str) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.USAGE, when, kind="voice", quantity=60, counterparty="10010")


def status(when: str, value: str) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.PROFILE, when, status=value)


class TestSalesTaskHeldForTheLine:
    def test_suspended_while_it_waits_it_waits_for_the_line_and_goes_on_reactivation(
        self,
    ) -> None:
        events = [
            hotline(at("2026-11-02", "22:00")),  # quiet hours: deferred to 08:00
            status(at("2026-11-02", "23:00"), "suspended"),
            status(at("2026-11-03", "09:30"), "active"),
        ]
        out = backtest_of(RULES, events, at("2026-11-03", "12:00"))
        sent = [orjson.loads(p.payload) for p in out.published]
        assert [t["moment"]["type"] for t in sent] == ["competitor_hotline_call"]
        assert sent[0]["deferred"]["reason"] == "suspended"
        published_at = dt.datetime.fromtimestamp(out.published[0].at, dt.UTC)
        assert published_at == dt.datetime.fromisoformat(at("2026-11-03", "09:30"))

    def test_made_for_a_suspended_line_gating_drops_it(self) -> None:
        events = [
            status(at("2026-11-02", "20:00"), "suspended"),
            hotline(at("2026-11-02", "22:00")),
            status(at("2026-11-03", "09:30"), "active"),
        ]
        out = backtest_of(RULES, events, at("2026-11-03", "12:00"))
        assert out.published == []
