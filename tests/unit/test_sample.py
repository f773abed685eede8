"""The sample stream of `moments run` makes exactly the tasks its notes promise."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from moments.pipeline import run_pipeline, to_records
from moments.sample import expected_moments, sample_stream
from rules.catalog import load_rules


@pytest.mark.parametrize("hour", range(0, 24, 3))
def test_sample_stream_makes_the_noted_tasks_at_any_hour(hour: int) -> None:
    """Whenever `moments run` starts, no task is held back by quiet hours or the cap."""
    now = dt.datetime(2026, 11, 23, hour, 17, tzinfo=dt.UTC)
    stream = sample_stream(now)
    records = to_records((r.event_type, r.value) for r in stream)
    records = [replace(r, key=s.key) for r, s in zip(records, stream, strict=True)]
    result = run_pipeline(records, load_rules())
    assert sorted(t.moment.type for t in result.tasks) == sorted(expected_moments())
    assert [t.deferred for t in result.tasks] == [None] * len(result.tasks)
    assert len(result.dead_letters) == sum(1 for r in stream if r.note.endswith("dead letter"))
