"""Event times of the years 1970-9898 are taken, and the times the detector writes (a
task's, a withdrawal's) of 1970-9998: a time of the year 2100 or later was refused (the
pattern ended at 2099), so a backtest of such history refused every event, and a task of
today whose `ttl` ran past 2099 was published with an expiry its own schema refused. The
years 1 and 9999 stay refused: they broke the local-day arithmetic."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from moments.eventspan import EVENT_SPAN, EVENT_YEARS, WRITTEN_YEARS
from moments.models import TIME_PATTERN, WRITTEN_TIME_PATTERN, EventType, TopUpEvent
from moments.schemas import example
from rules.durations import MAX_DAYS

from .rules.helpers import WELCOME, at, backtest_of, ev

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
CHECKED_YEARS = sorted({*range(1, 10000, 97), *range(1960, 2110), *range(9880, 10000)})
"""Every year near the bounds, and a spread of the others."""


def _days(year: int) -> list[str]:
    """Some of the year's days, and some that do not exist."""
    return [f"{year:04d}-{md}" for md in ("01-01", "02-28", "02-29", "02-30", "12-31", "13-01")]


def _exists(day: str) -> bool:
    year, month, date = map(int, day.split("-"))
    return month <= 12 and date <= calendar.monthrange(year, month)[1]


@pytest.mark.parametrize(
    ("pattern", "years"), [(TIME_PATTERN, EVENT_YEARS), (WRITTEN_TIME_PATTERN, WRITTEN_YEARS)]
)
def test_the_patterns_take_the_real_days_of_their_years_and_no_other(
    pattern: str, years: tuple[int, int]
) -> None:
    compiled = re.compile(pattern)
    for year in CHECKED_YEARS:
        for day in _days(year):
            want = years[0] <= year <= years[1] and _exists(day)
            assert bool(compiled.match(f"{day}T10:00:00+08:00")) == want, day


def test_a_tasks_times_fall_in_the_written_years() -> None:
    """The latest event time plus the longest duration a rule adds (a task's `ttl`)."""
    assert EVENT_SPAN[1] + dt.timedelta(days=MAX_DAYS) < dt.datetime(
        WRITTEN_YEARS[1] + 1, 1, 1, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("when", "taken"),
    [
        ("2150-03-01T10:00:00+08:00", True),
        ("9898-12-31T23:59:59-23:59", True),
        ("9899-01-01T00:00:00+14:00", False),
        ("1969-12-31T23:59:59Z", False),
    ],
)
def test_the_model_and_the_schema_agree_on_an_event_time(when: str, taken: bool) -> None:
    value = {
        "event_id": "t-1",
        "subscriber_id": "13800138001",
        "occurred_at": when,
        "amount": 50,
        "channel": "app",
    }
    schema = json.loads((SCHEMAS_DIR / "topup-event.schema.json").read_text("utf-8"))
    errors = list(Draft202012Validator(schema).iter_errors(value))
    assert (not errors) == taken, errors
    try:
        TopUpEvent.model_validate_json(json.dumps(value))
    except ValueError:
        assert not taken
    else:
        assert taken


def test_a_backtest_of_history_in_2150_makes_its_task_and_the_schema_takes_it() -> None:
    arrival = ev(EventType.ROAMING, at("2150-03-01"), country="JP", roaming_type="international")
    result = backtest_of("rules:" + WELCOME, [arrival], until="2150-03-03T00:00:00+08:00")
    assert [t["moment"]["type"] for t in result.tasks()] == ["roaming_welcome"]
    schema = json.loads((SCHEMAS_DIR / "service-task.schema.json").read_text("utf-8"))
    task = result.tasks()[0]
    assert task["triggered_at"].startswith("2150-03-01")
    assert not list(Draft202012Validator(schema).iter_errors(task))


def test_a_task_of_today_expiring_past_2099_passes_its_schema() -> None:
    """A rule's `ttl` of 80 years: its expiry failed the published pattern."""
    task = example("ServiceTask")
    task["expires_at"] = "2106-12-07T02:00:00Z"
    schema = json.loads((SCHEMAS_DIR / "service-task.schema.json").read_text("utf-8"))
    assert not list(Draft202012Validator(schema).iter_errors(task))
