"""A value that is JSON but not one object (events batched in an array, an event encoded
twice as a JSON string, two events in one record) is told what it is and how to send it,
as an input event and as a task outcome: it was "value: Input should be an object",
which an array of objects or a string showing `{"event_id": ...}` seems to be, or
"Invalid JSON: trailing characters at line 2 column 1" (producer re-check)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from moments.decoding import decode
from moments.models import EventType
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

EVENT = example("TopUpEvent")
OUTCOME = example("TaskOutcome")


def _event(value: bytes | None) -> DeadLetter:
    key = EVENT["subscriber_id"].encode()
    refused = decode(RawRecord("telecom.topup", 0, 1, key, value), EventType.TOPUP)
    assert isinstance(refused, DeadLetter)
    return refused


def _outcome(value: bytes | None) -> DeadLetter:
    key = OUTCOME["subscriber_id"].encode()
    refused = decode_outcome(RawRecord("moments.task-outcomes", 0, 1, key, value))
    assert isinstance(refused, DeadLetter)
    return refused


@pytest.mark.parametrize(
    ("how", "said"),
    [
        (lambda v: [v, v], "a JSON array, not one {kind}: send each {kind} as a JSON object"),
        (lambda v: json.dumps(v), "the JSON was encoded twice"),
        (lambda v: "13800138001", "a JSON string, not an object: send the {kind} as a JSON"),
        (lambda v: 13800138001, "a JSON number, not an object: send the {kind} as a JSON"),
        (lambda v: True, "true or false, not an object"),
    ],
    ids=["array", "encoded-twice", "string", "number", "boolean"],
)
@pytest.mark.parametrize("kind", ["event", "outcome"])
def test_json_that_is_no_object_names_what_it_is(
    how: Callable[[dict[str, Any]], Any], said: str, kind: str
) -> None:
    value = json.dumps(how(EVENT if kind == "event" else OUTCOME)).encode()
    refused = _event(value) if kind == "event" else _outcome(value)
    assert refused.reason is RejectReason.INVALID_EVENT
    assert refused.message.startswith("value: ")
    assert said.format(kind=kind) in refused.message


@pytest.mark.parametrize("between", [b"\n", b"", b" \r\n "])
@pytest.mark.parametrize("kind", ["event", "outcome"])
def test_two_values_in_one_record_say_so(between: bytes, kind: str) -> None:
    one = json.dumps(EVENT if kind == "event" else OUTCOME).encode()
    refused = (_event if kind == "event" else _outcome)(one + between + one)
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message == (
        "more than one JSON value in the record (several joined by newlines, or run "
        "together): send each as a record of its own"
    )


def test_other_text_after_an_object_keeps_the_parsers_words() -> None:
    refused = _event(json.dumps(EVENT).encode() + b" x")
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message.startswith("Invalid JSON: trailing characters at line 1")


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            b'{"event_id": "u-',
            "Invalid JSON: EOF while parsing a string at line 1 column 16: the value ends "
            "before its JSON does (cut short by a size limit or a partial write?); send it "
            "whole",
        ),
        (
            b"{'event_id': 'u-1'}",
            "Invalid JSON: key must be a string at line 1 column 2: names take double quotes "
            "(single quotes, or a Python dict written with str()?); send it as JSON "
            "(json.dumps)",
        ),
    ],
    ids=["cut", "single-quotes"],
)
@pytest.mark.parametrize("kind", ["event", "outcome"])
def test_the_parsers_words_get_the_fix_they_leave_out(value: bytes, said: str, kind: str) -> None:
    """A record cut short was told "EOF while parsing a string at line 1 column 16", a
    Python dict printed with str() "key must be a string": where, not what to do."""
    refused = (_event if kind == "event" else _outcome)(value)
    assert refused.reason is RejectReason.INVALID_JSON
    assert refused.message == said


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "null value"),
        (b"", "an empty value (b'')"),
        (b" \n", "an empty value (b' \\n')"),
        (b"null", "an empty value (b'null')"),
    ],
    ids=["tombstone", "no-bytes", "whitespace", "json-null"],
)
@pytest.mark.parametrize("kind", ["event", "outcome"])
def test_an_empty_value_is_empty_value_naming_the_fix(
    value: bytes | None, shown: str, kind: str
) -> None:
    """A task outcome with nothing in it was told "no value" (a tombstone, no bytes),
    the parser's "EOF while parsing a value ... cut short?" (whitespace) or "null, not an
    object" (`invalid_event`, JSON null), where an input event's same bytes are all
    `empty_value` with the fix, as the AsyncAPI document's `empty_value` says of both
    (a dispatch consumer's serializer given None, found producing outcomes)."""
    refused = (_event if kind == "event" else _outcome)(value)
    assert refused.reason is RejectReason.EMPTY_VALUE
    assert refused.message.startswith(shown + "; ")
    assert refused.message.endswith(
        "send the event, or nothing"
        if kind == "event"
        else 'an outcome is one JSON object (docs/consuming-tasks.md, "Reporting back"): '
        "send it, or nothing"
    )
