"""A profile update older than the subscriber's latest event by more than the lateness is
applied without its rules (their time is past), and dispatch still learns of it."""

from __future__ import annotations

from moments.engine import Detector
from moments.models import EventType, ProfileEvent
from moments.pipeline import to_records
from moments.store import DictStateStore
from tests.unit.rules.helpers import NO_GATES, WELCOME, at, ev, rules_from

SUB = "13800138001"


def test_a_late_profile_update_is_a_fact_for_dispatch() -> None:
    """It changed the state but was no fact: a task held while the line was suspended was
    never released by the `status: active` that CRM sent late, and expired (code review)."""
    detector = Detector(rules_from(NO_GATES + "rules:" + WELCOME), {t.value: t for t in EventType})
    records = to_records(
        [
            ev(EventType.USAGE, at("2026-12-01", "14:00"), SUB, kind="data", quantity=10),
            ev(EventType.PROFILE, at("2026-12-01", "12:00"), SUB, status="active"),
        ]
    )
    batch = detector.process(records, DictStateStore().load, None)
    state = batch.changes[SUB].state
    assert state is not None
    assert state.profile["status"] == "active"
    assert [(type(f), f.subscriber_id) for f in batch.facts] == [(ProfileEvent, SUB)]
