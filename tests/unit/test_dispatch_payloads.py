"""sinks.dispatch.Payloads: a task's JSON made once, and sent only when the ledger lacks it."""

from __future__ import annotations

import datetime as dt

from moments.models import Channel, Deferral, Family, Moment, ServiceTask
from sinks.dispatch import Payloads, task_bytes

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)


def a_task() -> ServiceTask:
    return ServiceTask(
        task_id="t1",
        subscriber_id="13800138001",
        moment=Moment(
            family=Family.FIRST_TIME, type="m", rule_id="m", rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.SMS,
        action="act",
        triggered_at=NOW,
        created_at=NOW,
        deliver_after=NOW,
        expires_at=NOW + dt.timedelta(days=1),
        evidence=["e1"],
    )


def test_the_same_object_is_serialised_once_and_a_copy_on_its_own() -> None:
    payloads = Payloads()
    task = a_task()
    first = payloads.of(task)
    assert first == task_bytes(task)
    assert payloads.of(task) is first  # cached by identity
    later = task.model_copy(update={"deferred": Deferral(reason="capacity", until=NOW)})
    assert payloads.of(later) == task_bytes(later) != first  # same id, other bytes


def test_only_the_object_the_ledger_holds_goes_as_empty() -> None:
    payloads = Payloads()
    task = a_task()
    assert payloads.unless_stored(task) == task_bytes(task)
    payloads.stored(task)
    assert payloads.unless_stored(task) == b""
    merged = task.model_copy(update={"evidence": ["e1", "e2"]})
    assert payloads.unless_stored(merged) == task_bytes(merged)  # changed: sent in full
    payloads.clear()
    assert payloads.unless_stored(task) == task_bytes(task)
