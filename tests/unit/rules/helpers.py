"""Small builders for rule tests: events at given times, and a pipeline run over YAML text."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import orjson

from moments.backtest import BacktestResult, run_backtest
from moments.backtest_input import FileEvent
from moments.models import EventType, ServiceTask
from moments.pipeline import PipelineResult, run_pipeline
from rules.catalog import RuleSet, load_texts

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
NO_GATES = "gating: {quiet_hours: [], frequency_cap: null}\n"
WELCOME = """
  - id: welcome
    description: First international roaming in a country
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_welcome, channel: sms, priority: 3,
           action: welcome, ttl: 24h, description: "Welcome to {country}"}
"""
"""A rule list entry: an SMS on the first arrival in a country (the tests of shadow
rules and of forgetting use it)."""
CALL_TRIAL = """
  - id: call_trial
    mode: shadow
    description: A call on every arrival, on trial
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_call, channel: outbound_call, priority: 2,
           action: call, ttl: 24h, cooldown: 30d, description: "Call about {country}"}
"""
"""The same moment as `WELCOME`, a call, in shadow mode."""
NO_ACTIVITY = """
  - id: no_activity
    description: No usage and no top-up for 7 days
    on: [usage, topup]
    evaluate: daily
    condition: {absence: 7d}
    task: {family: anomaly, type: no_activity, channel: sms, priority: 3,
           action: reactivation_offer, ttl: 3d, cooldown: 14d,
           description: "No activity for {silent_days} days"}
"""
"""A rule list entry: the default catalog's silence, a reactivation offer after 7 days."""
CONTRACT_LEAD = """
  - id: contract_expiry_near
    description: A renewal offer within the contract's lead
    on: [profile]
    evaluate: special_day
    condition: {occasion: contract_expiry}
    task: {family: special_day, type: contract_expiry_near, channel: sms, priority: 3,
           action: renewal_offer, ttl: 48h, description: "Renew"}
"""
"""A rule list entry: a renewal offer on every day of a contract's lead (one moment)."""
BIRTHDAY = """
  - id: birthday_greeting
    description: Birthday greeting at 09:00 local time
    on: [profile]
    evaluate: special_day
    condition: {occasion: birthday}
    task: {family: special_day, type: birthday, channel: sms, priority: 4,
           action: birthday_greeting, ttl: 12h, description: "Happy birthday!"}
"""
"""A rule list entry: an SMS greeting on the customer's birthday."""
SUB = "13800138001"
_ids = itertools.count()


def at(day: str, time: str = "12:00") -> str:
    """An RFC 3339 time in Shanghai, e.g. at("2026-11-02", "09:30")."""
    return f"{day}T{time}:00+08:00"


def ev(
    event_type: EventType, when: str, sub: str = SUB, **fields: Any
) -> tuple[EventType, dict[str, Any]]:
    return event_type, {
        "event_id": f"e{next(_ids)}",
        "subscriber_id": sub,
        "occurred_at": when,
        **fields,
    }


def usage(when: str, **fields: Any) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.USAGE, when, **fields)


def rules_from(text: str) -> RuleSet:
    return load_texts([("test.yaml", text)])


def run(
    rules: RuleSet,
    events: list[tuple[EventType, dict[str, Any]]],
    until: str | None = None,
    result: PipelineResult | None = None,
) -> PipelineResult:
    """Replay with event time as the clock (as if each event were read when it happened);
    with `until`, event time runs on to that instant (the watermark of a quiet partition)."""
    end = dt.datetime.fromisoformat(until) if until else None
    return run_pipeline(events, rules, now=None, until=end, result=result)


def types(tasks: list[ServiceTask]) -> list[str]:
    return [t.moment.type for t in tasks]


def backtest_of(
    rules: str, events: list[tuple[EventType, dict[str, Any]]], until: str
) -> BacktestResult:
    """`events` (as `ev` makes them) through a backtest of `rules` (a rules file's text)
    up to `until` (ISO 8601), dispatch's memory twin included."""
    lines = [
        FileEvent(
            dt.datetime.fromisoformat(str(value["occurred_at"])).timestamp(),
            event_type,
            str(value["subscriber_id"]).encode(),
            orjson.dumps(value),
        )
        for event_type, value in events
    ]
    return run_backtest(rules_from(rules), lines, until=dt.datetime.fromisoformat(until))
