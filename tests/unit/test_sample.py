"""The sample stream of `moments run` makes exactly the tasks its notes promise."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from moments.pipeline import run_pipeline, to_records
from moments.sample import daytime_visits, expected_moments, sample_stream

from .catalogs import default_rules


@pytest.mark.parametrize("hour", range(0, 24, 3))
def test_sample_stream_makes_the_noted_tasks_at_any_hour(hour: int) -> None:
    """Whenever `moments run` starts, no task is held back by quiet hours or the cap."""
    now = dt.datetime(2026, 11, 23, hour, 17, tzinfo=dt.UTC)
    stream = sample_stream(now)
    records = to_records((r.event_type, r.value) for r in stream)
    records = [replace(r, key=s.key) for r, s in zip(records, stream, strict=True)]
    result = run_pipeline(records, default_rules())
    assert sorted(t.moment.type for t in result.tasks) == sorted(expected_moments())
    assert [t.deferred for t in result.tasks] == [None] * len(result.tasks)
    assert len(result.dead_letters) == sum(1 for r in stream if r.note.endswith("dead letter"))


def test_two_countries_are_in_daytime_whenever_the_sample_runs() -> None:
    """The sample's travellers' welcomes must not wait for the morning abroad (quiet hours
    follow the visited place's clock), at any half hour of any month."""
    for month in range(1, 13):
        for minutes in range(0, 24 * 60, 30):
            now = dt.datetime(2026, month, 15, tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)
            first, second = daytime_visits(now)
            assert first[0] != second[0]
            for _, _, zone in (first, second):
                assert 10 <= now.astimezone(ZoneInfo(zone)).hour < 18
