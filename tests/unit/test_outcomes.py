"""Decoding a task outcome (moments.outcomes.decode_outcome): what becomes a dead letter
and why, before anything is read from the ledger."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from moments.decoding import decode
from moments.models import EventType, TaskOutcome
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

    @pytest.mark.parametrize("key", [TASK, "5" * 32], ids=["its task_id", "another task id"])
    def test_an_outcome_keyed_by_a_task_id_is_told_to_key_by_subscriber(self, key: str) -> None:
        """Keying an outcome by the task it reports is the likely slip (the task is what it
        is about): it was told only that the key "differs from subscriber_id"."""
        dead = decode_outcome(record(OUTCOME, key.encode()))
        assert isinstance(dead, DeadLetter)
        assert (dead.reason, dead.error_class) == (RejectReason.KEY_MISMATCH, "KeyMismatch")
        assert dead.message.startswith("the record key is a task id, not the subscriber's:")
        assert "key outcomes by subscriber_id" in dead.message
        assert SUB not in dead.message  # the number is not repeated into the dead letter


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


class TestTimeMessages:
    """A time the contract does not take is refused naming the fix: the reason was the
    337-character pattern (dispatch consumer review). The value is never quoted."""

    @pytest.mark.parametrize(
        ("occurred_at", "fix"),
        [
            ("2026-11-22T09:30:00", "add a UTC offset, e.g. 2026-12-05T13:10:00+08:00"),
            ("2026-11-22T09:30:00.473436", "add a UTC offset, e.g. 2026-12-05T13:10:00+08:00"),
            ("2026-12-05T13:10Z", "write the seconds (13:10:00, not 13:10), e.g. "),
            ("2026-12-05 13:10:00+00:00", "write a T between the date and the time, e.g. "),
            ("2026-12-05T13:10:00+0800", "write the UTC offset with a colon (+08:00, not "),
            ("9926-12-05T13:10:00Z", "write an RFC 3339 time with a UTC offset, e.g. "),
            ("2016-12-31T23:59:60Z", "write no leap second (second 60): write the second "),
            ("2026-12-05T13:10:00,5+08:00", "write a point before the fraction of a second "),
            ("2026-12-05T13:10:00 +08:00", "write no space before the UTC offset (00+08:00, "),
            ("Sat, 05 Dec 2026 13:10:00 +0800", "write RFC 3339, not an RFC 2822 (email or "),
            ("Sat Dec 05 2026 13:10:00 GMT+0800", "write an RFC 3339 time, not JavaScript's "),
            ("2026-W49-6T13:10:00+08:00", "write the calendar day (year-month-day), not an "),
        ],
    )
    def test_a_time_that_does_not_fit_names_the_fix(self, occurred_at: str, fix: str) -> None:
        dead = decode_outcome(record(OUTCOME | {"occurred_at": occurred_at}))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_EVENT
        assert dead.message.startswith(f"occurred_at: {fix}")
        assert len(dead.message) < 150
        assert occurred_at not in dead.message

    def test_an_events_time_names_the_fix_too(self) -> None:
        value = {
            "event_id": "t1",
            "subscriber_id": SUB,
            "occurred_at": "2026-12-05T13:10:00",
            "amount": 50,
            "channel": "app",
        }
        dead = decode(
            RawRecord("telecom.topup", 0, 1, SUB.encode(), orjson.dumps(value)), EventType.TOPUP
        )
        assert isinstance(dead, DeadLetter)
        assert dead.message == "occurred_at: add a UTC offset, e.g. 2026-12-05T13:10:00+08:00"


@pytest.mark.parametrize("depth", [300, 900])
def test_a_lone_surrogate_beside_deep_nesting_is_a_dead_letter(depth: int) -> None:
    """A note's lone surrogate is read again as U+FFFD; an unknown field nested hundreds
    deep beside it raised RecursionError out of decode_outcome (and the outcomes agent's
    batch), where without the surrogate it is an `invalid_json` dead letter (the
    parser's nesting limit)."""
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    value = orjson.dumps({**OUTCOME, "note": "cut"})[:-1] + b',"x":' + nested + b"}"
    value = value.replace(b'"cut"', b'"cut \\ud83d"')
    decoded = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), value))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is RejectReason.INVALID_JSON


class TestNotJson:
    """An outcome that is no JSON is told what it is instead and how to send it, as an
    input event is: a note in GBK was told "invalid unicode code point at line 1 column
    73", a Confluent Schema Registry frame or a byte-order mark "expected value at line 1
    column 1", and outcomes are not replayed (dispatch consumer re-check)."""

    @pytest.mark.parametrize(
        ("value", "fix"),
        [
            (
                orjson.dumps(OUTCOME)[:-1] + ',"note":"客户不在"}'.encode("gbk"),
                "not UTF-8 (byte 152: b'\\xbf'; GBK, Latin-1 or UTF-16?): encode the JSON "
                "text as UTF-8",  # 152: the first byte of the note's text
            ),
            (b"\x00\x00\x00\x00\x07" + orjson.dumps(OUTCOME), "Confluent Schema Registry"),
            (b"\xef\xbb\xbf" + orjson.dumps(OUTCOME), "byte-order mark (EF BB BF)"),
        ],
        ids=["gbk", "confluent", "bom"],
    )
    def test_it_names_the_fix_as_for_an_event(self, value: bytes, fix: str) -> None:
        dead = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), value))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_JSON
        assert fix in dead.message
        event = decode(RawRecord("telecom.topup", 0, 1, SUB.encode(), value), EventType.TOPUP)
        assert isinstance(event, DeadLetter)
        assert dead.message == event.message  # the same words

    def test_a_cut_outcome_keeps_the_parsers_words(self) -> None:
        cut = orjson.dumps(OUTCOME)[:-9]
        dead = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), cut))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_JSON
        assert dead.message.startswith("Invalid JSON: EOF while parsing")


class TestUnknownFields:
    """NaN and Infinity are no JSON, but the parsers take them (pydantic's, Python's
    `json`): in a field of the contract they are refused, in a field of the consumer's own
    they are kept out of the way, as in an input event. An outcome is not replayed: a
    decline is not lost for a field the detector does not read."""

    SCHEMA = Path(__file__).parents[2] / "schemas" / "task-outcome.schema.json"
    ODD = (b"NaN", b"Infinity", b"-Infinity", b'{"gauge": [1, NaN]}')

    @staticmethod
    def _with_own_field(value: bytes) -> bytes:
        return (
            orjson.dumps({**OUTCOME, "status": "declined"})[:-1] + b', "x_score": ' + value + b"}"
        )

    @pytest.mark.parametrize("value", ODD)
    def test_the_outcome_is_taken_and_the_field_not_kept(self, value: bytes) -> None:
        raw = self._with_own_field(value)
        outcome = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), raw))
        assert isinstance(outcome, TaskOutcome)
        assert outcome.status == "declined"
        # Not kept: nothing of it can be written again (a dump wrote NaN as null).
        assert not outcome.model_extra
        assert "x_score" not in outcome.model_dump_json()
        # The schema says the same of the value as read (Python's json reads NaN).
        validator = Draft202012Validator(json.loads(self.SCHEMA.read_text(encoding="utf-8")))
        assert validator.is_valid(json.loads(raw))

    @pytest.mark.parametrize("value", ODD)
    def test_an_input_event_takes_it_too(self, value: bytes) -> None:
        event = {"event_id": "t1", "subscriber_id": SUB, "occurred_at": OUTCOME["occurred_at"]}
        raw = orjson.dumps({**event, "amount": 50, "channel": "app"})[:-1] + b',"x":' + value + b"}"
        decoded = decode(RawRecord("telecom.topup", 0, 1, SUB.encode(), raw), EventType.TOPUP)
        assert not isinstance(decoded, DeadLetter)

    @pytest.mark.parametrize("value", [b"NaN", b"Infinity"])
    def test_in_a_field_of_the_contract_it_is_refused(self, value: bytes) -> None:
        raw = orjson.dumps(OUTCOME)[:-1].replace(b'"status":"done_no_change"', b'"status":' + value)
        dead = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), raw + b"}"))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_EVENT
        assert dead.message.startswith("status: ")


class TestStatusMessages:
    """Found walking as an SMS gateway team: `DONE_NO_CHANGE` and the gateway's own
    `delivered` read "Input should be 'in_progress', ... or 'failed'": the spelling or the
    mapping (docs/consuming-tasks.md, "Which status") was left to be guessed."""

    @pytest.mark.parametrize(
        ("written", "meant"),
        [
            ("DONE_NO_CHANGE", "done_no_change"),
            (" Failed", "failed"),
            ("in-progress", "in_progress"),
        ],
    )
    def test_a_status_written_otherwise_names_its_spelling(self, written: str, meant: str) -> None:
        dead = decode_outcome(record(OUTCOME | {"status": written}))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_EVENT
        assert (
            dead.message
            == f"status: write '{meant}' exactly (lowercase, as the contract spells it)"
        )

    @pytest.mark.parametrize("written", ["delivered", "DELIVRD", "expired", ""])
    def test_another_status_points_to_the_mapping(self, written: str) -> None:
        dead = decode_outcome(record(OUTCOME | {"status": written}))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_EVENT
        assert dead.message.startswith(
            "status: one of in_progress, done_no_change, done_new_alert, accepted, declined, "
            "unreachable, failed: map"
        )
        assert '"Which status"' in dead.message


class TestAgentId:
    """`agent_id` is for people (the detector reads none of it): a dialer's numeric agent
    id (`"agent_id": 17`) made the outcome a dead letter, and outcomes are not replayed:
    a decline or an unanswered call was lost for a label."""

    SCHEMA = Path(__file__).parents[2] / "schemas" / "task-outcome.schema.json"

    @pytest.mark.parametrize(
        ("agent", "taken"),
        [(17, "17"), (0, "0"), (17.0, "17"), (2**63 - 1, str(2**63 - 1)), ("agent-17", "agent-17")],
    )
    def test_a_whole_number_is_taken_as_its_text(self, agent: object, taken: str) -> None:
        outcome = decode_outcome(record({**OUTCOME, "status": "declined", "agent_id": agent}))
        assert isinstance(outcome, TaskOutcome), outcome
        assert outcome.agent_id == taken

    @pytest.mark.parametrize("agent", [-1, 2**63, 17.5, True, [17], "x" * 129])
    def test_anything_else_is_refused_naming_what_to_write(self, agent: object) -> None:
        dead = decode_outcome(record({**OUTCOME, "agent_id": agent}))
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_EVENT
        assert dead.message.startswith("agent_id: ")
        if not isinstance(agent, str | list):
            assert "whole number from 0 to 9223372036854775807" in dead.message

    @pytest.mark.parametrize(
        "agent", [17, 17.0, 1e3, -1, 2**63, 17.5, True, None, "a", "x" * 129, [17]]
    )
    def test_the_schema_says_the_same(self, agent: object) -> None:
        value = {**OUTCOME, "agent_id": agent}
        validator = Draft202012Validator(json.loads(self.SCHEMA.read_text(encoding="utf-8")))
        taken = not isinstance(decode_outcome(record(value)), DeadLetter)
        assert validator.is_valid(value) == taken
