"""The sample stream of `moments run` makes exactly the tasks its notes promise."""

from __future__ import annotations

from dataclasses import replace

from moments.pipeline import run_pipeline, to_records
from moments.sample import expected_moments, sample_stream
from rules.catalog import load_rules


def test_sample_stream_makes_the_noted_tasks_with_the_default_catalog() -> None:
    stream = sample_stream()
    records = to_records((r.event_type, r.value) for r in stream)
    records = [replace(r, key=s.key) for r, s in zip(records, stream, strict=True)]
    result = run_pipeline(records, load_rules())
    assert sorted(t.moment.type for t in result.tasks) == sorted(expected_moments())
    assert len(result.dead_letters) == sum(1 for r in stream if r.note.endswith("dead letter"))
