"""Every rule of the default catalog through a real worker, broker and Redis.

One worker, one subscriber per scenario, events dated relative to now in a time
zone where it is daytime (so quiet hours hold nothing back whenever the test runs).
The catalog is the packaged one with three test-only changes, written out here: every
`ttl` is 45 days (a monthly rule fires at the close of last month, which may be
weeks ago), an operator calendar makes today a holiday (so the holiday greeting is
tested any day), and the contact cap is 10 a week (each subscriber also gets that
greeting, which would otherwise use up one of three contacts). The dispatch policy
holds no channel for the merge window, so each rule's task arrives on its own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import rules
from moments.embedded import free_port
from moments.sample import daytime_visits, daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import produce, read_topic, values, wait_for_metric

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG = Path(rules.__file__).parent / "catalog" / "default.yaml"
TTL = dt.timedelta(days=45)
GREETINGS = ("birthday", "join_anniversary", "holiday_greeting")

Record = tuple[str, str, dict[str, Any]]


class Scenarios:
    """Events per subscriber, and the tasks (type -> expected params) each must get."""

    def __init__(self, now: dt.datetime) -> None:
        self.zone = daytime_zone(now)
        self.now = now.astimezone(ZoneInfo(self.zone)).replace(microsecond=0)
        self.abroad: dict[str, str] = {}
        """Subscriber -> the zone of the trip they are on: the holiday greeting goes on
        the local date where the subscriber is."""
        self.profiles: list[Record] = []
        self.events: list[Record] = []
        self.expected: dict[str, dict[str, dict[str, Any]]] = {}
        self.maybe: dict[str, set[str]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        """Tasks of one type a subscriber gets when more than one."""
        self._next_sub = 13_500_000_000
        self._ids = 0

    def subscriber(
        self, expect: dict[str, dict[str, Any]], maybe: tuple[str, ...] = (), **profile: Any
    ) -> str:
        """A new subscriber that must get exactly the `expect` tasks (plus any of `maybe`)."""
        self._next_sub += 1
        sub = str(self._next_sub)
        self.expected[sub] = expect
        self.maybe[sub] = set(maybe)
        self.profiles.append(
            (
                "profile",
                sub,
                self._value(sub, self.now - dt.timedelta(days=400), timezone=self.zone, **profile),
            )
        )
        return sub

    def _value(self, sub: str, when: dt.datetime, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        return {
            "event_id": f"it-{self._ids}",
            "subscriber_id": sub,
            "occurred_at": when.isoformat(),
            **fields,
        }

    def add(self, topic: str, sub: str, when: dt.datetime, **fields: Any) -> None:
        self.events.append((topic, sub, self._value(sub, when, **fields)))

    def ago(self, **delta: float) -> dt.datetime:
        return self.now - dt.timedelta(**delta)

    def month_start(self, back: int) -> dt.datetime:
        year, month = self.now.year, self.now.month - back
        while month < 1:
            year, month = year - 1, month + 12
        return self.now.replace(year=year, month=month, day=15, hour=12, minute=0, second=0)

    def week_monday(self, back: int) -> dt.datetime:
        monday = self.now - dt.timedelta(days=self.now.weekday(), weeks=back)
        return monday.replace(hour=12, minute=0, second=0)


def build(now: dt.datetime) -> Scenarios:
    sc = Scenarios(now)
    soon = sc.ago(minutes=30)
    # ---- first-time
    # Abroad where it is daytime: quiet hours follow the visited country's clock.
    (country, _, zone), _ = daytime_visits(sc.now)
    trip = {"country": country, "roaming_type": "international", "timezone": zone}
    s = sc.subscriber({"first_international_roaming": {"country": country}})
    sc.abroad[s] = zone
    sc.add("roaming", s, sc.ago(minutes=40), **trip)
    sc.add("roaming", s, soon, **trip)
    s = sc.subscriber({})  # domestic roaming: nothing
    sc.add("roaming", s, soon, country="CN", roaming_type="domestic")
    s = sc.subscriber({"first_service_order": {"service_code": "5G-100"}})
    sc.add("usage", s, soon, kind="service_order", service_code="5G-100")
    s = sc.subscriber({"handset_change": {"imei": "490154203237518"}})
    sc.add("usage", s, sc.ago(minutes=50), kind="data", imei="356938035643809")
    sc.add("usage", s, soon, kind="data", imei="490154203237518")
    s = sc.subscriber({"first_bill_query": {"lookback_days": 60}})
    sc.add("usage", s, soon, kind="bill_query")
    s = sc.subscriber({"first_topup": {"channel": "bank"}})
    sc.add("topup", s, soon, amount=50, channel="bank", balance_after=80)
    # ---- anomaly on events
    s = sc.subscriber({"complaint": {"severity": 2}})
    sc.add(
        "complaint", s, soon, complaint_id="c-1", category="network", severity=2, status="opened"
    )
    s = sc.subscriber({"complaint": {}, "repeated_complaints": {"complaints_day": 2}})
    sc.counts[s] = {"complaint": 2}  # one per complaint opened
    for i, when in enumerate((sc.ago(days=3), soon)):
        sc.add(
            "complaint",
            s,
            when,
            complaint_id=f"c-{i}",
            category="billing",
            severity=2,
            status="opened",
        )
    s = sc.subscriber({"low_balance": {"balance_after": 4.5, "balance_after_lt": 10}})
    sc.add("usage", s, soon, kind="data", charge=1, balance_after=4.5)
    s = sc.subscriber({})  # a healthy balance: nothing
    sc.add("usage", s, soon, kind="data", charge=1, balance_after=50)
    s = sc.subscriber({"service_failure": {"service_code": "VOLTE"}})
    sc.add("usage", s, soon, kind="service_failure", service_code="VOLTE")
    s = sc.subscriber({"competitor_hotline_call": {"counterparty": "10010"}})
    sc.add("usage", s, soon, kind="voice", quantity=120, counterparty="10010")
    # ---- anomaly at window closes (the event "now" closes last month or week)
    # Each history begins a window earlier, part-way: that one is no baseline window.
    s = sc.subscriber({"bill_spike": {"spend_month": 160, "spend_month_baseline": 50}})
    for back, charge in ((5, 10), (4, 50), (3, 60), (2, 40), (1, 160)):
        sc.add("usage", s, sc.month_start(back), kind="data", charge=charge)
    sc.add("usage", s, soon, kind="data", charge=1)
    s = sc.subscriber({"bill_drop": {"spend_month": 30, "spend_month_baseline": 100}})
    for back, charge in ((5, 20), (4, 100), (3, 110), (2, 90), (1, 30)):
        sc.add("usage", s, sc.month_start(back), kind="data", charge=charge)
    sc.add("usage", s, soon, kind="data")
    # Weekly windows over a monthly history may also see falling call volume, by calendar.
    s = sc.subscriber(
        {"bill_drop": {}, "spend_and_call_time_drop": {}}, maybe=("falling_call_volume",)
    )
    for back, charge, seconds in (
        (5, 20, 600),
        (4, 100, 3600),
        (3, 110, 3000),
        (2, 90, 3300),
        (1, 30, 600),
    ):
        sc.add("usage", s, sc.month_start(back), kind="data", charge=charge)
        sc.add(
            "usage", s, sc.month_start(back) + dt.timedelta(hours=1), kind="voice", quantity=seconds
        )
    sc.add("usage", s, soon, kind="data")
    s = sc.subscriber(
        {"falling_call_volume": {"call_seconds_week": 300, "call_seconds_week_baseline": 3600}}
    )
    sc.add("usage", s, sc.week_monday(6), kind="voice", quantity=600)
    for back in (5, 4, 3, 2):
        sc.add("usage", s, sc.week_monday(back), kind="voice", quantity=3600)
    sc.add("usage", s, sc.week_monday(1), kind="voice", quantity=300)
    sc.add("usage", s, soon, kind="data")
    s = sc.subscriber({"falling_call_frequency": {"calls_week": 2}, "falling_call_volume": {}})
    sc.add("usage", s, sc.week_monday(6), kind="voice", quantity=60)
    for back in (5, 4, 3, 2):
        for i in range(12):
            sc.add(
                "usage",
                s,
                sc.week_monday(back) + dt.timedelta(minutes=i),
                kind="voice",
                quantity=60,
            )
    for i in range(2):
        sc.add("usage", s, sc.week_monday(1) + dt.timedelta(minutes=i), kind="voice", quantity=60)
    sc.add("usage", s, soon, kind="data")
    s = sc.subscriber({"incoming_calls_share_high": {"incoming_calls_week_share": 0.9}})
    for i in range(10):
        sc.add(
            "usage",
            s,
            sc.week_monday(1) + dt.timedelta(minutes=i),
            kind="voice",
            quantity=60,
            direction="in" if i < 9 else "out",
        )
    sc.add("usage", s, soon, kind="data")
    s = sc.subscriber({"no_activity": {}})
    sc.add("usage", s, sc.ago(days=8), kind="data")
    # ---- special days (on the profile update, today past 09:00 local)
    today = sc.now.date()
    sc.subscriber(
        {"birthday": {"birthday": today.strftime("%m-%d")}}, birthday=today.strftime("%m-%d")
    )
    sc.subscriber(
        {"join_anniversary": {"years": 5}}, joined_on=today.replace(year=today.year - 5).isoformat()
    )
    sc.subscriber(
        {"contract_expiry_near": {"days_left": 10}},
        contract_end=(today + dt.timedelta(days=10)).isoformat(),
    )
    return sc


def catalog_for(tmp_path: Path, sc: Scenarios) -> Path:
    """The packaged catalog with 45-day ttls, a calendar where today is a holiday and a
    cap of 10 contacts a week. Today in every zone of the scenarios: abroad, the greeting
    goes on the local date there, which is another day at some hours of the run (the
    roamer got none at 01:00 UTC: `holiday_key`)."""
    text = CATALOG.read_text(encoding="utf-8")
    text = re.sub(r"ttl: \w+", "ttl: 45d", text)
    text = text.replace("max_contacts: 3,", "max_contacts: 10,")
    text = text.replace("  lead_days: 30\n", "  lead_days: 30\n  calendar: today.yaml\n")
    (tmp_path / "today.yaml").write_text(holiday_calendar(sc), encoding="utf-8")
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def holiday_key(sc: Scenarios, sub: str) -> str:
    """The test holiday a subscriber is greeted for: today where they are, which abroad is
    another date at some hours of the run (one key a date: a holiday greets once a year)."""
    here = sc.now.date()
    there = sc.now.astimezone(ZoneInfo(sc.abroad.get(sub, sc.zone))).date()
    return "test_day" if there == here else f"test_day_{there:%m%d}"


def holiday_calendar(sc: Scenarios) -> str:
    """The calendar: today in the home zone, and in each trip's zone where that is
    another date."""
    days = {"test_day": sc.now.date()}
    for sub, zone in sc.abroad.items():
        days[holiday_key(sc, sub)] = sc.now.astimezone(ZoneInfo(zone)).date()
    return "holidays:\n" + "".join(
        f"  - key: {key}\n    name: Test Day\n    local_name: 测试日\n    dates: [{day}]\n"
        for key, day in days.items()
    )


async def test_every_default_rule_fires_through_the_real_stack(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    sc = build(dt.datetime.now(dt.UTC))
    for sub, expect in sc.expected.items():
        expect.setdefault("holiday_greeting", {"holiday": holiday_key(sc, sub)})
    port = free_port()
    # Calls go out when due, not held 30 min for the merge window (tests/integration/
    # dispatch covers merging): each rule's task is checked on its own.
    policy = tmp_path / "policy.yaml"
    policy.write_text("merge: {hold_channels: []}\n")
    settings = make_settings(
        metrics_port=port,
        rules=catalog_for(tmp_path, sc),
        idle_after_seconds=1.0,
        dispatch_policy=policy,
    )
    await topics_for(settings)
    worker = start_worker(settings)
    # Profiles first (topics are not ordered with each other): the zone shapes the windows.
    await produce(settings, sc.profiles)
    await wait_for_metric(
        port, "moments_events_total", {"event_type": "profile"}, len(sc.profiles), wait_s=90
    )
    await produce(settings, sc.events)
    wanted = sum(
        sum(sc.counts.get(sub, {}).get(t, 1) for t in expect) for sub, expect in sc.expected.items()
    )
    records = await read_topic(settings, "tasks", count=wanted, wait_s=120, settle=8)
    tasks = values(records)
    got: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task in tasks:
        got.setdefault(task["subscriber_id"], {}).setdefault(task["moment"]["type"], []).append(
            task
        )
    log = worker.log()[-4000:]
    for sub, expect in sc.expected.items():
        found = set(got.get(sub, {}))
        assert set(expect) <= found <= set(expect) | sc.maybe[sub], (sub, sorted(found), log)
        for moment_type, params in expect.items():
            assert len(got[sub][moment_type]) == sc.counts.get(sub, {}).get(moment_type, 1)
            task = got[sub][moment_type][-1]
            for key, value in params.items():
                actual = task["moment"]["params"][key]
                if isinstance(value, int | float):  # money travels as a decimal string
                    actual = float(actual)
                assert actual == value, (moment_type, key, task)
            triggered = dt.datetime.fromisoformat(task["triggered_at"])
            expires = triggered + TTL
            if moment_type in GREETINGS:  # over with its local day, where the subscriber is
                zone = ZoneInfo(sc.abroad.get(sub, sc.zone))
                local = triggered.astimezone(zone).date() + dt.timedelta(days=1)
                expires = dt.datetime(local.year, local.month, local.day, tzinfo=zone)
            assert dt.datetime.fromisoformat(task["expires_at"]) == expires
            assert dt.datetime.fromisoformat(task["deliver_after"]) >= triggered
            assert task["moment"]["family"] in ("first_time", "anomaly", "special_day")
    # Nothing else: every task not of a `maybe` type was expected and counted above (a
    # `maybe` type may fire once per window its calendar gives, so it is not counted).
    certain = [t for t in tasks if t["moment"]["type"] not in sc.maybe[t["subscriber_id"]]]
    assert len(certain) == wanted, log
