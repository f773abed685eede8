"""A record keyed by its subscriber id written by the wrong key serializer is told which.

Found walking as an upstream producer: kafka-python's `key_serializer=json.dumps`
(`"13800138001"` with its quotes), Java's `LongSerializer` (8 binary bytes) and a key in
UTF-16 were all `key_mismatch` dead letters saying "key by subscriber_id, exactly
(UTF-8, no prefix, no spaces)" beside the key's bytes, which for a binary number read
`'\\x00\\x00\\x00\\x036\\x8de\\x10'`: nothing named the serializer to change. The same for
an outcome's key, and for a profile tombstone's (which has no value to compare with).
"""

from __future__ import annotations

import json

import pytest

from moments.decoding import decode
from moments.models import EventType
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

SUB = "13800138000"
VALUE = json.dumps(example("TopUpEvent")).encode()
assert json.loads(VALUE)["subscriber_id"] == SUB

FORMS = [
    (json.dumps(SUB).encode(), "as a JSON string, in quotes (a JSON key serializer)"),
    (int(SUB).to_bytes(8, "big"), "as a 64-bit binary number (Java's LongSerializer?)"),
    (SUB.encode("utf-16-le"), "in UTF-16"),
    (SUB.encode("utf-16"), "in UTF-16"),  # with its byte-order mark
]


@pytest.mark.parametrize(("key", "said"), FORMS)
def test_an_event_keyed_by_its_id_written_otherwise_names_the_serializer(
    key: bytes, said: str
) -> None:
    refused = decode(RawRecord("telecom.topup", 0, 0, key, VALUE), EventType.TOPUP)
    assert isinstance(refused, DeadLetter)
    assert refused.reason is RejectReason.KEY_MISMATCH
    assert f"it is '{SUB}' {said}" in refused.message


@pytest.mark.parametrize(("key", "said"), FORMS[:2])
def test_an_outcome_and_a_tombstone_are_told_the_same(key: bytes, said: str) -> None:
    outcome = json.dumps(example("TaskOutcome")).encode()
    refused = decode_outcome(RawRecord("moments.task-outcomes", 0, 0, key, outcome))
    assert isinstance(refused, DeadLetter)
    assert f"it is '{SUB}' {said}" in refused.message
    tombstone = decode(RawRecord("telecom.profile", 0, 0, key, None), EventType.PROFILE)
    assert isinstance(tombstone, DeadLetter)
    assert tombstone.reason is RejectReason.KEY_MISMATCH
    assert f"it is '{SUB}' {said}" in tombstone.message


@pytest.mark.parametrize(
    "key",
    [
        b"86" + SUB.encode(),  # another number: no serializer to name
        json.dumps("13800138999").encode(),  # another subscriber, quoted
        (12345).to_bytes(4, "big"),
        b'""',
    ],
)
def test_another_key_names_no_serializer(key: bytes) -> None:
    refused = decode(RawRecord("telecom.topup", 0, 0, key, VALUE), EventType.TOPUP)
    assert isinstance(refused, DeadLetter)
    assert refused.reason is RejectReason.KEY_MISMATCH
    assert "it is '" not in refused.message
