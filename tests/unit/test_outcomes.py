"""Decoding a task outcome (moments.outcomes.decode_outcome): what becomes a dead letter
and why, before anything is read from the ledger."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from moments.models import TaskOutcome
from moments.outcomes import decode_outcome
from moments.records import DeadLetter, RawRecord, RejectReason

SUB = "13800138001"
TASK = "90bd947c9fdac044a8b53075800c7701"
OUTCOME = {
    "task_id": TASK,
    "subscriber_id": SUB,
    "status": "done_no_change",
    "occurred_at": "2026-12-05T13:10:00+08:00",
}


def record(value: dict[str, Any], key: bytes | None = SUB.encode()) -> RawRecord:
    return RawRecord("moments.task-outcomes", 0, 3, key, orjson.dumps(value))


class TestRecordKey:
    """An outcome is keyed by its subscriber id, as an input event is: one keyed by another
    number, or by none, was taken (dispatch consumer review); it lands on another
    partition than the subscriber's other outcomes, out of order."""

    def test_an_outcome_keyed_by_its_subscriber_is_taken(self) -> None:
        assert isinstance(decode_outcome(record(OUTCOME)), TaskOutcome)

    @pytest.mark.parametrize("key", [None, b""])
    def test_an_outcome_without_a_key_is_a_dead_letter(self, key: bytes | None) -> None:
        dead = decode_outcome(record(OUTCOME, key))
        assert isinstance(dead, DeadLetter)
        assert (dead.reason, dead.event_type) == (RejectReason.MISSING_KEY, "task_outcome")
        assert dead.message == "produce with the subscriber id as the record key"

    @pytest.mark.parametrize("key", [b"13900139002", b" 13800138001", b"+8613800138001"])
    def test_an_outcome_keyed_by_another_number_is_a_dead_letter(self, key: bytes) -> None:
        dead = decode_outcome(record(OUTCOME, key))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.KEY_MISMATCH
        assert dead.message.endswith("key by subscriber_id, exactly (UTF-8, no prefix, no spaces)")


class TestNote:
    """A note over 2,000 characters made the whole outcome a dead letter, and outcomes are
    not replayed: the decline or the unanswered call it reported was lost for a remark
    (dispatch consumer review). It is cut, and the outcome taken."""

    def test_a_note_of_2000_characters_is_kept_whole(self) -> None:
        outcome = decode_outcome(record(OUTCOME | {"note": "n" * 2000}))
        assert isinstance(outcome, TaskOutcome)
        assert outcome.note == "n" * 2000

    def test_a_longer_note_is_cut_with_a_marker_and_a_log_line(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "moments.outcomes")
        outcome = decode_outcome(record(OUTCOME | {"status": "declined", "note": "n" * 5000}))
        assert isinstance(outcome, TaskOutcome)
        assert outcome.status == "declined"
        assert outcome.note is not None
        assert len(outcome.note) == 2000
        assert outcome.note.endswith("n [cut from 5,000 characters]")
        assert f"outcome of task {TASK}: its note of 5000 characters is cut to 2000" in (
            caplog.text
        )
        assert "nnn" not in caplog.text  # the note itself is never logged
