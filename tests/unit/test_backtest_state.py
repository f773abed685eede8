"""The backtest's indexed sweep (BacktestState.due, moments.sweep.next_sweep) against the full
sweep the stream does: subscribers in zones from UTC-12 to UTC+14, quarter-hour offsets
and DST changes at midnight, events and time-zone moves in between; every sweep must make
the same tasks in the same order and leave the same records (but for the CHECKED_DAY
marker a sweep sets without saving)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, replace
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import moments.sweep
from moments.backtest_state import BacktestState
from moments.batchresult import StateChange
from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import to_records
from moments.state import SubscriberState
from moments.statezip import pack, unpack
from moments.store import DictStateStore
from moments.sweep import CHECKED_DAY, next_sweep, sweep
from rules.catalog import RuleSet

from .rules.helpers import SUB, at, ev, rules_from

ZONES = [
    "Asia/Shanghai",
    "Pacific/Kiritimati",  # UTC+14
    "Etc/GMT+12",  # UTC-12
    "Pacific/Chatham",  # +12:45, +13:45 in summer
    "Asia/Kathmandu",  # +5:45
    "America/St_Johns",  # -3:30, DST
    "Australia/Lord_Howe",  # half-hour DST
    "America/Santiago",  # DST ends at midnight: 23:00-24:00 happens twice
    "Africa/Cairo",  # DST starts at midnight and ends at 24:00
    "Asia/Beirut",  # DST at midnight
    "America/Havana",  # DST starts at midnight
    "Europe/London",
    "America/New_York",
    "Not/AZone",  # unknown: Asia/Shanghai
]

RULES = """
special_days:
  local_hour: %(hour)s
gating:
  quiet_hours: []
  frequency_cap: null
series:
  n: {on: [usage], period: day}
  w: {on: [usage], period: week}
  m: {on: [usage], period: month}
rules:
  - id: quiet_day
    description: no usage for a day, told at a day's close
    on: [usage]
    evaluate: daily
    condition: {absence: 1d}
    task: {family: anomaly, type: quiet_day, channel: sms, priority: 3, action: a, ttl: 3650d,
           description: d}
  - id: busy_day
    description: usage on a day, told at its close
    on: [usage]
    evaluate: daily
    condition: {series: n, gte: 1}
    task: {family: anomaly, type: busy_day, channel: sms, priority: 3, action: a, ttl: 3650d,
           description: d}
  - id: busy_week
    description: usage in a week
    on: [usage]
    evaluate: weekly
    condition: {series: w, gte: 1}
    task: {family: anomaly, type: busy_week, channel: sms, priority: 3, action: a, ttl: 3650d,
           description: d}
  - id: busy_month
    description: usage in a month
    on: [usage]
    evaluate: monthly
    condition: {series: m, gte: 1}
    task: {family: anomaly, type: busy_month, channel: sms, priority: 3, action: a, ttl: 3650d,
           description: d}
  - id: birthday
    description: birthday greeting
    on: [profile]
    evaluate: special_day
    condition: {occasion: birthday}
    task: {family: special_day, type: birthday, channel: sms, priority: 4, action: a, ttl: 3650d,
           description: d}
"""
HOURS = (0, 9, 23)
"""The local hours the special-day rules are looked at in the rule sets tried."""


@cache
def rule_set(hour: int) -> RuleSet:
    """`RULES` at `hour`, compiled when a test first asks (~0.25 CPU-s each): at import,
    each of `make test`'s workers paid for all three in collecting the file."""
    return rules_from(RULES % {"hour": hour})


SUBS = [f"1380000{i:04d}" for i in range(len(ZONES))]
_ids = itertools.count()


@dataclass(frozen=True)
class Step:
    gap: int
    """Seconds of event time before this step."""
    kind: str
    """sweep, usage (one subscriber's), or profile (a move to another zone)."""
    who: int = 0
    zone: int = 0


Input = tuple[EventType, dict[str, Any]]


def _event(event_type: EventType, sub: str, at: int, **fields: Any) -> Input:
    when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    body = {"event_id": f"e{next(_ids)}", "subscriber_id": sub, "occurred_at": when}
    return event_type, body | fields


class Twin:
    """One history run twice: `indexed` sweeps what `BacktestState.due` gives, `full`
    sweeps every record each time (the stream's way)."""

    def __init__(self, rules: RuleSet) -> None:
        self.detector = Detector(rules, {t.value: t for t in EventType})
        self.indexed = BacktestState()
        self.full = BacktestState()
        self.offsets: dict[str, int] = {}
        self.visits: list[tuple[int, str]] = []
        """(event time, subscriber) of each record the indexed sweep looked at."""
        self.tasks = 0

    def events(self, events: list[Input]) -> None:
        records = to_records(events, offsets=self.offsets)
        for store in (self.indexed, self.full):
            store.save(self.detector.process(records, store.load, None).changes)

    def sweep(self, at: int) -> None:
        due = self.indexed.due(self.detector, at)
        self.visits += [(at, sub) for sub, _, _ in due]
        a = sweep(self.detector, due, lambda _p: at, None)
        b = sweep(self.detector, self.full.items([0]), lambda _p: at, None)
        assert [t.model_dump() for t in a.tasks] == [t.model_dump() for t in b.tasks], at
        assert sorted(a.changes) == sorted(b.changes), at
        self.indexed.save(a.changes)
        self.full.save(b.changes)
        assert _unmarked(self.indexed.records) == _unmarked(self.full.records), at
        self.tasks += len(a.tasks)


def _unmarked(records: dict[str, SubscriberState]) -> dict[str, SubscriberState]:
    """The records compared as objects, less the marker: equal objects store equal bytes,
    and a round trip through the stored form took half the time of the DST test."""
    return {
        sub: replace(state, closed={k: v for k, v in state.closed.items() if k != CHECKED_DAY})
        for sub, state in records.items()
    }


def replay(start: int, steps: list[Step], hour: int = 9) -> Twin:
    """Every subscriber (one per zone) starts with a profile (birthday the next day) and
    a usage event; then the steps, each `gap` seconds after the one before."""
    twin = Twin(rule_set(hour))
    birthday = (dt.datetime.fromtimestamp(start, dt.UTC) + dt.timedelta(days=1)).strftime("%m-%d")
    twin.events(
        [
            _event(EventType.PROFILE, sub, start, timezone=zone, birthday=birthday)
            for sub, zone in zip(SUBS, ZONES, strict=True)
        ]
        + [_event(EventType.USAGE, sub, start, kind="data") for sub in SUBS]
    )
    at = start
    for step in steps:
        at += step.gap
        sub = SUBS[step.who % len(SUBS)]
        if step.kind == "sweep":
            twin.sweep(at)
        elif step.kind == "usage":
            twin.events([_event(EventType.USAGE, sub, at, kind="data")])
        else:
            zone = ZONES[step.zone % len(ZONES)]
            twin.events([_event(EventType.PROFILE, sub, at, timezone=zone)])
    return twin


STEP = st.builds(
    Step,
    gap=st.one_of(st.integers(1, 3600), st.integers(3600, 6 * 3600)),
    kind=st.sampled_from(["sweep", "sweep", "sweep", "usage", "profile"]),
    who=st.integers(0, len(SUBS) - 1),
    zone=st.integers(0, len(ZONES) - 1),
)
YEAR_2026 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())


class TestIndexedSweep:
    @settings(max_examples=60, deadline=None)
    @given(
        start=st.integers(YEAR_2026, YEAR_2026 + 366 * 86400),
        steps=st.lists(STEP, min_size=1, max_size=80),
        hour=st.sampled_from(HOURS),
    )
    def test_same_tasks_and_records_as_the_full_sweep(
        self, start: int, steps: list[Step], hour: int
    ) -> None:
        """Random histories over a year: whatever the zone, moves and gaps, every sweep
        of the due records equals the sweep of all records."""
        replay(start, steps, hour)

    def test_across_every_dst_change_of_2026(self) -> None:
        """Around each 2026 offset change of each zone (midnight ones included), sweeps
        every 20-40 minutes for three days, with an event now and then: the same as the
        full sweep, and the sweeps make tasks (closes and birthdays) to compare."""
        made = 0
        for name in ZONES:
            for change in _offset_changes(name, 2026):
                gaps = [1200 + (i * 7919) % 1200 for i in range(3 * 72)]
                steps = [
                    Step(g, "usage" if i % 29 == 5 else "sweep", who=i) for i, g in enumerate(gaps)
                ]
                twin = replay(change - 86400, steps)
                made += twin.tasks
        assert made > 100

    def test_a_silent_subscriber_is_looked_at_on_its_midnight_and_hour_only(self) -> None:
        """The point of the index: over two silent days, a record is looked at after each
        local midnight and at the special-day hour, not every hour."""
        start = int(dt.datetime(2026, 3, 3, 12, tzinfo=dt.UTC).timestamp())
        twin = replay(start, [Step(3600, "sweep") for _ in range(48)])
        kathmandu = ZoneInfo("Asia/Kathmandu")
        sub = SUBS[ZONES.index("Asia/Kathmandu")]
        seen = [
            dt.datetime.fromtimestamp(at, kathmandu).strftime("%d %H:%M")
            for at, s in twin.visits
            if s == sub
        ]
        # Its events (17:45 local) closed and looked at day 3: then the first hourly sweep
        # after each midnight (00:45) and after the special-day hour (09:00).
        assert seen == ["04 00:45", "04 09:45", "05 00:45", "05 09:45"]


def _offset_changes(name: str, year: int) -> list[int]:
    """Instants (to the hour) at which a zone's UTC offset changes in `year`."""
    tz = ZoneInfo(name) if "/" in name and name != "Not/AZone" else ZoneInfo("Asia/Shanghai")
    out = []
    at = int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp())
    end = int(dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC).timestamp())
    before = dt.datetime.fromtimestamp(at, tz).utcoffset()
    while at < end:
        at += 3600
        offset = dt.datetime.fromtimestamp(at, tz).utcoffset()
        if offset != before:
            out.append(at)
            before = offset
    return out


def test_a_sweep_that_closes_nothing_marks_the_day_without_saving() -> None:
    """A sweep that finds nothing to close still notes the day it looked (CHECKED_DAY)
    in the kept record, without reporting a change; the record is then not due again
    before its next local midnight."""
    shanghai = ZoneInfo("Asia/Shanghai")
    twin = replay(YEAR_2026 + 10 * 86400, [])  # events at 08:00 on 2026-01-11 in Shanghai
    detector, store = twin.detector, twin.indexed
    sub = SUBS[0]  # Asia/Shanghai
    state = store.records[sub]
    today = dt.date(2026, 1, 11).toordinal()
    state.closed[CHECKED_DAY] = 0  # as if the day had not been looked at
    state.special_day = today  # and today's special-day look were done
    store.save({sub: StateChange(state, 0)})
    evening = int(dt.datetime(2026, 1, 11, 20, tzinfo=shanghai).timestamp())
    due = [entry for entry in store.due(detector, evening) if entry[0] == sub]
    assert due == [(sub, state, 0)]
    result = sweep(detector, due, lambda _p: evening, None)
    assert result.changes == {}  # the day's windows are still open
    assert result.tasks == []
    assert store.records[sub].closed[CHECKED_DAY] == today
    midnight = dt.datetime(2026, 1, 12, tzinfo=shanghai).timestamp()
    assert next_sweep(detector, state, evening) == midnight
    assert sub not in [s for s, _, _ in store.due(detector, evening + 3600)]
    assert sub not in [s for s, _, _ in store.due(detector, int(midnight) - 1)]
    assert sub in [s for s, _, _ in store.due(detector, int(midnight))]


class TestSweepRetry:
    """A sweep that fails on a record tries it again from the record as it was before
    (`StateStore.reread`), as the stream reads its stored bytes anew. The backtest's
    `reread` gave the object the failed pass had changed: the day marked looked at, its
    windows closed, so the retry made none of the day's tasks the stream made."""

    SWEPT_AT = int(dt.datetime(2026, 11, 5, 12, tzinfo=dt.UTC).timestamp())

    @staticmethod
    def stores(**damaged: Any) -> tuple[Detector, DictStateStore, BacktestState]:
        """A stream's store and the backtest's, one subscriber (a birthday on the sweep's
        day, data used four days before) in each, with these stored fields replaced."""
        detector = Detector(rule_set(9), {t.value: t for t in EventType})
        events = [
            ev(EventType.PROFILE, at("2026-11-01"), timezone="Asia/Shanghai", birthday="11-05"),
            ev(EventType.USAGE, at("2026-11-01"), kind="data"),
        ]
        stream, backtest = DictStateStore(cache_capacity=0), BacktestState()
        for store in (stream, backtest):
            store.save(detector.process(to_records(events, offsets={}), store.load, None).changes)
        doc = orjson.loads(unpack(stream.data[SUB])) | damaged
        stream.data[SUB] = pack(orjson.dumps(doc))
        backtest.save({SUB: StateChange(SubscriberState.from_bytes(stream.data[SUB]), 0)})
        return detector, stream, backtest

    def test_a_record_mended_on_its_retry_makes_the_day_s_tasks_as_the_stream(self) -> None:
        detector, stream, backtest = self.stores(d="x")  # special_day: not a day number
        when = self.SWEPT_AT
        want = sweep(detector, stream.items([0]), lambda _p: when, None, stream.reread)
        got = sweep(detector, backtest.due(detector, when), lambda _p: when, None, backtest.reread)
        assert want.damaged == got.damaged == {SUB: "special_day"}
        assert [t.moment.type for t in want.tasks] == [
            "busy_day",
            "quiet_day",
            "busy_week",
            "birthday",
        ]
        assert [t.model_dump() for t in got.tasks] == [t.model_dump() for t in want.tasks]
        stream.save(want.changes)
        backtest.save(got.changes)
        assert backtest.records[SUB] == SubscriberState.from_bytes(stream.data[SUB])

    def test_a_record_the_rules_failed_on_stays_as_it_was(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Not written, as on the stream: the next sweep tries it whole again."""
        detector, _, backtest = self.stores()
        before = backtest.records[SUB].to_json()

        def fails(*_args: Any) -> bool:
            raise RuntimeError("a rule's fault")

        monkeypatch.setattr(moments.sweep, "special_days", fails)  # after the windows closed
        when = self.SWEPT_AT
        result = sweep(
            detector, backtest.due(detector, when), lambda _p: when, None, backtest.reread
        )
        assert [str(e) for e in result.failures] == ["a rule's fault"]
        assert result.changes == {}
        assert backtest.records[SUB].to_json() == before
        assert SUB in [s for s, _, _ in backtest.due(detector, when + 3600)]  # tried again
