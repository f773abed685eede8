"""A field written `null` (a serializer that writes every unset field as null: Jackson
without `NON_NULL`, pydantic's `model_dump()`, Go without `omitempty`): a required one is
a dead letter that says it is required and null is no value; an optional one is taken as
left out. A null `subscriber_id` was
told "write the subscriber number as a JSON string ("13800138001"), not a number", and a
null `severity` 'e.g. 1, not "1"'; a null `event_id` or `occurred_at` "Input should be a
valid string", none of which says what was wrong."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType, UsageEvent
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example, json_schemas

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


class TestCharge:
    """A usage `charge` (contract: "yuan, default 0") written null is taken as left out,
    0, as every other optional field of an event takes null: it was the one optional field
    whose null was a dead letter, so a CDR of a serializer writing unset fields as null
    (a data session with no charge) was lost."""

    def test_null_is_no_charge(self) -> None:
        event = _decoded(EventType.USAGE, _event(EventType.USAGE, charge=None))
        assert isinstance(event, UsageEvent)
        assert event.charge == Decimal(0)

    def test_the_schema_takes_it_as_the_worker_does(self) -> None:
        schema = json_schemas()["usage-event.schema.json"]
        assert Draft202012Validator(schema).is_valid(_event(EventType.USAGE, charge=None))

    def test_a_charge_of_the_wrong_type_is_still_told_what_money_is(self) -> None:
        dead = _decoded(EventType.USAGE, _event(EventType.USAGE, charge="1e3"))
        assert isinstance(dead, DeadLetter)
        assert dead.message == (
            'charge: Input should be a JSON number or a decimal string like "49.90" (no '
            "exponent, no thousands separator)"
        )

    def test_a_charge_is_read_as_before(self) -> None:
        event = _decoded(EventType.USAGE, _event(EventType.USAGE, charge=0.1 + 0.2))
        assert isinstance(event, UsageEvent)
        assert event.charge == Decimal("0.3")
