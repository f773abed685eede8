"""`moments rules test` sweeps as event time passes, as the stream and the backtest do:
without it an absence and a birthday that the backtest found were missing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from moments.backtest import run_backtest
from moments.backtest_input import EventFile, merged
from moments.rulecheck import check_rules
from rules.catalog import load_texts

from .rules.helpers import BIRTHDAY as BIRTHDAY_RULE
from .rules.helpers import NO_ACTIVITY

RULES = f"""
gating: {{quiet_hours: []}}
special_days: {{local_hour: 9}}
rules:{NO_ACTIVITY}{BIRTHDAY_RULE}"""
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


FESTIVE = """
gating: {quiet_hours: [], frequency_cap: null}
series:
  topups_day: {on: [topup], period: day}
rules:
  - id: festive_topup
    description: A top-up on the birthday, looked at 09:00
    on: [profile]
    evaluate: special_day
    condition:
      all:
        - {occasion: birthday}
        - {series: topups_day, agg: count, gte: 1}
    task: {family: special_day, type: festive_topup, channel: sms, priority: 4,
           action: a, ttl: 12h, description: "Thank you"}
"""
EARLY, LATE, FILLER = "13800000001", "13800000002", "13900000009"
BIRTHDAY = dt.datetime(2026, 12, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def birthday_case(path: Path, dense: bool) -> Path:
    """Both have their birthday on 12-10 and top up that day, EARLY at 07:30, LATE at
    15:00; `dense` adds another subscriber's SMS every 30 minutes of the day (analyst
    review: cases/birthday-topup.jsonl and birthday-topup-dense.jsonl)."""
    events: list[dict[str, object]] = [
        {
            "type": "profile",
            "event_id": f"p{sub}",
            "subscriber_id": sub,
            "occurred_at": (BIRTHDAY - dt.timedelta(days=9)).isoformat(),
            "birthday": "12-10",
        }
        for sub in (EARLY, LATE)
    ]
    for sub, hours in ((EARLY, 7.5), (LATE, 15.0)):
        events.append(
            {
                "type": "topup",
                "event_id": f"t{sub}",
                "subscriber_id": sub,
                "occurred_at": (BIRTHDAY + dt.timedelta(hours=hours)).isoformat(),
                "amount": "50",
                "channel": "app",
            }
        )
    if dense:
        events += [usage(FILLER, BIRTHDAY + dt.timedelta(minutes=30 * n), n) for n in range(48)]
    events.sort(key=lambda e: str(e["occurred_at"]))
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_the_hours_sweep_runs_before_the_events_that_enter_it(tmp_path: Path, dense: bool) -> None:
    """The 09:00 look ran only when the next event came, after applying it: alone in the
    file, LATE's 15:00 top-up counted for the 09:00 look and both tasks were dated 15:00;
    with another subscriber's traffic, neither. Whatever else is in the file, the look is
    at 09:00 and sees the top-ups before it, in `rules test` and the backtest alike."""
    events = birthday_case(tmp_path / "events.jsonl", dense)
    rules = load_texts([(str(tmp_path / "rules.yaml"), FESTIVE)])
    nine = BIRTHDAY + dt.timedelta(hours=9)
    backtested = run_backtest(rules, merged([EventFile(events, None)]))
    published = [(t["subscriber_id"], t["triggered_at"]) for t in backtested.tasks()]
    assert published == [(EARLY, nine.isoformat())]
    tested = check_rules(rules, events)
    assert [(t.subscriber_id, t.triggered_at) for t in tested.tasks] == [(EARLY, nine)]
    assert {t.task_id for t in tested.tasks} == {t["task_id"] for t in backtested.tasks()}


def test_a_special_day_between_two_events_days_apart_is_looked_at_on_its_day(
    tmp_path: Path,
) -> None:
    """Event time that jumps days ahead sweeps each hour it passes that has something
    due (in `rules test` only those: the others change nothing), not only the hour it
    lands in: a birthday on a day no event fell on was never looked at."""
    events = tmp_path / "events.jsonl"
    profile = {
        "type": "profile",
        "event_id": "p1",
        "subscriber_id": EARLY,
        "occurred_at": (BIRTHDAY - dt.timedelta(days=9)).isoformat(),
        "birthday": "12-10",
    }
    later = usage(FILLER, BIRTHDAY + dt.timedelta(days=3), 0)
    events.write_bytes(orjson.dumps(profile) + b"\n" + orjson.dumps(later) + b"\n")
    rules = load_texts([(str(tmp_path / "rules.yaml"), RULES)])
    nine = BIRTHDAY + dt.timedelta(hours=9)
    tested = check_rules(rules, events)
    assert [(t.moment.rule_id, t.triggered_at) for t in tested.tasks] == [
        ("birthday_greeting", nine)
    ]
    backtested = run_backtest(rules, merged([EventFile(events, None)]))
    assert [t["triggered_at"] for t in backtested.tasks()] == [nine.isoformat()]


def test_events_all_refused_are_not_said_to_be_no_event_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case file whose every event was refused (a `subscriber` column for
    `subscriber_id`, said at the header row since; here a number of letters) was summed up
    as "no event was read" above the refused ones it listed (journey review): none was
    applied, each refused."""
    from moments.cli import main

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "cases.csv"
    events.write_text(
        "type,event_id,subscriber_id,occurred_at,kind\n"
        "usage,u1,one-three-eight,2026-12-01T10:00:00+08:00,data\n"
    )
    main(["rules", "test", str(rules), "--events", str(events)])
    out = capsys.readouterr().out
    assert "no event was read" not in out
    assert "no event was applied (each was refused: see below), so event time did not run" in out
    assert "1 event(s) refused:" in out
