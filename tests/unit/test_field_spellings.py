"""A required field written in another spelling (`eventId`, `SubscriberId`, `occurred-at`:
a serializer's camelCase or PascalCase naming, Jackson's and .NET's default) is a dead
letter that names the spelling found and the one to write. It was told "Field required"
for each, as if the value did not hold it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moments.decoding import decode
from moments.models import EventType
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason

SUB = "13800138001"


NOTE = " (field names are lowercase with underscores, as in schemas/)"


def _said(spelled: str, field: str) -> str:
    return f"{field}: Field required; the value names `{spelled}`: write `{field}`"


def _refused(event_type: EventType, value: dict[str, Any]) -> str:
    record = RawRecord("t", 0, 0, SUB.encode(), json.dumps(value).encode())
    dead = decode(record, event_type)
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    return dead.message


@pytest.mark.parametrize(
    ("event_id", "subscriber_id", "occurred_at"),
    [
        ("eventId", "subscriberId", "occurredAt"),
        ("EventId", "SubscriberId", "OccurredAt"),
        ("event-id", "SUBSCRIBER_ID", "occurred_At"),
    ],
)
def test_the_identity_fields_in_another_spelling_are_named(
    event_id: str, subscriber_id: str, occurred_at: str
) -> None:
    value = {
        event_id: "e1",
        subscriber_id: SUB,
        occurred_at: "2026-11-22T09:30:00+08:00",
        "amount": "50",
        "channel": "app",
    }
    assert (
        _refused(EventType.TOPUP, value)
        == "; ".join(
            [
                _said(event_id, "event_id"),
                _said(subscriber_id, "subscriber_id"),
                _said(occurred_at, "occurred_at"),
            ]
        )
        + NOTE
    )


def test_a_type_field_in_another_spelling_is_named() -> None:
    value = {
        "event_id": "e1",
        "subscriber_id": SUB,
        "occurred_at": "2026-11-22T09:30:00+08:00",
        "country": "JP",
        "roamingType": "international",
    }
    assert _refused(EventType.ROAMING, value) == _said("roamingType", "roaming_type") + NOTE


def test_a_field_missing_in_every_spelling_is_told_as_before() -> None:
    value = {"event_id": "e1", "subscriber_id": SUB, "occurred_at": "2026-11-22T09:30:00+08:00"}
    assert _refused(EventType.USAGE, value) == (
        "kind: Field required (a usage event must have kind: write it; each type's fields are "
        "in docs/producing-events.md and schemas/usage-event.schema.json)"
    )


def test_a_required_field_left_out_names_the_fix() -> None:
    """It read "amount: Field required; channel: Field required", with no fix: which
    fields, that this event type needs them, and where each type's fields are listed."""
    value = {"event_id": "e1", "subscriber_id": SUB, "occurred_at": "2026-11-22T09:30:00+08:00"}
    said = _refused(EventType.TOPUP, value)
    assert said.startswith("amount: Field required; channel: Field required (a topup event ")
    assert said.endswith(
        "must have amount, channel: write them; each type's fields are in "
        "docs/producing-events.md and schemas/topup-event.schema.json)"
    )


def test_an_outcome_in_another_spelling_is_named() -> None:
    value = {
        "taskId": "7035207ab92326f1cc821b81440cfc17",
        "subscriber_id": SUB,
        "status": "accepted",
        "occurred_at": "2026-11-22T09:30:00+08:00",
    }
    record = RawRecord("moments.task-outcomes", 0, 0, SUB.encode(), json.dumps(value).encode())
    dead = decode_outcome(record)
    assert isinstance(dead, DeadLetter)
    assert dead.message == _said("taskId", "task_id") + NOTE


def test_an_outcome_of_every_field_in_another_spelling_is_told_each_whole() -> None:
    """The four fields of a camelCase outcome (a Java dispatch consumer's) are each named,
    the note said once: with it at each, the message was cut at 500 characters in the
    middle of the fourth."""
    value = {
        "taskId": "7035207ab92326f1cc821b81440cfc17",
        "subscriberId": SUB,
        "Status": "accepted",
        "occurredAt": "2026-11-22T09:30:00+08:00",
    }
    record = RawRecord("moments.task-outcomes", 0, 0, SUB.encode(), json.dumps(value).encode())
    dead = decode_outcome(record)
    assert isinstance(dead, DeadLetter)
    assert (
        dead.message
        == "; ".join(
            [
                _said("taskId", "task_id"),
                _said("subscriberId", "subscriber_id"),
                _said("Status", "status"),
                _said("occurredAt", "occurred_at"),
            ]
        )
        + NOTE
    )
