"""The engine's windowed state against a naive reference: every event kept in a list and
each window's aggregate recomputed from it, over random event sequences read out of order,
some later than the lateness allows, in a zone with a daylight-saving change."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from moments.models import EventType
from moments.refusals import LATENESS
from rules.windows import local_date, window_index

from .helpers import NO_GATES, ev, rules_from, run, usage

ZONE = "Europe/Berlin"
START = dt.datetime(2026, 3, 26, 12, tzinfo=dt.UTC)
"""Three days before Berlin's clocks go forward (29 March), over a week's end."""
RULES = (
    NO_GATES
    + """
series:
  spend_day: {on: [usage], field: charge, period: day}
  calls_week: {on: [usage], when: {kind: voice}, period: week}
rules:
  - id: every_charge
    description: Each usage event, with what the windows hold
    on: [usage]
    condition:
      all:
        - {series: spend_day, agg: sum, last: 3, gte: 0}
        - {series: calls_week, agg: count, last: 2, gte: 0}
    task: {family: anomaly, type: t, channel: app_push, priority: 3, action: a, ttl: 30d,
           description: d}
"""
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6 * 86400),  # when it happened, from START
            st.integers(0, 2 * 3600),  # how long after it was read (the order read)
            st.integers(0, 50),  # charge
            st.booleans(),  # a call (else data)
        ),
        min_size=1,
        max_size=40,
    )
)
def test_windowed_state_equals_a_recomputation_from_every_event(
    items: list[tuple[int, int, int, bool]],
) -> None:
    tz = ZoneInfo(ZONE)
    rules = rules_from(RULES)
    read = sorted(enumerate(items), key=lambda item: (item[1][0] + item[1][1], item[0]))
    events = [ev(EventType.PROFILE, (START - dt.timedelta(days=1)).isoformat(), timezone=ZONE)]
    ids: dict[str, tuple[int, int, bool]] = {}
    for _, (offset, _, charge, call) in read:
        when = (START + dt.timedelta(seconds=offset)).isoformat()
        event = usage(when, kind="voice" if call else "data", charge=charge)
        ids[event[1]["event_id"]] = (int(START.timestamp()) + offset, charge, call)
        events.append(event)
    result = run(rules, events)
    assert result.late == len(result.dead_letters)  # none refused for another reason
    by_event = {t.evidence[0]: t.moment.params for t in result.tasks}

    applied: list[tuple[int, int, bool]] = []  # the reference: every event applied so far
    newest = None
    for _, data in events[1:]:
        at, charge, call = ids[data["event_id"]]
        if newest is not None and at < newest - LATENESS.total_seconds():
            assert data["event_id"] not in by_event  # late: not applied, no task
            continue
        newest = at if newest is None else max(newest, at)
        applied.append((at, charge, call))
        day = local_date(at, tz)
        days = {window_index("day", day) - k for k in range(3)}
        weeks = {window_index("week", day) - k for k in range(2)}
        spend = sum(c for a, c, _ in applied if window_index("day", local_date(a, tz)) in days)
        calls = sum(
            1 for a, _, v in applied if v and window_index("week", local_date(a, tz)) in weeks
        )
        params = by_event[data["event_id"]]
        assert params["spend_day"] == spend
        assert params["calls_week"] == calls


CLOSING = (
    NO_GATES
    + """
series:
  spend_day: {on: [usage], field: charge, period: day}
rules:
  - id: daily_spend
    description: Each day's spend, when the day closes
    on: [usage]
    evaluate: daily
    condition: {series: spend_day, agg: sum, gte: 0}
    task: {family: anomaly, type: t, channel: app_push, priority: 3, action: a, ttl: 30d,
           description: d}
"""
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6 * 86400), st.integers(0, 2 * 3600), st.integers(0, 50)),
        min_size=1,
        max_size=40,
    )
)
def test_a_closed_day_holds_what_was_applied_before_it_closed(
    items: list[tuple[int, int, int]],
) -> None:
    """A day closes before the first record read dated at or after its end (an event of a
    later day, or the hour's sweep before it): its rule sees the events applied by then."""
    tz = ZoneInfo(ZONE)
    read = sorted(enumerate(items), key=lambda item: (item[1][0] + item[1][1], item[0]))
    profile_at = int((START - dt.timedelta(days=1)).timestamp())
    events = [ev(EventType.PROFILE, (START - dt.timedelta(days=1)).isoformat(), timezone=ZONE)]
    times = [profile_at]
    charges = [0]  # the profile's: no usage, nothing applied to the series
    for _, (offset, _, charge) in read:
        at = int(START.timestamp()) + offset
        when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
        events.append(usage(when, kind="data", charge=charge))
        times.append(at)
        charges.append(charge)
    result = run(rules_from(CLOSING), events)
    assert result.late == len(result.dead_letters)  # none refused for another reason
    closed = {
        window_index("day", local_date(int(t.triggered_at.timestamp()) - 1, tz)): t.moment.params[
            "spend_day"
        ]
        for t in result.tasks
    }

    expected: dict[int, float] = {}
    first_day = window_index("day", local_date(profile_at, tz))
    open_day = first_day
    applied: list[tuple[int, int]] = []
    newest: int | None = None
    for n, (at, charge) in enumerate(zip(times, charges, strict=True)):
        day = window_index("day", local_date(at, tz))
        while open_day < day:  # the record is dated past the open day's end: it closes
            expected[open_day] = sum(
                c for a, c in applied if window_index("day", local_date(a, tz)) == open_day
            )
            open_day += 1
        if n == 0 or (newest is not None and at < newest - LATENESS.total_seconds()):
            continue  # the profile, or a late usage event: not applied
        newest = at if newest is None else max(newest, at)
        applied.append((at, charge))
    assert closed == expected
