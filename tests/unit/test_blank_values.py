"""A field that is no text (a number, an enum, a zone, an IMEI) written blank, `""` or
spaces only (an SQL or CSV export's empty cell, a padded `CHAR` column): a dead letter
that says a blank is no value and what to do, leave an optional field out (or null) or
write a required one. It was told the type's own words, a usage record with `"imei": ""`
"write the IMEI as 14 to 16 digits", `"direction": ""` "Input should be 'in' or 'out'",
`"quantity": ""` 'write a JSON number, not text (e.g. 1000, not "1000")', a roaming
`"timezone": ""` "'' is not an IANA time zone": none says the record may leave it out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

SUB = "13800138001"
OPTIONAL = '"" (or spaces only) is no value: leave the field out (or null) when there is none'
REQUIRED = '"" (or spaces only) is no value, and the field is required: write it'


def _refused(event_type: EventType, field: str, blank: str) -> str:
    value: dict[str, Any] = {
        **example(EVENT_MODELS[event_type].__name__),
        "subscriber_id": SUB,
        field: blank,
    }
    record = RawRecord("t", 0, 0, SUB.encode(), json.dumps(value).encode())
    dead = decode(record, event_type)
    assert isinstance(dead, DeadLetter), (field, dead)
    assert dead.reason is RejectReason.INVALID_EVENT
    return dead.message


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        (EventType.USAGE, "imei"),
        (EventType.USAGE, "direction"),
        (EventType.USAGE, "quantity"),
        (EventType.USAGE, "balance_after"),
        (EventType.USAGE, "charge"),
        (EventType.TOPUP, "balance_after"),
        (EventType.ROAMING, "timezone"),
        (EventType.ROAMING, "utc_offset_minutes"),
        (EventType.PROFILE, "status"),
        (EventType.PROFILE, "star_level"),
    ],
)
def test_an_optional_field_written_blank_is_told_to_leave_it_out(
    event_type: EventType, field: str, blank: str
) -> None:
    assert _refused(event_type, field, blank) == f"{field}: {OPTIONAL}"


@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        (EventType.TOPUP, "amount"),
        (EventType.ROAMING, "country"),
        (EventType.ROAMING, "roaming_type"),
        (EventType.COMPLAINT, "severity"),
        (EventType.COMPLAINT, "status"),
        (EventType.USAGE, "kind"),
        (EventType.USAGE, "occurred_at"),
    ],
)
def test_a_required_field_written_blank_is_told_to_write_it(
    event_type: EventType, field: str
) -> None:
    assert _refused(event_type, field, "") == f"{field}: {REQUIRED}"


def test_a_required_id_written_blank_keeps_its_own_words() -> None:
    """An id of spaces has words of its own (it would be one id for every record)."""
    assert "an id of spaces is one id for every record" in _refused(
        EventType.TOPUP, "event_id", "  "
    )


def test_a_value_that_is_not_blank_keeps_the_types_words() -> None:
    message = _refused(EventType.USAGE, "imei", "35-693803-564380-9")
    assert (
        message
        == "imei: write the IMEI as 14 to 16 digits, no spaces or dashes (e.g. 356938035643809)"
    )
