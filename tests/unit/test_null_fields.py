"""A field written `null` (a serializer that writes every unset field as null: Jackson
without `NON_NULL`, pydantic's `model_dump()`, Go without `omitempty`): a required one is
a dead letter that says it is required and null is no value. A null `subscriber_id` was
told "write the subscriber number as a JSON string ("13800138001"), not a number", and a
null `severity` 'e.g. 1, not "1"'; a null `event_id` or `occurred_at` "Input should be a
valid string", none of which says what was wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

SUB = "13800138001"
REQUIRED = "null is no value, and the field is required: write it"


def _decoded(event_type: EventType, value: dict[str, Any]) -> Any:
    record = RawRecord("t", 0, 0, SUB.encode(), json.dumps(value).encode())
    return decode(record, event_type)


def _event(event_type: EventType, **change: Any) -> dict[str, Any]:
    value: dict[str, Any] = example(EVENT_MODELS[event_type].__name__)
    return {**value, "subscriber_id": SUB, **change}


REQUIRED_FIELDS = [
    (event_type, name)
    for event_type, model in EVENT_MODELS.items()
    for name, info in model.model_fields.items()
    if info.is_required()
]


@pytest.mark.parametrize(("event_type", "field"), REQUIRED_FIELDS)
def test_a_required_field_written_null_is_told_it_is_required(
    event_type: EventType, field: str
) -> None:
    dead = _decoded(event_type, _event(event_type, **{field: None}))
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    assert dead.message.startswith(f"{field}: {REQUIRED}"), dead.message
    assert "not a number" not in dead.message


@pytest.mark.parametrize("field", ["task_id", "subscriber_id", "status", "occurred_at"])
def test_an_outcome_field_written_null_is_told_it_is_required(field: str) -> None:
    value = {**example("TaskOutcome"), "subscriber_id": SUB, field: None}
    record = RawRecord("moments.task-outcomes", 0, 0, SUB.encode(), json.dumps(value).encode())
    dead = decode_outcome(record)
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    assert dead.message.startswith(f"{field}: {REQUIRED}"), dead.message


def test_a_subscriber_id_of_another_type_is_not_told_it_is_a_number() -> None:
    dead = _decoded(EventType.TOPUP, _event(EventType.TOPUP, subscriber_id=True))
    assert isinstance(dead, DeadLetter)
    assert dead.message == (
        'subscriber_id: write the subscriber number as a JSON string ("13800138001")'
    )


def test_a_subscriber_id_written_as_a_number_is_still_told_so() -> None:
    dead = _decoded(EventType.TOPUP, _event(EventType.TOPUP, subscriber_id=int(SUB)))
    assert isinstance(dead, DeadLetter)
    assert dead.message.endswith("not a number")
