"""The schemas' `timezone` pattern is the form of tzdata's names (`moments.zones.ZONE_PATTERN`),
and the worker's too: `UTC+8`, `CST` or `asia/shanghai` passed the schema (any name-like
text did) and were dead letters on the stream. A name of tzdata's form that tzdata lacks
(`Asia/Beijing`) is still the worker's alone to refuse (docs/producing-events.md, "What
the schemas cannot say")."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType
from moments.records import DeadLetter, RawRecord
from moments.schemas import example
from moments.zones import tzdata_zones

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TYPES = {EventType.ROAMING: "roaming-event", EventType.PROFILE: "profile-event"}


@cache
def validator(event_type: EventType) -> Draft202012Validator:
    text = (SCHEMAS / f"{TYPES[event_type]}.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def with_zone(event_type: EventType, zone: str) -> dict[str, Any]:
    return {**example(EVENT_MODELS[event_type].__name__), "timezone": zone}


def worker_takes(value: dict[str, Any], event_type: EventType) -> bool:
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    return not isinstance(decode(record, event_type), DeadLetter)


@pytest.mark.parametrize("event_type", list(TYPES))
def test_every_zone_of_tzdata_is_taken_by_both(event_type: EventType) -> None:
    refused = [
        zone
        for zone in tzdata_zones()
        if not validator(event_type).is_valid(value := with_zone(event_type, zone))
        or not worker_takes(value, event_type)
    ]
    assert len(tzdata_zones()) > 500
    assert refused == []


NOT_ZONES = [
    "UTC+8",
    "GMT+08:00",
    "+08:00",
    "CST",
    "BST",
    "asia/shanghai",
    "ASIA/SHANGHAI",
    "Beijing",
    "Asia/Shanghai/",
    "Etc/GMT+15",
    "China Standard Time",
]


@pytest.mark.parametrize("zone", NOT_ZONES)
@pytest.mark.parametrize("event_type", list(TYPES))
def test_what_is_no_zone_name_the_schema_refuses_as_the_worker_does(
    event_type: EventType, zone: str
) -> None:
    value = with_zone(event_type, zone)
    assert not worker_takes(value, event_type)
    assert not validator(event_type).is_valid(value)


def test_a_name_of_the_form_tzdata_lacks_is_the_workers_to_refuse() -> None:
    """What the docs say the schema cannot: the list changes with tzdata releases."""
    value = with_zone(EventType.ROAMING, "Asia/Beijing")
    assert validator(EventType.ROAMING).is_valid(value)
    assert not worker_takes(value, EventType.ROAMING)


@pytest.mark.parametrize(
    ("zone", "said"),
    [
        (
            "asia/shanghai",
            "'asia/shanghai' is not an IANA time zone; did you mean 'Asia/Shanghai'?",
        ),
        ("CST", "'CST' is not an IANA time zone; write one such as Asia/Shanghai or Europe/London"),
        (
            "UTC+8",
            "'UTC+8' is a UTC offset, not an IANA time zone; write the place's zone name "
            "(Asia/Shanghai for China, Asia/Kolkata for India), or 'Etc/GMT-8' for a fixed "
            "UTC+08:00 (tzdata's Etc zones have the sign inverted)",
        ),
    ],
)
def test_the_pattern_refusal_names_the_fix_not_the_pattern(zone: str, said: str) -> None:
    value = with_zone(EventType.PROFILE, zone)
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    dead = decode(record, EventType.PROFILE)
    assert isinstance(dead, DeadLetter)
    assert dead.message == f"timezone: {said}"
