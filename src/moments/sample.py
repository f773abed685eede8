"""A small sample stream for `moments run`: a few subscribers touching each moment that exists.

Times are relative to `now`, so the tasks are fresh (not expired) whenever it is played.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from moments.models import EventType

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MERGED = " (merged into the same call)"
"""Note suffix: this moment is one call with the subscriber's earlier one (merge window)."""


@dataclass(frozen=True, slots=True)
class SampleRecord:
    event_type: EventType
    key: bytes | None
    value: bytes | None
    note: str


DAYTIME_ZONES = (
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Europe/Berlin",
    "Europe/London",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Auckland",
)


def daytime_zone(now: dt.datetime) -> str:
    """A zone where it is now between 10:00 and 18:00, so the sample's tasks are not held
    back by quiet hours whenever `moments run` is started."""
    for name in DAYTIME_ZONES:
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 18:
            return name
    return DAYTIME_ZONES[0]  # pragma: no cover - the zones above cover every hour


def sample_stream(now: dt.datetime | None = None) -> list[SampleRecord]:
    """Events in the order they are produced, each with a note of what it should cause.

    The sample subscribers live where it is daytime now (see `daytime_zone`)."""
    base = (now or dt.datetime.now(SHANGHAI)).astimezone(SHANGHAI).replace(microsecond=0)

    def at(minutes: int) -> str:
        return (base - dt.timedelta(minutes=minutes)).isoformat()

    return [
        *_profiles(at, daytime_zone(base)),
        *_usage_moments(at),
        *_roaming_moments(at, base),
        *_complaints(at),
        *_dead_letters(at),
    ]


LI, WANG, ZHAO, CHEN = "13800138001", "13900139002", "13700137003", "13600136004"
Minutes = Callable[[int], str]
"""The sample's clock: the RFC 3339 time so many minutes before now."""


def _event(event_type: EventType, sub: str, note: str, **fields: Any) -> SampleRecord:
    value = orjson.dumps({"subscriber_id": sub, **fields})
    return SampleRecord(event_type, sub.encode(), value, note)


def _profiles(at: Minutes, home: str) -> list[SampleRecord]:
    """The four subscribers' profiles, an hour back, in the daytime zone `home`."""
    return [
        _event(
            EventType.PROFILE,
            LI,
            "profile: tier and manager for the tasks",
            event_id="crm-1",
            occurred_at=at(60),
            region="NJ",
            tier="gold",
            manager_id="m-017",
            birthday="07-14",
            timezone=home,
        ),
        _event(
            EventType.PROFILE,
            WANG,
            "profile",
            event_id="crm-2",
            occurred_at=at(60),
            region="SZ",
            tier="diamond",
            manager_id="m-042",
            timezone=home,
        ),
        _event(
            EventType.PROFILE,
            ZHAO,
            "profile",
            event_id="crm-3",
            occurred_at=at(60),
            region="NJ",
            timezone=home,
        ),
        _event(
            EventType.PROFILE,
            CHEN,
            "profile",
            event_id="crm-4",
            occurred_at=at(60),
            region="SZ",
            timezone=home,
        ),
    ]


def _usage_moments(at: Minutes) -> list[SampleRecord]:
    """A top-up and usage records: first_topup, handset_change, competitor_hotline_call,
    low_balance, service_failure."""
    return [
        _event(
            EventType.TOPUP,
            LI,
            "first top-up through the app -> first_topup",
            event_id="bill-1",
            occurred_at=at(30),
            region="NJ",
            amount="50.00",
            balance_after="62.40",
            channel="app",
        ),
        _event(
            EventType.USAGE,
            ZHAO,
            "a call; the first IMEI seen is the baseline -> nothing",
            event_id="net-1",
            occurred_at=at(25),
            region="NJ",
            kind="voice",
            quantity=180,
            charge="0.30",
            imei="356938035643809",
        ),
        _event(
            EventType.USAGE,
            ZHAO,
            "a new handset -> handset_change",
            event_id="net-3",
            occurred_at=at(24),
            region="NJ",
            kind="data",
            quantity=2_000_000,
            charge="0.10",
            imei="490154203237518",
        ),
        _event(
            EventType.USAGE,
            ZHAO,
            "a call to a competitor's hotline -> competitor_hotline_call",
            event_id="net-4",
            occurred_at=at(23),
            region="NJ",
            kind="voice",
            quantity=240,
            counterparty="10010",
            direction="out",
        ),
        _event(
            EventType.USAGE,
            WANG,
            "balance 4.80 after a charge -> low_balance",
            event_id="net-5",
            occurred_at=at(22),
            region="SZ",
            kind="data",
            quantity=5_000_000,
            charge="1.20",
            balance_after="4.80",
        ),
        _event(
            EventType.USAGE,
            CHEN,
            "VoLTE could not be used -> service_failure",
            event_id="net-6",
            occurred_at=at(21),
            region="SZ",
            kind="service_failure",
            service_code="VOLTE",
        ),
    ]


VISITS = (
    ("JP", "Japan", "Asia/Tokyo"),
    ("TH", "Thailand", "Asia/Bangkok"),
    ("IN", "India", "Asia/Kolkata"),
    ("AE", "the Emirates", "Asia/Dubai"),
    ("DE", "Germany", "Europe/Berlin"),
    ("GB", "Britain", "Europe/London"),
    ("AR", "Argentina", "America/Argentina/Buenos_Aires"),
    ("US", "New York", "America/New_York"),
    ("MX", "Mexico", "America/Mexico_City"),
    ("US", "California", "America/Los_Angeles"),
    ("NZ", "New Zealand", "Pacific/Auckland"),
)
"""Places the sample's travellers may be: quiet hours follow the visited place's clock."""


def daytime_visits(now: dt.datetime) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """Two places of `VISITS` in different countries where it is now between 10:00 and
    18:00, so the sample's roaming welcomes are not held back by quiet hours abroad."""
    day = [v for v in VISITS if 10 <= now.astimezone(ZoneInfo(v[2])).hour < 18]
    first = day[0]
    return first, next(v for v in day if v[0] != first[0])


def _roaming_moments(at: Minutes, now: dt.datetime) -> list[SampleRecord]:
    """Roaming: two first_international_roaming, and three that make nothing (a repeat, a
    duplicate delivery, domestic). The records say where (country and zone), as a
    producer should."""
    (country, name, zone), (country2, name2, zone2) = daytime_visits(now)
    return [
        _event(
            EventType.ROAMING,
            LI,
            f"first roaming in {name} -> first_international_roaming",
            event_id="roam-1",
            occurred_at=at(20),
            region="NJ",
            country=country,
            roaming_type="international",
            timezone=zone,
        ),
        _event(
            EventType.ROAMING,
            LI,
            f"{name} again -> nothing",
            event_id="roam-2",
            occurred_at=at(10),
            region="NJ",
            country=country,
            roaming_type="international",
            timezone=zone,
        ),
        _event(
            EventType.ROAMING,
            LI,
            "same event delivered twice -> nothing",
            event_id="roam-2",
            occurred_at=at(10),
            region="NJ",
            country=country,
            roaming_type="international",
            timezone=zone,
        ),
        _event(
            EventType.ROAMING,
            WANG,
            f"first roaming in {name2} -> first_international_roaming",
            event_id="roam-3",
            occurred_at=at(5),
            region="SZ",
            country=country2,
            roaming_type="international",
            timezone=zone2,
        ),
        _event(
            EventType.ROAMING,
            ZHAO,
            "domestic roaming -> nothing",
            event_id="roam-4",
            occurred_at=at(5),
            region="NJ",
            country="CN",
            roaming_type="domestic",
        ),
    ]


def _complaints(at: Minutes) -> list[SampleRecord]:
    """Two complaints, the second merged into the call of its subscriber's VoLTE failure."""
    return [
        _event(
            EventType.COMPLAINT,
            WANG,
            "a network complaint -> complaint",
            event_id="cs-1",
            occurred_at=at(3),
            region="SZ",
            complaint_id="C-881",
            category="network",
            severity=2,
            status="opened",
        ),
        _event(
            EventType.COMPLAINT,
            CHEN,
            f"a complaint minutes after the VoLTE failure -> complaint{MERGED}",
            event_id="cs-2",
            occurred_at=at(2),
            region="SZ",
            complaint_id="C-882",
            category="network",
            severity=2,
            status="opened",
        ),
    ]


def _dead_letters(at: Minutes) -> list[SampleRecord]:
    """Two records a worker refuses: not JSON, and a top-up without its amount."""
    return [
        SampleRecord(
            EventType.USAGE,
            ZHAO.encode(),
            b'{"event_id": "net-2", "kind": ',
            "not JSON -> dead letter",
        ),
        _event(
            EventType.TOPUP,
            ZHAO,
            "amount missing -> dead letter",
            event_id="bill-2",
            occurred_at=at(1),
            channel="card",
        ),
    ]


def _outcomes() -> list[str]:
    notes = (r.note.rsplit("-> ", 1)[1] for r in sample_stream() if "-> " in r.note)
    return [n for n in notes if n not in ("nothing", "dead letter")]


def expected_moments() -> list[str]:
    """The moment type of each moment the sample should detect, in order."""
    return [n.removesuffix(MERGED) for n in _outcomes()]
