"""A source clock that jumps ahead by hours: the event is refused as a clock error
(counted `future`), so the correct events after it are not made late. Jumps of days
and years: tests/integration/test_faults.py::TestClockJumps. An event not applied for
its time goes to the dead-letter topic, saying how far off it was and what to check:
it was only counted, and a producer could not find which events had vanished.
"""

from __future__ import annotations

import datetime as dt

from moments.models import EventType
from moments.pipeline import run_pipeline
from moments.records import RejectReason

from .catalogs import default_rules
from .rules.helpers import at, ev, rules_from, usage

THREE_A_DAY = """
series:
  n: {on: [usage], period: day}
rules:
  - id: r
    description: three events in a day
    on: [usage]
    condition: {series: n, gte: 3}
    task: {family: anomaly, type: t, channel: sms, priority: 3, action: a, ttl: 30d,
           description: d}
"""


def test_an_event_hours_ahead_does_not_make_the_correct_ones_late() -> None:
    rules = rules_from(THREE_A_DAY)
    now = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
    ahead = usage("2026-11-02T23:30:00+08:00", kind="data")  # the source's clock jumped
    result = run_pipeline([ahead], rules, now=now)
    correct = [usage("2026-11-02T12:00:00+08:00", kind="data") for _ in range(3)]
    result = run_pipeline(correct, rules, now=now, result=result)
    assert len(result.tasks) == 1  # three correct events on Nov 2: the rule fires


def test_events_not_applied_for_their_time_are_dead_letters_saying_why() -> None:
    rules = rules_from(THREE_A_DAY)
    now = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
    events = [
        usage(at("2026-11-02", "11:50"), kind="data"),
        usage(at("2026-11-02", "14:00"), kind="data"),  # 2 h ahead: the source's clock
        usage(at("2026-11-02", "10:30"), kind="data"),  # 80 min behind the first
        ev(EventType.PROFILE, at("2026-11-02", "11:00"), tier="gold"),
        ev(EventType.PROFILE, at("2026-11-01", "11:00"), tier="silver"),  # an old snapshot
    ]
    result = run_pipeline(events, rules, now=now)
    assert (result.future, result.late) == (1, 2)
    letters = [(d.event_type, d.reason, d.message) for d in result.dead_letters]
    assert [(t, r) for t, r, _ in letters] == [
        ("usage", RejectReason.FUTURE),
        ("usage", RejectReason.LATE),
        ("profile", RejectReason.LATE),
    ]
    assert letters[0][2] == (
        "occurred_at 2026-11-02T06:00:00Z is 7200 s ahead of the worker's clock "
        "(2026-11-02T04:00:00Z; at most 900 s): not applied. Check the producer's clock and "
        "offset (local time written with Z?)"
    )
    assert letters[1][2] == (
        "occurred_at 2026-11-02T02:30:00Z is 4800 s older than this subscriber's latest usage "
        "event (2026-11-02T03:50:00Z; MOMENTS_LATENESS_SECONDS=3600): not applied, and never "
        "replayed. Its producer sent it out of order: send each subscriber's events of a "
        "topic in time order (history goes through moments backtest, not the live topics)"
    )
    assert letters[2][2] == (
        "occurred_at 2026-11-01T03:00:00Z is older than the updates that set each field it "
        "carries (the latest applied: 2026-11-02T03:00:00Z): nothing to apply: each profile "
        "field is the latest update's that carried it, by occurred_at. An old snapshot sent "
        "again undoes nothing; a change still to make (an opt-out, a suspension) must be "
        "sent again, dated now"
    )
    assert [r.offset for r in (d.record for d in result.dead_letters)] == [1, 2, 1]


def test_a_topic_read_hours_behind_another_is_not_late() -> None:
    """Topics are read side by side: after an outage one may be read hours ahead of
    another. Lateness is within a topic, so the slower topic's events still count (they
    were late against the faster one's: 7% of a soak's events)."""
    now = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)  # 16:00 in Shanghai
    events = [
        usage(at("2026-11-02", "15:00"), kind="data"),  # the usage topic, read first
        ev(EventType.TOPUP, at("2026-11-02", "12:00"), amount=50, channel="bank"),
    ]
    result = run_pipeline(events, default_rules(), now=now)
    assert (result.late, result.dead_letters) == (0, [])
    assert "first_topup" in [t.moment.type for t in result.tasks]


def test_an_event_refused_for_its_time_is_applied_when_it_comes_again() -> None:
    """A `future` dead letter sent back once due (`deadletter replay`), and a `late`
    one re-sent with its time corrected, carry the same event id: they are applied then.
    The refused event's id was noted as applied, so both were skipped as replays, and
    nothing said so (SRE drill)."""
    voice = """
  - id: v
    description: a voice call
    on: [usage]
    condition: {field: kind, eq: voice}
    task: {family: anomaly, type: call, channel: sms, priority: 3, action: a, ttl: 30d,
           description: d}
"""
    rules = rules_from(THREE_A_DAY + voice)
    noon = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
    ahead = usage(at("2026-11-02", "14:00"), kind="data")
    result = run_pipeline([ahead], rules, now=noon)
    assert [d.reason for d in result.dead_letters] == [RejectReason.FUTURE]
    two = [usage(at("2026-11-02", "12:00"), kind="data") for _ in range(2)]
    result = run_pipeline(two, rules, now=noon, result=result)
    assert result.tasks == []
    # 14:00 came: the same record again, at a new offset
    later = dt.datetime(2026, 11, 2, 6, 30, tzinfo=dt.UTC)
    result = run_pipeline([ahead], rules, now=later, result=result)
    assert [t.moment.type for t in result.tasks] == ["t"]  # the third event of the day
    # A late one, corrected by its producer and sent again with the same id
    late = usage(at("2026-11-02", "11:00"), kind="voice")
    result = run_pipeline([late], rules, now=later, result=result)
    assert [d.reason for d in result.dead_letters] == [RejectReason.FUTURE, RejectReason.LATE]
    corrected = (late[0], {**late[1], "occurred_at": at("2026-11-02", "14:20")})
    result = run_pipeline([corrected], rules, now=later, result=result)
    assert "call" in [t.moment.type for t in result.tasks]  # applied at last
    assert len(result.dead_letters) == 2
