"""A profile's `opt_out` or `quiet_hours` written as text, not a JSON list (`"sms"`, a
CRM's comma-separated column `"sms,outbound_call"`, `"22:00-08:00"`): a dead letter that
names the form to write, a JSON list with an example. It was told "Input should be a valid
array", and the update (the opt-out in it) was lost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moments.decoding import decode
from moments.models import EventType
from moments.records import DeadLetter, RawRecord, RejectReason

SUB = "13800138001"


def _refused(**fields: Any) -> str:
    value = {"event_id": "p1", "subscriber_id": SUB, "occurred_at": "2026-11-22T09:30:00+08:00"}
    record = RawRecord("t", 0, 0, SUB.encode(), json.dumps({**value, **fields}).encode())
    dead = decode(record, EventType.PROFILE)
    assert isinstance(dead, DeadLetter)
    assert dead.reason is RejectReason.INVALID_EVENT
    return dead.message


@pytest.mark.parametrize("text", ["sms", "sms,outbound_call", "", "  "])
def test_an_opt_out_as_text_is_told_to_write_a_list(text: str) -> None:
    assert _refused(opt_out=text) == (
        'opt_out: write a JSON list, e.g. ["sms", "outbound_call"] (one channel: ["sms"]; '
        "none: []; in a CSV cell too, the JSON list as it is), not text"
    )


@pytest.mark.parametrize("text", ["22:00-08:00", ""])
def test_quiet_hours_as_text_are_told_to_write_a_list(text: str) -> None:
    """A blank one too: its none is [], not the field left out (that keeps the windows)."""
    assert _refused(quiet_hours=text) == (
        'quiet_hours: write a JSON list, e.g. ["22:00-08:00"] (one window too; none: []; '
        "in a CSV cell too, the JSON list as it is), not text"
    )


def test_an_opt_out_as_an_object_is_told_to_write_a_list() -> None:
    assert _refused(opt_out={"sms": True}) == (
        'opt_out: write a JSON list, e.g. ["sms", "outbound_call"] (one channel: ["sms"]; '
        "none: []; in a CSV cell too, the JSON list as it is), not an object"
    )
