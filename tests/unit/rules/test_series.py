"""Window rings and event time: out-of-order, late and future events, DST."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.models import EventType
from moments.state import SubscriberState
from moments.zones import DEFAULT_ZONE, subscriber_zone
from rules.base import Env
from rules.conditions import _baseline
from rules.explain import explain_rule
from rules.predicates import always
from rules.series import Ring, Series
from rules.spec import BaselineCond
from rules.windows import local_date, window_end, window_index

from .helpers import NO_ACTIVITY, SUB, at, ev, rules_from, run, usage


def series(keep: int = 4, field: str | None = "charge") -> Series:
    return Series("s", "t", frozenset({EventType.USAGE}), always, field, "day", keep)


class TestRing:
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 30), st.integers(-100, 100)), min_size=1, max_size=60))
    def test_ring_equals_a_plain_sum_over_the_kept_windows(
        self, items: list[tuple[int, int]]
    ) -> None:
        """Any order of events: every kept window holds exactly the sum, the count and the
        largest of what fell in it, a negative amount too (a refunded charge, a balance
        below zero: the largest of a window of negative ones read 0)."""
        s = series(keep=5)
        ring = None
        newest = -1
        kept: dict[int, list[int]] = {}
        for day, amount in items:
            folded = s.fold(ring, day, float(amount))
            newest = max(newest, day)
            if day <= newest - 5:
                assert folded is None  # older than the ring: refused, ring unchanged
                continue
            assert folded is not None
            ring = folded
            kept.setdefault(day, []).append(amount)
        for day in range(newest - 4, newest + 1):
            window = s.window(ring, day)
            assert window is not None
            assert window[0] == sum(kept.get(day, []))
            assert window[1] == len(kept.get(day, []))
            assert window[2] == max(kept.get(day, [0]))
        assert s.window(ring, newest - 5) is None

    def test_trailing_empty_windows_are_not_stored(self) -> None:
        s = series(keep=30, field=None)
        ring = s.fold(None, 100, 1.0)
        assert ring == [100, 100, 1.0]
        ring = s.fold(ring, 105, 1.0)
        assert ring == [105, 100, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


class TestRaisedKeep:
    """A ring folded with `keep` K and read with a larger one (a reload raising it, same
    tag): the windows dropped under K are no history, never empty windows."""

    @staticmethod
    def baseline(s: Series, ring: Ring, index: int, agg: str, windows: int) -> float | None:
        """What a `baseline:` condition over `s` averages at window `index` (None: none)."""
        value = _baseline(s, BaselineCond(baseline="b", agg=agg, windows=windows, gt=0))
        env = Env(None, SubscriberState(series={s.tag: ring}), {}, 0, dt.UTC, "r", index)
        value(env)
        found = env.out.get("b_baseline")
        return None if found is None else float(found)

    @staticmethod
    def folded(s: Series, items: list[tuple[int, int]]) -> tuple[Ring, int, dict[int, list[int]]]:
        """The ring after folding `items` (day, amount) in order, the newest day, and the
        amounts each day's window took (those the ring refused as too old left out)."""
        ring: Ring | None = None
        newest = -1
        held: dict[int, list[int]] = {}
        for day, amount in items:
            folded = s.fold(ring, day, float(amount))
            newest = max(newest, day)
            if folded is not None:
                ring = folded
                held.setdefault(day, []).append(amount)
        assert ring is not None
        return ring, newest, held

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(0, 40), st.integers(1, 100)), min_size=1, max_size=60),
        st.integers(2, 6),
        st.integers(1, 8),
        st.data(),
    )
    def test_a_baseline_is_never_lower_than_the_kept_windows_make(
        self, items: list[tuple[int, int]], keep: int, more: int, data: st.DataObject
    ) -> None:
        """Read with K' > K, a baseline (sum or count) is the one the windows kept make, or
        none: never one lowered by a dropped window read as 0."""
        s = series(keep=keep)
        ring, newest, held = self.folded(s, items)
        raised = dataclasses.replace(s, keep=keep + more)
        windows = data.draw(st.integers(1, min(raised.keep - 1, 12)), label="windows")  # 12 at most
        index = newest + data.draw(st.integers(0, 2), label="after the newest")
        agg = data.draw(st.sampled_from(["sum", "count"]), label="agg")
        got = self.baseline(raised, ring, index, agg, windows)
        if got is None:
            return
        earlier = range(index - windows, index)
        assert all(w > newest - keep for w in earlier)  # only windows the ring kept
        per_window = [
            sum(held.get(w, [])) if agg == "sum" else len(held.get(w, [])) for w in earlier
        ]
        assert got == round(sum(per_window) / windows, 4)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(0, 40), st.integers(1, 100)), min_size=1, max_size=60),
        st.integers(2, 6),
        st.integers(0, 4),
        st.data(),
    )
    def test_a_baseline_the_kept_windows_make_is_never_refused(
        self, items: list[tuple[int, int]], keep: int, more: int, data: st.DataObject
    ) -> None:
        """The other half (the first property passes with no baseline at all): read with
        K' >= K, a baseline over windows all kept, of a history begun before them, is
        made: moving the history's start to the edge of what is kept refuses none."""
        s = series(keep=keep)
        ring, newest, held = self.folded(s, items)
        index = newest + data.draw(st.integers(0, 2), label="after the newest")
        windows = data.draw(st.integers(1, keep - 1), label="windows")
        agg = data.draw(st.sampled_from(["sum", "count"]), label="agg")
        earlier = range(index - windows, index)
        per_window = [
            sum(held.get(w, [])) if agg == "sum" else len(held.get(w, [])) for w in earlier
        ]
        kept = index - windows > newest - keep  # every window read, the current one too
        began_before = min(held) < index - windows
        got = self.baseline(dataclasses.replace(s, keep=keep + more), ring, index, agg, windows)
        if kept and began_before and sum(per_window) > 0:
            assert got == round(sum(per_window) / windows, 4)

    def test_the_windows_dropped_read_as_no_history(self) -> None:
        """100 a day for 10 days, kept 3: read with 8, no baseline over 7 days (5 of them
        dropped), where it was 300 / 7 = 42.86 before, "twice the usual" at 100."""
        s = series(keep=3)
        ring: Ring | None = None
        for day in range(10):
            ring = s.fold(ring, day, 100.0)
        assert ring is not None
        raised = dataclasses.replace(s, keep=8)
        assert self.baseline(raised, ring, 10, "sum", 7) is None
        assert self.baseline(raised, ring, 10, "sum", 2) == 100.0
        assert s.history_from(ring) == 6  # the window before the oldest kept (7)

    def test_a_fewer_than_history_begins_at_the_first_event_until_data_is_dropped(
        self,
    ) -> None:
        """Begun on day 2 (an event of another kind), data from day 5: a "fewer than" test
        reads from day 2, a baseline from day 5. Once days with data are dropped, both read
        from the edge of what is kept: those days are no history, not empty ones."""
        s = series(keep=3)
        begun = s.begin(2)
        assert s.history_since(None, begun) == 2
        ring = s.fold(None, 5, 100.0)
        assert (s.history_since(ring, begun), s.history_from(ring)) == (2, 5)
        for day in (6, 7, 8, 9):
            ring = s.fold(ring, day, 100.0)
        assert (s.history_since(ring, begun), s.history_from(ring)) == (6, 6)
        assert s.history_since(ring, None) == 6

    def test_a_begin_is_forgotten_once_windows_with_data_are_dropped(self) -> None:
        """Read with a `keep` raised in a reload, a begin still kept took the windows with
        data dropped for empty ones, which a "fewer than" test counts as none."""
        s = series(keep=3)
        rings: dict[str, Ring] = {s.begun_tag: s.begin(2)}
        for day in (5, 6, 7):
            ring = s.fold(rings.get(s.tag), day, 100.0)
            assert ring is not None
            rings[s.tag] = ring
            s.settle(rings)
        assert s.begun_tag in rings  # day 5, the first with data, is still kept
        rings[s.tag] = s.fold(rings[s.tag], 8, 100.0) or []
        s.settle(rings)
        assert s.begun_tag not in rings
        raised = dataclasses.replace(s, keep=6)
        assert raised.history_since(rings[s.tag], rings.get(s.begun_tag)) == 5


class TestWindows:
    def test_dst_days_are_23_and_25_hours_long(self) -> None:
        berlin = ZoneInfo("Europe/Berlin")
        spring = window_index("day", dt.date(2026, 3, 29))
        autumn = window_index("day", dt.date(2026, 10, 25))
        assert (
            window_end("day", spring, berlin) - window_end("day", spring - 1, berlin) == 23 * 3600
        )
        assert (
            window_end("day", autumn, berlin) - window_end("day", autumn - 1, berlin) == 25 * 3600
        )

    def test_an_unknown_or_missing_zone_is_the_configured_default(self) -> None:
        london = ZoneInfo("Europe/London")
        assert subscriber_zone("Mars/Olympus", london) is london
        assert subscriber_zone("America", london) is london  # a folder of tzdata
        assert subscriber_zone(8, london) is london
        assert subscriber_zone("Asia/Tokyo", london) is ZoneInfo("Asia/Tokyo")
        instant = dt.datetime(2026, 11, 2, 17, 0, tzinfo=dt.UTC).timestamp()
        assert local_date(instant, subscriber_zone(None, london)) == dt.date(2026, 11, 2)
        assert local_date(instant, subscriber_zone(None, DEFAULT_ZONE)) == dt.date(2026, 11, 3)


COUNT_DAY = """
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


class TestEventTime:
    def test_out_of_order_within_lateness_counts_in_its_own_window(self) -> None:
        events = [
            usage(at("2026-11-02", "23:50"), kind="data"),
            usage(at("2026-11-03", "00:10"), kind="data"),
            usage(at("2026-11-02", "23:55"), kind="data"),  # 15 min late: folded into Nov 2
            usage(at("2026-11-02", "23:58"), kind="data"),  # the third of Nov 2: fires
        ]
        result = run(rules_from(COUNT_DAY), events)
        assert len(result.tasks) == 1
        assert result.tasks[0].moment.params["n"] == 3

    def test_events_later_than_the_lateness_are_not_applied(self) -> None:
        rules = rules_from(COUNT_DAY)
        events = [
            usage(at("2026-11-02", "10:00"), kind="data"),
            usage(at("2026-11-02", "11:00"), kind="data"),
            usage(at("2026-11-02", "14:00"), kind="data"),
        ]
        result = run(rules, [events[0], events[2]])
        late = run(rules, [events[1]], result=result)  # 3 h before the latest: late
        assert late.tasks == []  # applied, it would have been the third event of the day

    def test_a_future_event_does_not_move_event_time(self) -> None:
        from moments.pipeline import run_pipeline

        rules = rules_from(COUNT_DAY)
        now = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
        future = usage("2027-01-01T00:00:00+08:00", kind="data")
        result = run_pipeline([future], rules, now=now)
        normal = [usage("2026-11-02T19:00:00+08:00", kind="data") for _ in range(3)]
        result = run_pipeline(normal, rules, now=now, result=result)
        assert len(result.tasks) == 1  # the future event neither counted nor made these late

    def test_replayed_events_are_not_counted_twice(self) -> None:
        from moments.pipeline import run_pipeline, to_records

        rules = rules_from(COUNT_DAY)
        events = [usage(at("2026-11-02", f"1{i}:00"), kind="data") for i in range(2)]
        records = to_records(events)
        now = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
        result = run_pipeline(records, rules, now=now)
        result = run_pipeline(records, rules, now=now, result=result)  # a re-read after a crash
        assert result.tasks == []

    def test_profile_time_zone_moves_the_day(self) -> None:
        events = [
            ev(EventType.PROFILE, at("2026-11-01"), timezone="America/New_York"),
            # 2026-11-02 13:00 Shanghai = 00:00 New York: three events, two New York days.
            usage("2026-11-02T12:30:00+08:00", kind="data"),
            usage("2026-11-02T13:10:00+08:00", kind="data"),
            usage("2026-11-02T13:20:00+08:00", kind="data"),
        ]
        assert run(rules_from(COUNT_DAY), events).tasks == []


class TestFirstSeenBound:
    RULE = """
rules:
  - id: r
    description: first service code
    on: [usage]
    condition: {first_time: service_code}
    task: {family: first_time, type: t, channel: app_push, priority: 3, action: a, ttl: 30d,
           description: d}
"""

    def test_a_subscriber_keeps_at_most_32_keys_per_rule(self) -> None:
        from rules.conditions import MAX_FIRST_SEEN

        events = [
            usage(
                at("2026-11-02", f"{10 + i // 60:02d}:{i % 60:02d}"),
                kind="service_order",
                service_code=f"S{i}",
            )
            for i in range(40)
        ]
        result = run(rules_from(self.RULE), events)
        assert len(result.tasks) == 40
        (state,) = result.store.data.values()
        from moments.state import SubscriberState

        kept = SubscriberState.from_bytes(state).first_seen
        assert len(kept) == MAX_FIRST_SEEN
        assert any(k.endswith(":S39") for k in kept)  # the newest stay
        assert not any(k.endswith(":S0") for k in kept)  # the oldest went


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8),
            st.one_of(
                st.integers(-(10**6), 10**6).map(float),
                st.floats(-1e6, 1e6, allow_nan=False),
                st.sampled_from([0.1, 0.3, 0.7, 1e17, -0.0, 2.0**53 + 2]),
            ),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_window_sum_is_rounded_to_4_places_at_every_fold(items: list[tuple[int, float]]) -> None:
    """Whole and fractional amounts alike: each fold leaves the window's sum at
    `round(sum before + amount, 4)`, the same float (a whole sum is kept as it is)."""
    s = series(keep=4)
    ring = None
    for day, amount in items:
        before = s.window(ring, day)
        folded = s.fold(ring, day, amount)
        if folded is None:
            continue
        ring = folded
        assert before is not None
        got = s.window(ring, day)
        assert got is not None
        expected = round(before[0] + amount, 4)
        assert repr(got[0]) == repr(expected)


_ZONES = [
    ZoneInfo(name)
    for name in (
        "Asia/Shanghai",
        "America/New_York",  # daylight saving at 02:00
        "America/Sao_Paulo",  # daylight saving at midnight (before 2019): a day began at 01:00
        "America/Havana",  # the same, at 00:00 -> 01:00 and back
        "Australia/Lord_Howe",  # half an hour of daylight saving
        "Asia/Kathmandu",  # +05:45
        "Pacific/Apia",  # skipped 2011-12-30
    )
] + [dt.timezone(dt.timedelta(minutes=m)) for m in (-570, 0, 345)]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(_ZONES),
    st.one_of(
        st.integers(1_230_000_000, 1_900_000_000),
        st.floats(-2e9, 4e9, allow_nan=False),
    ),
    st.lists(st.integers(-7200, 7200), max_size=5),
)
def test_local_date_is_the_day_the_local_clock_shows(
    tz: dt.tzinfo, at: float, nearby: list[int]
) -> None:
    """Looked up per hour or not, the day of every instant is the one `fromtimestamp`
    shows: around midnight, daylight-saving changes and days a zone skipped."""
    for instant in (at, *(at + d for d in nearby)):
        assert local_date(instant, tz) == dt.datetime.fromtimestamp(instant, tz).date()


class TestLastWindowsBeforeTheHistory:
    """`last: N` windows reaching back before the subscriber's history in the series (or
    into the window it began in) read those windows as 0: "fewer than 3 calls in 4 weeks"
    fired on a subscriber first seen that week, and every week until four whole ones had
    passed. An "at least" test may be judged at once (the windows missed could only add);
    any other waits for the history, as a baseline does."""

    RULES = (
        "series:\n  calls_week: {on: [usage], when: {kind: voice}, period: week}\n"
        "rules:\n  - id: few_calls\n    description: few\n    on: [usage]\n"
        "    evaluate: weekly\n    condition: %s\n"
        "    task: {family: anomaly, type: few_calls, channel: manager, priority: 3,\n"
        "           action: a, ttl: 7d, description: '{calls_week} calls'}\n"
    )

    @staticmethod
    def calls(days: list[str], sub: str = "13800138001") -> list[tuple[EventType, dict[str, Any]]]:
        return [ev(EventType.USAGE, at(d), sub, kind="voice", quantity=60) for d in days]

    def fired(self, condition: str, days: list[str], until: str) -> list[str]:
        rules = rules_from(
            "gating: {quiet_hours: [], frequency_cap: null}\n" + self.RULES % condition
        )
        result = run(rules, self.calls(days), until=until)
        return [t.triggered_at.date().isoformat() for t in result.tasks]

    def test_fewer_than_waits_for_the_windows_it_reads(self) -> None:
        # First seen on Thursday 5 November 2026; two calls, then none.
        days = ["2026-11-05", "2026-11-06"]
        fired = self.fired(
            "{series: calls_week, agg: count, last: 4, lt: 3}", days, at("2026-12-15")
        )
        # The week of 2 Nov began the history (partial): 9 Nov to 6 Dec are 4 whole weeks.
        assert fired == ["2026-12-07", "2026-12-14"]
        under_not = "{not: {series: calls_week, agg: count, last: 4, gte: 3}}"
        assert self.fired(under_not, days, at("2026-12-15")) == fired

    def test_at_least_is_judged_at_once(self) -> None:
        days = ["2026-11-05", "2026-11-06", "2026-11-07"]
        fired = self.fired(
            "{series: calls_week, agg: count, last: 4, gte: 3}", days, at("2026-11-10")
        )
        assert fired == ["2026-11-09"]  # the first week's close: three calls are three

    def test_an_established_subscriber_is_judged_as_before(self) -> None:
        weeks = [f"2026-10-{d:02d}" for d in (6, 7, 8, 13, 14, 15, 20, 21, 22, 27, 28, 29)]
        fired = self.fired(
            "{series: calls_week, agg: count, last: 2, lt: 3}",
            [*weeks, "2026-11-03"],
            at("2026-11-17"),
        )
        # Weeks of 26 Oct (3 calls) + 2 Nov (1): 4; of 2 Nov + 9 Nov (0): 1, below 3.
        assert fired == ["2026-11-16"]


class TestNotJudgedUnderNot:
    """A baseline (or share) with too little history, or below its floor, judges nothing;
    taken as false, `not: {baseline: ...}` ("calls this week not at least twice the
    usual") fired on every new subscriber each week until the windows were there. It
    waits for them, as a series test over `last:` does."""

    RULES = (
        "series:\n  calls_week: {on: [usage], when: {kind: voice}, period: week}\n"
        "  voice_week: {on: [usage], when: {kind: voice}, field: quantity, period: week}\n"
        "  usage_week: {on: [usage], field: quantity, period: week}\n"
        "rules:\n  - id: r\n    description: r\n    on: [usage]\n"
        "    evaluate: weekly\n    condition: %s\n"
        "    task: {family: anomaly, type: r, channel: manager, priority: 3,\n"
        "           action: a, ttl: 7d, description: d}\n"
    )
    # Two calls a week from Thursday 5 November 2026 (the week of 2 Nov is partial).
    DAYS = (
        *("2026-11-05", "2026-11-06", "2026-11-10", "2026-11-11", "2026-11-17", "2026-11-18"),
        *("2026-11-24", "2026-11-25", "2026-12-01", "2026-12-02", "2026-12-08", "2026-12-09"),
    )

    def fired(self, condition: str, until: str) -> list[str]:
        rules = rules_from(
            "gating: {quiet_hours: [], frequency_cap: null}\n" + self.RULES % condition
        )
        events = [ev(EventType.USAGE, at(d), kind="voice", quantity=60) for d in self.DAYS]
        result = run(rules, events, until=until)
        return [t.triggered_at.date().isoformat() for t in result.tasks]

    def test_not_a_baseline_waits_for_the_windows(self) -> None:
        fired = self.fired(
            "{not: {baseline: calls_week, agg: count, windows: 3, gte: 2}}", at("2026-12-15")
        )
        # The weeks of 9, 16 and 23 Nov are the first whole three: judged from the close
        # of the week of 30 Nov on (2 calls, as usual: not twice).
        assert fired == ["2026-12-07", "2026-12-14"]
        within = "{all: [{not: {baseline: calls_week, agg: count, windows: 3, gte: 2}}]}"
        assert self.fired(within, at("2026-12-15")) == fired

    def test_not_a_share_below_its_total_is_not_judged(self) -> None:
        # Voice is all of the usage (share 1.0): under not: it never fires, whether or not
        # the total reaches min_total (120 s a week does, 1000 s never).
        judged = "{not: {share: voice_week, of: usage_week, min_total: 100, gte: 0.5}}"
        assert self.fired(judged, at("2026-12-15")) == []
        below = "{not: {share: voice_week, of: usage_week, min_total: 1000, gte: 0.5}}"
        assert self.fired(below, at("2026-12-15")) == []
        # The same test, not negated: a share below its total is false as before.
        assert self.fired(below.replace("{not: ", "")[:-1], at("2026-12-15")) == []


class TestNoEventInTheSeries:
    """ "Fewer than 3 top-ups in the last 30 days" was never judged for a subscriber who
    had had none: with no window of the series stored, the test waited for a history in
    the series that only a top-up began. The subscriber's history in a series begins at
    their first event of any kind read with the series declared (their record sees every
    event of theirs from then on): once it covers the windows read, none is none."""

    RULES = (
        "gating: {quiet_hours: [], frequency_cap: null}\n"
        "series:\n  topups_day: {on: [topup], period: day}\n"
        "rules:\n  - id: few_topups\n    description: few\n    on: [topup]\n"
        "    evaluate: daily\n    condition: %s\n"
        "    task: {family: anomaly, type: few_topups, channel: sms, priority: 3,\n"
        "           action: a, ttl: 1d, cooldown: 30d, description: '{topups_day} top-ups'}\n"
    )
    FEWER = "{series: topups_day, agg: count, last: 30, lt: 3}"

    @staticmethod
    def calls(days: list[str]) -> list[tuple[EventType, dict[str, Any]]]:
        return [ev(EventType.USAGE, at(d), kind="voice", quantity=60) for d in days]

    def fired(
        self, condition: str, events: list[tuple[EventType, dict[str, Any]]], until: str
    ) -> list[str]:
        result = run(rules_from(self.RULES % condition), events, until=until)
        return [t.triggered_at.date().isoformat() for t in result.tasks]

    def test_a_subscriber_with_no_top_up_is_judged_once_known_long_enough(self) -> None:
        # Known from a call on 5 November 2026 (a partial day), calls now and then, no
        # top-up: 6 November to 5 December are 30 whole days, closed at midnight.
        events = self.calls(["2026-11-05", "2026-11-20", "2026-12-03"])
        assert self.fired(self.FEWER, events, at("2026-12-10")) == ["2026-12-06"]
        under_not = "{not: {series: topups_day, agg: count, last: 30, gte: 3}}"
        assert self.fired(under_not, events, at("2026-12-10")) == ["2026-12-06"]

    def test_a_top_up_after_the_record_began_does_not_begin_the_history_again(self) -> None:
        events = [
            *self.calls(["2026-11-05"]),
            ev(EventType.TOPUP, at("2026-11-28"), amount=50, channel="app"),
        ]
        # One top-up in the 30 days: fewer than 3, judged from the same day.
        assert self.fired(self.FEWER, events, at("2026-12-10")) == ["2026-12-06"]

    def test_a_series_declared_later_begins_at_the_next_event(self) -> None:
        """A subscriber known before the series was declared (a reload that adds it)
        is not read as having had none before it: their history in it begins at their
        next event, so the new rule makes no burst of tasks on everyone at once."""
        plain = rules_from("rules:" + NO_ACTIVITY)
        before = run(plain, self.calls(["2026-10-01", "2026-10-15"]))
        rules = rules_from(self.RULES % self.FEWER)
        after = run(rules, self.calls(["2026-11-05"]), until=at("2026-12-10"), result=before)
        fewer = [
            t.triggered_at.date().isoformat() for t in after.tasks if t.moment.type == "few_topups"
        ]
        assert fewer == ["2026-12-06"]


class TestABaselineBeginsAtTheSeriesFirstEvent:
    """A `sum` or `count` baseline is over the subscriber's own windows from their first
    event in the series on (the window it fell in not counted, a partial one). A series
    another rule reads as "fewer than" is begun at the subscriber's first event of any
    kind (`TestNoEventInTheSeries`); the baseline took that for the start of the history
    in it, so the months between a customer's first top-up and first call charge counted
    as zeros: a usual 33 yuan of a customer spending 100 a month from their first charge,
    and "three times the usual" at the close of their first whole month."""

    RULES = (
        "gating: {quiet_hours: [], frequency_cap: null}\n"
        "series:\n  spend_month: {on: [usage], field: charge, period: month}\n"
        "rules:\n  - id: bill_spike\n    description: spike\n    on: [usage]\n"
        "    evaluate: monthly\n"
        "    condition: {baseline: spend_month, windows: 3, min_baseline: 20, gte: 2}\n"
        "    task: {family: anomaly, type: bill_spike, channel: sms, priority: 3,\n"
        "           action: a, ttl: 7d, description: '{spend_month_baseline}'}\n"
    )
    NO_CHARGE = (
        "  - id: no_charge\n    description: none\n    on: [usage]\n"
        "    evaluate: monthly\n"
        "    condition: {series: spend_month, agg: count, last: 2, lt: 1}\n"
        "    task: {family: anomaly, type: no_charge, channel: sms, priority: 3,\n"
        "           action: a, ttl: 7d, description: none}\n"
    )

    def spikes(self, fewer_than: bool, until: str) -> list[tuple[str, object]]:
        events = [
            ev(EventType.TOPUP, at("2026-05-10"), amount=50, channel="app"),
            ev(EventType.USAGE, at("2026-08-20"), kind="data", quantity=1, charge=100),
            *(
                ev(EventType.USAGE, at(f"2026-{m:02d}-10"), kind="data", quantity=1, charge=100)
                for m in (9, 10, 11, 12)
            ),
        ]
        rules = rules_from(self.RULES + (self.NO_CHARGE if fewer_than else ""))
        result = run(rules, events, until=until)
        return [
            (t.triggered_at.date().isoformat(), t.moment.params.get("spend_month_baseline"))
            for t in result.tasks
            if t.moment.type == "bill_spike"
        ]

    @pytest.mark.parametrize("fewer_than", [False, True])
    def test_a_new_spender_is_no_spike(self, fewer_than: bool) -> None:
        assert self.spikes(fewer_than, at("2027-01-02")) == []

    def test_the_fewer_than_test_still_reads_the_months_before_the_first_charge(
        self,
    ) -> None:
        rules = rules_from(self.RULES + self.NO_CHARGE)
        topup = ev(EventType.TOPUP, at("2026-05-10"), amount=50, channel="app")
        result = run(rules, [topup], until=at("2026-08-02"))
        # Known from May (partial): June and July, two whole months without a charge.
        assert [t.triggered_at.date().isoformat() for t in result.tasks] == ["2026-08-01"]


class TestABeginNoTestReads:
    """A series' begin (`<tag>.b`) is kept in the record for a "fewer than" test of it.
    A reload that takes the last such test away left it in every record begun, read by
    nothing and written with the record for good (bytes of every subscriber's state); it
    goes at the day's first close once no test reads it."""

    BOTH = TestABaselineBeginsAtTheSeriesFirstEvent.RULES
    FEWER = BOTH + TestABaselineBeginsAtTheSeriesFirstEvent.NO_CHARGE

    def begun(self, after: str, events: list[Any], until: str | None = None) -> bool:
        """Whether the record still holds the begin once `events` (and a sweep to `until`)
        ran under the rules `after` (the baseline alone, or with the "fewer than" test),
        following a top-up read under the rules with the test."""
        with_test = rules_from(self.FEWER)
        tag = with_test.series["spend_month"].begun_tag
        topup = ev(EventType.TOPUP, at("2026-05-10"), amount=50, channel="app")
        first = run(with_test, [topup])
        state = first.store.load(SUB)
        assert state is not None
        assert tag in state.series  # begun at the top-up
        later = run(rules_from(after), events, until=until, result=first)
        state = later.store.load(SUB)
        assert state is not None
        assert state.series.get(with_test.series["spend_month"].tag) is None  # no charge
        return tag in state.series

    def test_an_event_the_next_day_drops_it(self) -> None:
        topup = ev(EventType.TOPUP, at("2026-05-11"), amount=30, channel="app")
        assert not self.begun(self.BOTH, [topup])

    def test_a_sweep_the_next_day_drops_it(self) -> None:
        assert not self.begun(self.BOTH, [], until=at("2026-05-12"))

    def test_it_stays_while_a_test_reads_it(self) -> None:
        topup = ev(EventType.TOPUP, at("2026-05-11"), amount=30, channel="app")
        assert self.begun(self.FEWER, [topup], until=at("2026-05-12"))


def test_the_largest_of_negative_amounts_is_negative() -> None:
    """ "The balance stayed below zero all day" (`agg: max, lt: 0` of `balance_after`)
    never fired: the largest of a window's negative balances, and of the windows read
    together, was read as 0."""
    rules = rules_from(
        "gating: {quiet_hours: [], frequency_cap: null}\n"
        "series:\n  balance_day: {on: [usage], field: balance_after, period: day}\n"
        "rules:\n  - id: r\n    description: r\n    on: [usage]\n"
        "    evaluate: daily\n    condition: {series: balance_day, agg: max, last: 2, lt: 0}\n"
        "    task: {family: anomaly, type: r, channel: sms, priority: 3,\n"
        "           action: a, ttl: 1d, description: '{balance_day}'}\n"
    )
    balances = [("2026-12-01", -5), ("2026-12-02", -4), ("2026-12-03", -2), ("2026-12-04", 10)]
    events = [
        ev(EventType.USAGE, at(day), kind="data", quantity=1, balance_after=balance)
        for day, balance in balances
    ]
    result = run(rules, events, until=at("2026-12-06"))
    # Judged from the 3rd's close (the 1st is the partial day the history began in).
    assert [
        (t.triggered_at.date().isoformat(), t.moment.params["balance_day"]) for t in result.tasks
    ] == [("2026-12-04", -2.0)]


class TestNoValueWithoutEvents:
    """The average or the largest of no event is no value, as a baseline over `avg` or
    `max` leaves a window without events out (docs/rules.md): read as 0, "the average
    top-up today is under 20" fired at every daily close of a day without a top-up, and
    "today's average top-up is half the usual" on every day with none."""

    RULES = (
        "gating: {quiet_hours: [], frequency_cap: null}\n"
        "series:\n  topup_day: {on: [topup], field: amount, period: day}\n"
        "rules:\n  - id: r\n    description: r\n    on: [topup]\n"
        "    evaluate: daily\n    condition: %s\n"
        "    task: {family: anomaly, type: r, channel: sms, priority: 3,\n"
        "           action: a, ttl: 1d, description: d}\n"
    )

    def fired(self, condition: str, topups: list[str], until: str) -> list[str]:
        events = [ev(EventType.TOPUP, at(d), amount=50, channel="app") for d in topups]
        result = run(rules_from(self.RULES % condition), events, until=until)
        return [t.triggered_at.date().isoformat() for t in result.tasks]

    def test_an_average_or_largest_of_no_top_up_is_not_judged(self) -> None:
        for condition in (
            "{series: topup_day, agg: avg, lt: 20}",
            "{series: topup_day, agg: max, lt: 20}",
            "{series: topup_day, agg: avg, last: 2, lt: 50}",
            "{not: {series: topup_day, agg: avg, gte: 20}}",
            "{not: {series: topup_day, agg: max, gte: 20}}",
        ):
            assert self.fired(condition, ["2026-12-01"], at("2026-12-08")) == [], condition

    def test_only_the_days_with_top_ups_are_judged(self) -> None:
        # 50 on the 1st (a partial day for max: judged from the 2nd) and on the 3rd.
        topups = ["2026-12-01", "2026-12-03"]
        assert self.fired("{series: topup_day, agg: avg, lt: 60}", topups, at("2026-12-08")) == [
            "2026-12-02",
            "2026-12-04",
        ]
        assert self.fired("{series: topup_day, agg: max, lt: 60}", topups, at("2026-12-08")) == [
            "2026-12-04"
        ]

    def test_a_baseline_over_a_window_without_events_is_not_judged(self) -> None:
        topups = ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
        for agg in ("avg", "max"):
            condition = f"{{baseline: topup_day, agg: {agg}, windows: 3, lte: 0.5}}"
            assert self.fired(condition, topups, at("2026-12-08")) == [], agg


def test_explain_says_an_average_of_no_event_is_not_judged() -> None:
    rules = rules_from(TestNoValueWithoutEvents.RULES % "{series: topup_day, agg: avg, lt: 20}")
    (rule,) = rules.rules
    assert "(not judged when those windows hold no event)" in explain_rule(rule)


class TestAtTheThreshold:
    """A baseline's change or ratio and a share are divisions of amounts in yuan and fen,
    whose binary floats are a hair off: spend of 20.10 against a usual 30 is a change of
    -0.33, computed -0.32999999999999996, and `lte: -0.33` did not hold, while the task
    would have shown -0.33; a share of 2.10 in 3.00 computed 0.7000000000000001."""

    RULES = (
        "gating: {quiet_hours: [], frequency_cap: null}\n"
        "series:\n  spend_day: {on: [usage], field: charge, period: day}\n"
        "  voice_day: {on: [usage], when: {kind: voice}, field: charge, period: day}\n"
        "rules:\n  - id: r\n    description: r\n    on: [usage]\n"
        "    evaluate: daily\n    condition: %s\n"
        "    task: {family: anomaly, type: r, channel: sms, priority: 3,\n"
        "           action: a, ttl: 1d, description: d}\n"
    )

    @staticmethod
    def spend(day: str, charge: str, kind: str = "data") -> tuple[EventType, dict[str, Any]]:
        return ev(EventType.USAGE, at(day), kind=kind, quantity=1, charge=charge)

    def fired(self, condition: str, events: list[tuple[EventType, dict[str, Any]]]) -> list[str]:
        result = run(rules_from(self.RULES % condition), events, until=at("2026-12-06"))
        return [t.triggered_at.date().isoformat() for t in result.tasks]

    def test_a_change_of_exactly_the_threshold_holds(self) -> None:
        # The 1st begins the history; the 2nd to the 4th are the usual 30, the 5th 20.10.
        days = ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
        events = [*(self.spend(d, "30.00") for d in days), self.spend("2026-12-05", "20.10")]
        condition = "{baseline: spend_day, windows: 3, measure: change, lte: -0.33}"
        assert self.fired(condition, events) == ["2026-12-06"]
        ratio = "{baseline: spend_day, windows: 3, lte: 0.67}"
        assert self.fired(ratio, events) == ["2026-12-06"]

    def test_a_share_of_exactly_the_threshold_holds(self) -> None:
        events = [self.spend("2026-12-05", "2.10", "voice"), self.spend("2026-12-05", "0.90")]
        condition = "{share: voice_day, of: spend_day, lte: 0.7}"
        assert self.fired(condition, events) == ["2026-12-06"]
