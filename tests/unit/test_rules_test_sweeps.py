"""`moments rules test` sweeps as event time passes, as the stream and the backtest do:
without it an absence and a birthday that the backtest found were missing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from moments.backtest import run_backtest
from moments.backtest_input import EventFile, merged
from moments.rulecheck import check_rules
from rules.catalog import load_texts

RULES = """
gating: {quiet_hours: []}
special_days: {local_hour: 9}
rules:
  - id: no_activity
    description: No usage and no top-up for 7 days
    on: [usage, topup]
    evaluate: daily
    condition: {absence: 7d}
    task: {family: anomaly, type: no_activity, channel: sms, priority: 3,
           action: reactivation_offer, ttl: 3d, cooldown: 14d,
           description: "No activity for {silent_days} days"}
  - id: birthday_greeting
    description: Birthday greeting at 09:00 local time
    on: [profile]
    evaluate: special_day
    condition: {occasion: birthday}
    task: {family: special_day, type: birthday, channel: sms, priority: 4,
           action: birthday_greeting, ttl: 12h, description: "Happy birthday!"}
"""
START = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
SILENT, BUSY = "13800000001", "13800000002"


def usage(sub: str, at: dt.datetime, n: int) -> dict[str, object]:
    return {
        "type": "usage",
        "event_id": f"u{sub}-{n}",
        "subscriber_id": sub,
        "occurred_at": at.isoformat(),
        "kind": "data",
        "quantity": 1000,
    }


def history(path: Path) -> None:
    """SILENT uses data once, then nothing for 11 days while BUSY's events flow every
    hour; BUSY's profile (birthday today) arrives at 08:00 local, before 09:00."""
    events: list[dict[str, object]] = [usage(SILENT, START, 0)]
    events.append(
        {
            "type": "profile",
            "event_id": "p1",
            "subscriber_id": BUSY,
            "occurred_at": START.isoformat(),
            "birthday": START.strftime("%m-%d"),
            "timezone": "Asia/Shanghai",
        }
    )
    events += [usage(BUSY, START + dt.timedelta(hours=h), h) for h in range(1, 11 * 24)]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")


def test_rules_test_finds_what_the_backtest_finds_at_the_same_times(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    history(events)
    rules = load_texts([(str(tmp_path / "rules.yaml"), RULES)])
    tested = check_rules(rules, events)
    backtested = run_backtest(rules, merged([EventFile(events, None)]))
    found = sorted((t.moment.rule_id, t.subscriber_id, t.triggered_at) for t in tested.tasks)
    assert [(rule, sub) for rule, sub, _ in found] == [
        ("birthday_greeting", BUSY),
        ("no_activity", SILENT),
    ]
    assert found[0][2] == START + dt.timedelta(hours=1)  # 09:00 local, the first sweep then
    published = sorted(
        (t["moment"]["rule_id"], t["subscriber_id"], dt.datetime.fromisoformat(t["triggered_at"]))
        for t in backtested.tasks()
    )
    assert published == found
    assert {t.task_id for t in tested.tasks} == {t["task_id"] for t in backtested.tasks()}
