"""A silence is one moment: `moments_detected_total` ("moments that fired, before
gating") counts it once, however many days it is judged again.

An absence rule is judged at every daily close while the silence lasts, and each
re-judgement counted a detection (and, inside the cooldown, a cooldown suppression):
64 "detections" for 4 tasks in 35 days. The re-judgements still make the task the
silence is owed when a cooldown ends."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import to_records
from moments.sweep import sweep

from .rules.helpers import NO_ACTIVITY, NO_GATES, SUB, at, ev, rules_from, run

RULES = NO_GATES + "rules:" + NO_ACTIVITY
KEY = ("anomaly", "no_activity")
COOLDOWN = ("no_activity", "cooldown")


def use(day: str) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.USAGE, at(day, "10:00"), kind="data", quantity=1000)


def test_a_35_day_silence_is_one_detection() -> None:
    result = run(rules_from(RULES), [use("2026-11-01")], until=at("2026-12-06", "12:00"))
    assert result.detected[KEY] == 1
    assert result.suppressed[COOLDOWN] == 0
    assert [t.triggered_at.date() for t in result.tasks] == [dt.date(2026, 11, 9)]


def test_a_silence_inside_the_cooldown_is_counted_once_and_makes_its_task_after_it() -> None:
    """The first silence's task on 11-09 starts 14 days of cooldown; the customer is back
    on 11-10 and silent again: that silence is due on 11-18, held by the cooldown (one
    detection, one cooldown suppression), and makes its task once the cooldown is over
    (11-23, 14 days after the first)."""
    events = [use("2026-11-01"), use("2026-11-10")]
    result = run(rules_from(RULES), events, until=at("2026-11-28", "12:00"))
    assert result.detected[KEY] == 2
    assert result.suppressed[COOLDOWN] == 1
    made = [(t.triggered_at.date(), t.moment.params["silent_days"]) for t in result.tasks]
    assert [day for day, _ in made] == [dt.date(2026, 11, 9), dt.date(2026, 11, 23)]
    assert made[1][1] >= 12  # the second silence's task, made after the cooldown


def test_each_silence_is_its_own_moment() -> None:
    events = [use("2026-11-01"), use("2026-11-30")]
    result = run(rules_from(RULES), events, until=at("2026-12-09", "12:00"))
    assert result.detected[KEY] == 2
    assert len(result.tasks) == 2


def test_a_silence_first_judged_after_a_catch_up_gap_is_counted() -> None:
    """A record not swept for more than `CLOSE_CATCH_UP` days (a worker down for ten)
    has its last days judged, the first of them with the day before it never judged: the
    silence was counted nowhere, yet its task was made (tasks published, none detected)."""
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    first = detector.process(to_records([use("2026-11-01")]), lambda _: None, None)
    state = first.changes[SUB].state
    assert state is not None
    mark = int(dt.datetime.fromisoformat(at("2026-11-20", "01:00")).timestamp())
    swept = sweep(detector, [(SUB, state, 0)], lambda _: mark, None)
    assert [t.moment.type for t in swept.tasks] == ["no_activity"]
    assert swept.detected[KEY] == 1


def test_a_silence_on_usage_goes_on_through_a_complaint() -> None:
    """A complaint is no usage: when it is the event that closes the day (before the
    hourly sweep came to the record, as on the stream), a silence on usage goes on and
    is judged then. It was skipped as if any event ended it, and the next day's sweep took
    the silence for one judged before: the task was made, the detection never counted."""
    rules = rules_from(RULES.replace("[usage, topup]", "[usage]").replace("7d", "3d"))
    detector = Detector(rules, {t.value: t for t in EventType})
    store: dict[str, Any] = {}

    def process(*events: tuple[EventType, dict[str, object]]) -> Any:
        result = detector.process(to_records(list(events)), store.get, None)
        store.update({sub: change.state for sub, change in result.changes.items()})
        return result

    complaint = ev(
        EventType.COMPLAINT,
        at("2026-11-05", "08:00"),
        complaint_id="c1",
        category="billing",
        severity=2,
        status="opened",
    )
    results = [process(use("2026-11-01")), process(complaint)]
    mark = int(dt.datetime.fromisoformat(at("2026-11-06", "01:00")).timestamp())
    results.append(sweep(detector, [(SUB, store[SUB], 0)], lambda _p: mark, None))
    assert sum(r.detected[KEY] for r in results) == 1
    assert len([t for r in results for t in r.tasks]) == 1
