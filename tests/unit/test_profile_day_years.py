"""A profile's days are held to years a customer's days can be in, as event times are held
to theirs: `joined_on` and `contract_end` to the event years (1970-9898), a birthday's year,
when written, to 1901-9898. A database's empty date (`0001-01-01`, .NET's and Java's least
day; `1900-01-01`, SQL Server's and Excel's day 0; `9999-12-31`, "no end") was taken as a
day: the catalog greeted "2026 years with us since 0001-01-01", a birthday of 0001-01-01
every 1 January, and a `joined_on` of 9999 scored the churn risk of a new line. A year 0
(`0000-01-01`) passed the schema and was a dead letter naming no fix."""

from __future__ import annotations

import calendar
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from moments.decoding import decode
from moments.eventspan import BIRTH_YEARS, EVENT_YEARS
from moments.models import BIRTHDAY_PATTERN, PROFILE_DAY_PATTERN, EventType, ProfileEvent
from moments.records import DeadLetter, RawRecord, RejectReason

from .rules.helpers import BIRTHDAY, at, backtest_of, ev

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "profile-event.schema.json").read_text(
        "utf-8"
    )
)
CHECKED_YEARS = sorted({0, *range(1, 10000, 97), *range(1895, 1975), *range(9890, 10000)})
"""Every year near the bounds, and a spread of the others."""
EMPTY_DATES = ("0000-01-01", "0001-01-01", "1900-01-01", "9999-12-31")
EPOCH = "1970-01-01"
"""Unix time 0's day: a zero an upstream system wrote for none."""


def _days(year: int) -> list[str]:
    """Some of the year's days, and some that do not exist."""
    return [f"{year:04d}-{md}" for md in ("01-01", "02-28", "02-29", "02-30", "12-31", "13-01")]


def _exists(day: str) -> bool:
    year, month, date = map(int, day.split("-"))
    return month <= 12 and date <= calendar.monthrange(year, month)[1]


def profile(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "p-1",
        "subscriber_id": "13800138001",
        "occurred_at": "2026-12-07T10:00:00+08:00",
        **fields,
    }


def reason(**fields: Any) -> str:
    value = profile(**fields)
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    dead = decode(record, EventType.PROFILE)
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    return dead.message


def taken(**fields: Any) -> bool:
    """Whether the worker takes the profile update, asserting the schema says the same."""
    try:
        ProfileEvent.model_validate_json(json.dumps(profile(**fields)))
    except ValidationError:
        model = False
    else:
        model = True
    schema = not list(Draft202012Validator(SCHEMA).iter_errors(profile(**fields)))
    assert model == schema, fields
    return model


def test_the_day_pattern_takes_the_real_days_of_the_event_years_and_no_other() -> None:
    compiled = re.compile(PROFILE_DAY_PATTERN)
    for year in CHECKED_YEARS:
        for day in _days(year):
            want = EVENT_YEARS[0] <= year <= EVENT_YEARS[1] and _exists(day) and day != EPOCH
            assert bool(compiled.match(day)) == want, day


def test_the_birthday_pattern_takes_a_month_day_or_a_real_day_of_the_birth_years() -> None:
    compiled = re.compile(BIRTHDAY_PATTERN)
    for year in CHECKED_YEARS:
        for day in _days(year):
            want = BIRTH_YEARS[0] <= year <= BIRTH_YEARS[1] and _exists(day) and day != EPOCH
            assert bool(compiled.match(day)) == want, day
    assert all(compiled.match(md) for md in ("01-01", "02-29", "12-31"))
    assert not any(compiled.match(md) for md in ("02-30", "13-01", "00-10"))


@pytest.mark.parametrize("field", ["joined_on", "contract_end"])
@pytest.mark.parametrize("day", [*EMPTY_DATES, "1969-12-31", "9899-01-01"])
def test_a_day_outside_the_event_years_is_refused_naming_them(field: str, day: str) -> None:
    assert not taken(**{field: day})
    said = reason(**{field: day})
    assert said.startswith(f"{field}: a day of 1970-9898, the years of event times")
    assert 'or "" to clear it' in said
    assert said == reason(**{field: "1969-12-31"})  # the value is not quoted


@pytest.mark.parametrize("field", ["joined_on", "contract_end"])
@pytest.mark.parametrize("day", ["1970-01-02", "2026-12-07", "9898-12-31", "9896-02-29"])
def test_a_day_of_the_event_years_is_taken(field: str, day: str) -> None:
    assert taken(**{field: day})


@pytest.mark.parametrize("day", [*EMPTY_DATES, "0000-02-29", "1900-02-28", "9899-12-31"])
def test_a_birthday_of_a_year_outside_the_birth_years_is_refused_naming_them(day: str) -> None:
    assert not taken(birthday=day)
    said = reason(birthday=day)
    assert said.startswith("birthday: a birthday's year, when written, is of 1901-9898")
    assert "MM-DD" in said
    assert said == reason(birthday="1900-02-28")  # the value is not quoted


@pytest.mark.parametrize("field", ["joined_on", "contract_end", "birthday"])
def test_the_epoch_day_is_refused_naming_the_field_and_the_fix(field: str) -> None:
    """`1970-01-01`, Unix time 0 (a zero leaked from an upstream system for a date it did
    not have), was taken as a day: the line joined in 1970, a contract that ended then,
    a birthday greeted every 1 January."""
    assert not taken(**{field: EPOCH})
    said = reason(**{field: EPOCH})
    assert said.startswith(f"{field}: 1970-01-01 is the day of Unix time 0"), said
    assert 'or "" to clear it' in said
    if field == "birthday":
        assert "written 01-01" in said
    assert taken(**{field: "1970-01-02"})


@pytest.mark.parametrize(
    ("day", "kept"),
    [("1901-01-01", "01-01"), ("1950-05-17", "05-17"), ("05-17", "05-17"), ("02-29", "02-29")],
)
def test_a_birthday_of_the_birth_years_or_without_one_is_taken(day: str, kept: str) -> None:
    assert taken(birthday=day)
    assert ProfileEvent.model_validate(profile(birthday=day)).birthday == kept


def test_a_backtest_greets_no_empty_date_and_says_why() -> None:
    """`0001-01-01` as a birthday was greeted on 1 January, and as the day joined made
    the anniversary of 2026 years; both are refused, with the reason the backtest shows."""
    rules = "rules:" + BIRTHDAY + ANNIVERSARY
    events = [
        ev(EventType.PROFILE, at("2026-12-30"), birthday="0001-01-01", joined_on="0001-01-01"),
        ev(EventType.PROFILE, at("2026-12-30"), sub="13800138002", birthday="01-01"),
    ]
    result = backtest_of(rules, events, until="2027-01-02T00:00:00+08:00")
    assert [(t["subscriber_id"], t["moment"]["type"]) for t in result.tasks()] == [
        ("13800138002", "birthday")
    ]
    assert result.dead_letters == {"invalid_event": 1}


ANNIVERSARY = """
  - id: join_anniversary
    description: Anniversary of joining
    on: [profile]
    evaluate: special_day
    condition: {occasion: join_anniversary}
    task: {family: special_day, type: join_anniversary, channel: sms, priority: 4,
           action: loyalty_gift, ttl: 12h, description: "{years} years with us"}
"""
