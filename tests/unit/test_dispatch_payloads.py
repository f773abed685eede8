"""sinks.dispatch.Payloads: a task's JSON made once, and sent only when the ledger lacks it;
`Decoded`: stored payloads read back once."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from moments.models import Channel, Deferral, Family, Moment, ServiceTask
from sinks.dispatch import Decoded, Payloads, TaskSink, task_bytes
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy

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


def test_a_stored_payload_is_read_back_once_and_its_json_made_once() -> None:
    decoded = Decoded(size=2)
    stored = task_bytes(a_task())
    task = decoded.task(stored)
    assert task == ServiceTask.model_validate_json(stored)
    assert decoded.task(bytes(stored)) is task  # equal bytes, not the same object
    assert decoded.own(task) == stored
    assert decoded.own(task) is decoded.own(task)
    payloads = Payloads(decoded)
    assert payloads.of(task) is decoded.own(task)
    other = task.model_copy(update={"priority": 1})
    assert decoded.own(other) == task_bytes(other)  # not kept: made each time


def test_read_back_tasks_are_bounded_oldest_first() -> None:
    decoded = Decoded(size=2)
    payloads = [task_bytes(a_task().model_copy(update={"task_id": f"t{i}"})) for i in range(3)]
    first, second, _ = (decoded.task(p) for p in payloads)
    assert decoded.task(payloads[1]) is second
    assert decoded.task(payloads[0]) is not first  # evicted by the third, read again
    assert decoded.task(payloads[0]) == first


def test_an_unknown_payload_fails_as_the_model_does() -> None:
    with pytest.raises(ValidationError):
        Decoded().task(b'{"task_id": "t1"}')


def test_a_group_holding_the_same_payload_twice_reads_back_a_task_apiece() -> None:
    """Moments are told apart by identity (`_fit`, `_kept`): one object served twice in a
    group would be one moment, even when the bytes were read back (and kept) before."""
    sink = TaskSink(None, "tasks", memory_stores(), Metrics(), DispatchPolicy())  # type: ignore[arg-type]
    carrier = task_bytes(a_task())
    member = task_bytes(a_task().model_copy(update={"task_id": "t2", "moment_id": "t2"}))
    once = sink._candidate("t1", [carrier, member])
    assert once is not None
    twice = sink._candidate("t1", [carrier, member, member])
    assert twice is not None
    assert len({id(t) for t in twice.tasks}) == 3
    assert [t.task_id for t in twice.tasks] == ["t1", "t2", "t2"]
    again = sink._candidate("t1", [carrier, member])  # the cache still serves the pair
    assert again is not None
    assert [id(t) for t in again.tasks] == [id(t) for t in once.tasks]
