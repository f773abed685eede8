"""An event that names a field saying who, when or which event twice is a dead letter
(`duplicate_key`): the JSON parsers keep the last of equal keys, so a producer's template
bug or two events run together was taken, silently, as the last subscriber's event."""

from __future__ import annotations

import pytest

from moments.decoding import IDENTITY_FIELDS, decode, duplicated_field
from moments.models import ComplaintEvent, EventType, TopUpEvent
from moments.records import DeadLetter, RawRecord, RejectReason

FIRST, SECOND = "13800138000", "13900139000"
TOPUP = (
    '"event_id": "t1", "subscriber_id": "13800138000", '
    '"occurred_at": "2026-12-05T13:10:00+08:00", "amount": 50, "channel": "app"'
)


def _decode(members: str, key: str = SECOND, event_type: EventType = EventType.TOPUP) -> object:
    value = ("{" + members + "}").encode()
    return decode(RawRecord("telecom.topup", 0, 3, key.encode(), value), event_type)


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (f', "subscriber_id": "{SECOND}"', "subscriber_id"),
        (', "occurred_at": "2026-12-06T08:00:00+08:00"', "occurred_at"),
        (', "event_id": "t2"', "event_id"),
        (f',"subscriber_id" :"{SECOND}"', "subscriber_id"),  # other spacing
    ],
)
def test_an_identity_field_twice_is_a_dead_letter_naming_it_and_the_fix(
    extra: str, name: str
) -> None:
    key = SECOND if name == "subscriber_id" else FIRST  # keyed as the last one: it was taken
    result = _decode(TOPUP + extra, key)
    assert isinstance(result, DeadLetter), result
    assert result.reason is RejectReason.DUPLICATE_KEY
    assert result.error_class == "DuplicateKey"
    assert result.message.startswith(f'"{name}" appears twice in the event')
    assert "send it with each field once" in result.message
    assert SECOND not in result.message  # names the field, not its values


def test_two_events_merged_into_one_object_are_refused_not_read_as_the_second() -> None:
    second = TOPUP.replace(FIRST, SECOND).replace('"t1"', '"t2"')
    result = _decode(TOPUP + ", " + second)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.DUPLICATE_KEY


def test_a_complaints_ticket_id_twice_is_refused() -> None:
    members = (
        '"event_id": "c1", "subscriber_id": "13800138000", "occurred_at": '
        '"2026-12-05T13:10:00+08:00", "complaint_id": "T-1", "category": "network", '
        '"severity": 1, "status": "opened", "complaint_id": "T-2"'
    )
    result = _decode(members, FIRST, EventType.COMPLAINT)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.DUPLICATE_KEY
    assert result.message.startswith('"complaint_id" appears twice')
    assert isinstance(
        _decode(members[: members.rindex(",")], FIRST, EventType.COMPLAINT), ComplaintEvent
    )


@pytest.mark.parametrize(
    "extra",
    [
        ', "note": "subscriber_id"',  # a name as a string value
        ', "note": "\\"subscriber_id\\" was \\"event_id\\""',  # inside a string, escaped
        ', "origin": {"subscriber_id": "13900139000", "event_id": "x"}',  # a nested object
        ', "items": [{"occurred_at": 1}, {"occurred_at": 2}]',
        ', "trace": "a", "trace": "b"',  # an unknown extra field twice: kept out of the way
    ],
)
def test_a_name_elsewhere_than_as_a_top_level_key_is_no_duplicate(extra: str) -> None:
    result = _decode(TOPUP + extra, FIRST)
    assert isinstance(result, TopUpEvent), result
    assert result.subscriber_id == FIRST


def test_not_json_is_still_invalid_json() -> None:
    result = _decode(TOPUP + ', "subscriber_id": ', FIRST)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.INVALID_JSON


def test_every_event_type_checks_who_when_and_which() -> None:
    for event_type in EventType:
        assert {"subscriber_id", "occurred_at", "event_id"} <= set(IDENTITY_FIELDS[event_type])
        value = b'{"subscriber_id": "1", "subscriber_id": "2"}'
        assert duplicated_field(value, event_type) == "subscriber_id"
        assert duplicated_field(b'["subscriber_id", "subscriber_id"]', event_type) is None
