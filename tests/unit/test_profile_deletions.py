"""A profile deletion erases the subscriber whatever form a producer's client gave it on
the wire: a null value (tombstone), the JSON text `null` (kafka-python's JSON
value_serializer given None) or an empty value. Found by an upstream producer: the last
two were dead letters and the subscriber was not erased (an erasure request lost)."""

from __future__ import annotations

import logging

import pytest

from moments.decoding import decode
from moments.engine import Detector
from moments.models import EventType
from moments.partitioning import PartitionCheck, partition_of
from moments.pipeline import to_records
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.runtime import warn_odd_deletions
from moments.store import DictStateStore
from tests.unit.rules.helpers import NO_GATES, SUB, WELCOME, at, ev, rules_from

FORMS = [(None, "tombstone"), (b"null", "json_null"), (b"", "empty"), (b" null\n", "json_null")]


@pytest.mark.parametrize(("value", "form"), FORMS)
def test_every_form_of_a_deletion_is_one_on_the_profile_topic(
    value: bytes | None, form: str
) -> None:
    record = RawRecord("telecom.profile", 0, 1, SUB.encode(), value)
    assert decode(record, EventType.PROFILE) is None
    elsewhere = decode(RawRecord("telecom.topup", 0, 1, SUB.encode(), value), EventType.TOPUP)
    assert isinstance(elsewhere, DeadLetter)
    assert elsewhere.reason is RejectReason.EMPTY_VALUE
    assert "only telecom.profile accepts deletions" in elsewhere.message


@pytest.mark.parametrize(
    ("value", "deletion"),
    [(b"    null", True), (b"        ", True), (b"     null", False), (b"         ", False)],
)
def test_a_deletion_is_8_bytes_at_most_and_a_longer_blank_or_null_an_invalid_event(
    value: bytes, deletion: bool
) -> None:
    """`decode` asks `deletion_form` only of a value of 8 bytes or fewer (every event is
    longer): `null` or blanks padded past 8 bytes are no deletion, as `deletion_form`
    says, but a dead letter of the profile topic's own (not JSON, or not an object)."""
    found = decode(RawRecord("telecom.profile", 0, 1, SUB.encode(), value), EventType.PROFILE)
    if deletion:
        assert found is None
    else:
        assert isinstance(found, DeadLetter)
        assert found.reason in {RejectReason.INVALID_JSON, RejectReason.INVALID_EVENT}
        assert found.event_type == "profile"


@pytest.mark.parametrize("value", [b"null", b""])
def test_a_json_null_or_empty_deletion_erases_the_subscriber_and_is_counted(
    value: bytes,
) -> None:
    detector = Detector(rules_from(NO_GATES + "rules:" + WELCOME), {t.value: t for t in EventType})
    store = DictStateStore()
    first = to_records([ev(EventType.PROFILE, at("2026-12-01", "09:00"), opt_out=["sms"])])
    store.save(detector.process(first, store.load, None).changes)
    assert store.load(SUB) is not None
    deletion = RawRecord("profile", 0, 1, SUB.encode(), value)
    batch = detector.process([deletion], store.load, None)
    assert batch.dead_letters == []
    assert batch.forgotten == [SUB]
    assert batch.changes[SUB].state is None
    assert dict(batch.deletions) == {"json_null" if value else "empty": 1}
    store.save(batch.changes)
    assert store.load(SUB) is None


def test_a_misplaced_json_null_deletion_is_refused_like_a_tombstone() -> None:
    check = PartitionCheck(4)
    key = SUB.encode()
    wrong = (partition_of(key, 4) + 1) % 4
    kept, refused = check.misplaced_tombstones(
        [RawRecord("telecom.profile", wrong, 1, key, b"null")], "telecom.profile"
    )
    assert (kept, [d.reason for d in refused]) == ([], [RejectReason.MISPLACED])


def test_only_a_deletion_without_a_null_value_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="moments.runtime"):
        warn_odd_deletions({"tombstone": 3})
        assert caplog.records == []
        warn_odd_deletions({"tombstone": 1, "json_null": 2})
    [line] = caplog.records
    assert "2 as json_null" in line.getMessage()
    assert "send a null value" in line.getMessage()
