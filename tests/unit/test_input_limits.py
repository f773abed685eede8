"""Hostile input is refused, not executed or buffered: size and length limits become dead
letters with a reason, rules files cannot build objects, templates only fill names."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import orjson
import pytest

from moments.cli import main
from moments.decoding import MAX_MESSAGE_BYTES, decode
from moments.models import EventType, UsageEvent
from moments.records import DeadLetter, RawRecord, RejectReason
from rules.catalog import load_rules
from rules.exceptions import RulesError
from rules.templates import fill

SUB = "13800138001"


def _record(value: bytes, key: bytes = SUB.encode()) -> RawRecord:
    return RawRecord("telecom.usage", 0, 7, key, value)


def _usage(**fields: object) -> bytes:
    event = {
        "event_id": "u1",
        "subscriber_id": SUB,
        "occurred_at": "2026-11-22T09:30:00+08:00",
        "kind": "voice",
    }
    return orjson.dumps(event | fields)


class TestMessageSize:
    def test_a_value_over_the_limit_is_a_dead_letter_without_parsing(self) -> None:
        value = _usage(note="x" * MAX_MESSAGE_BYTES)
        result = decode(_record(value), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.TOO_LARGE
        assert str(MAX_MESSAGE_BYTES) in result.message

    def test_a_value_at_the_limit_is_parsed(self) -> None:
        base = _usage(note="")
        value = _usage(note="x" * (MAX_MESSAGE_BYTES - len(base)))
        assert len(value) == MAX_MESSAGE_BYTES
        assert isinstance(decode(_record(value), EventType.USAGE), UsageEvent)


class TestFieldLengths:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("event_id", "e" * 129),
            ("region", "R" * 33),
            ("counterparty", "1" * 33),
            ("service_code", "s" * 65),
            ("imei", "1" * 17),
            ("subscriber_id", "1" * 21),
        ],
    )
    def test_an_overlong_field_is_an_invalid_event_naming_it(self, field: str, value: str) -> None:
        key = value.encode() if field == "subscriber_id" else SUB.encode()
        result = decode(_record(_usage(**{field: value}), key), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_EVENT
        assert field in result.message
        assert value not in result.message  # the reason never copies the input


TASK = "90bd947c9fdac044a8b53075800c7701"  # the form of every task id the detector makes


class TestOutcomes:
    """Outcomes from dispatch consumers get the same limits as events."""

    def _record(self, value: bytes) -> RawRecord:
        return RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), value)

    def test_an_outcome_over_the_limit_is_a_dead_letter_without_parsing(self) -> None:
        from moments.outcomes import decode_outcome

        value = orjson.dumps({"task_id": TASK, "note": "x" * MAX_MESSAGE_BYTES})
        result = decode_outcome(self._record(value))
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.TOO_LARGE

    def test_an_invalid_outcome_names_the_fields_not_their_values(self) -> None:
        from moments.outcomes import decode_outcome

        value = orjson.dumps({"task_id": TASK, "subscriber_id": "97531x", "status": "gone"})
        result = decode_outcome(self._record(value))
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_EVENT
        assert "subscriber_id:" in result.message
        assert "status:" in result.message
        assert "97531" not in result.message

    @pytest.mark.parametrize(("field", "limit"), [("agent_id", 128)])
    def test_an_overlong_agent_is_refused_naming_the_field(self, field: str, limit: int) -> None:
        """(A long note is cut, not refused: tests/unit/test_outcomes.py.)"""
        from moments.outcomes import decode_outcome

        ok = {
            "task_id": TASK,
            "subscriber_id": SUB,
            "status": "declined",
            "occurred_at": "2026-12-03T10:00:00Z",
        }
        assert not isinstance(
            decode_outcome(self._record(orjson.dumps({**ok, field: "a" * limit}))), DeadLetter
        )
        result = decode_outcome(self._record(orjson.dumps({**ok, field: "a" * (limit + 1)})))
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_EVENT
        assert f"{field}:" in result.message

    @pytest.mark.parametrize(
        "task_id",
        [
            "abc\n[2026-12-05 07:50:00,000] [1] [CRITICAL] FORGED: ledger wiped",
            TASK + "\n",
            TASK.upper(),
            TASK[:-1],
            TASK + "0",
            "t1",
        ],
    )
    def test_a_task_id_the_detector_never_makes_is_refused_naming_the_fix(
        self, task_id: str
    ) -> None:
        """Only a 32-hex id is taken, so a log line quoting one cannot hold a forged line."""
        from moments.outcomes import decode_outcome

        value = {
            "task_id": task_id,
            "subscriber_id": SUB,
            "status": "unreachable",
            "occurred_at": "2026-12-05T07:50:00Z",
        }
        result = decode_outcome(self._record(orjson.dumps(value)))
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_EVENT
        assert result.message.startswith("task_id: not a task id of this detector")
        assert "copy the task's task_id as published on moments.tasks" in result.message
        assert "FORGED" not in result.message
        assert not isinstance(
            decode_outcome(self._record(orjson.dumps(value | {"task_id": TASK}))), DeadLetter
        )


class TestRulesFilesHoldData:
    """ruamel's round-trip loader keeps tags as data; load_rules refuses them by position."""

    @pytest.mark.parametrize(
        "tag",
        [
            "!!python/object/apply:os.system",
            "!!python/object/new:subprocess.Popen",
            "!!python/name:os.system",
            "!custom",
        ],
    )
    def test_a_constructing_tag_is_refused_and_nothing_runs(self, tmp_path: Path, tag: str) -> None:
        marker = tmp_path / "ran"
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f'rules:\n  - id: evil\n    version: 1\n    condition: {tag} ["touch {marker}"]\n'
        )
        with pytest.raises(RulesError) as err:
            load_rules(rules)
        assert not marker.exists()
        # line and column of the tagged entry (its key)
        assert [str(p) for p in err.value.problems] == [
            f"{rules}:4:5: YAML tag {tag} is not allowed; rules files hold plain data"
        ]


class TestTemplatesFillNamesOnly:
    def test_names_are_filled(self) -> None:
        assert fill("Welcome to {country}", {"country": "JP"}) == "Welcome to JP"

    @pytest.mark.parametrize(
        "template",
        [
            "{x.__class__}",
            "{x.__class__.__mro__}",
            "{0}",
            "{x[0]}",
            "{x!r}",
            "{__import__('os')}",
        ],
    )
    def test_anything_but_a_name_stays_as_written(self, template: str) -> None:
        params = {"x": "value", "width": 5, "0": "zero"}
        assert fill(template, params) == template

    def test_a_format_spec_is_not_applied(self) -> None:
        # only the bare {width} is a placeholder; "{x:>5}" is left as text, not padded
        assert fill("{x:>{width}}", {"x": "v", "width": 5}) == "{x:>5}"

    def test_a_value_is_not_filled_again(self) -> None:
        assert fill("{a}", {"a": "{b}", "b": "secret"}) == "{b}"


class TestNonFiniteNumbers:
    """JSON allows 1e400 (infinity as a float) and some producers write "NaN" or
    "Infinity" as strings: such a number cannot be stored (orjson writes it as null) and
    would poison the subscriber's record, so the event is a dead letter naming the field."""

    @pytest.mark.parametrize(
        ("field", "raw"),
        [
            ("quantity", b"1e400"),
            ("quantity", b'"NaN"'),
            ("quantity", b'"-Infinity"'),
            ("charge", b'"Infinity"'),
            ("charge", b'"NaN"'),
        ],
    )
    def test_is_an_invalid_event(self, field: str, raw: bytes) -> None:
        value = _usage().replace(b'"kind"', b'"' + field.encode() + b'":' + raw + b',"kind"')
        assert json.loads(value)  # valid JSON (1e400 parses to inf): only the model refuses it
        result = decode(_record(value), EventType.USAGE)
        assert isinstance(result, DeadLetter), result
        assert result.reason is RejectReason.INVALID_EVENT
        assert field in result.message

    @pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
    @pytest.mark.parametrize("field", ["charge", "balance_after"])
    def test_in_money_says_it_is_no_amount(self, field: str, raw: bytes) -> None:
        """Found walking as a producer: a pandas NaN for a missing balance, written by
        `json.dumps`, was told 'Input should be a JSON number or a decimal string', and
        NaN reads as a number to whoever wrote it."""
        value = _usage().replace(b'"kind"', b'"' + field.encode() + b'":' + raw + b',"kind"')
        result = decode(_record(value), EventType.USAGE)
        assert isinstance(result, DeadLetter), result
        assert result.reason is RejectReason.INVALID_EVENT
        assert result.message == (
            f"{field}: NaN and Infinity are no amounts: write a finite JSON number or a "
            'decimal string like "49.90", or leave an optional amount out when it is unknown'
        )

    def test_the_largest_numbers_are_accepted(self) -> None:
        event = decode(
            _record(_usage(quantity=1e15, charge="-999999999.99", balance_after=999999999.99)),
            EventType.USAGE,
        )
        assert isinstance(event, UsageEvent)
        assert event.quantity == 1e15

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("quantity", 1e300),  # finite, but a few make the series infinite
            ("quantity", 1.5e15),
            ("charge", "9" * 400),
            ("charge", "-1000000000"),
            ("charge", 1e9),
            ("balance_after", "1000000000.00"),
        ],
    )
    def test_beyond_the_contract_is_an_invalid_event(self, field: str, value: object) -> None:
        """400 digits of charge passed and made the spend series infinite, stored as null:
        the worker crashed on the subscriber's next event, at each restart (security
        review)."""
        result = decode(_record(_usage(**{field: value})), EventType.USAGE)
        assert isinstance(result, DeadLetter), result
        assert result.reason is RejectReason.INVALID_EVENT
        assert field in result.message

    @pytest.mark.parametrize(
        ("raw", "taken"),
        [
            (b"12", "12"),
            (b"49.9", "49.9"),
            (b'"49.9000"', "49.9000"),
            (b"0.30000000000000004", "0.3"),  # float arithmetic upstream
            (b"1e-300", "0.0"),  # showed as "1E-300 yuan" in an SMS
            (b"-0.0", "0.0"),
        ],
    )
    def test_money_is_read_to_four_places(self, raw: bytes, taken: str) -> None:
        value = _usage().replace(b'"kind"', b'"balance_after":' + raw + b',"kind"')
        event = decode(_record(value), EventType.USAGE)
        assert isinstance(event, UsageEvent), event
        assert str(event.balance_after) == taken

    def test_a_decimal_string_with_more_than_four_places_is_an_invalid_event(self) -> None:
        """20,000 places of balance went into a customer's SMS (security re-check)."""
        for text in ("5.33333", "5." + "3" * 20_000):
            result = decode(_record(_usage(balance_after=text)), EventType.USAGE)
            assert isinstance(result, DeadLetter)
            assert "balance_after" in result.message

    def test_a_top_up_of_a_billion_is_an_invalid_event(self) -> None:
        value = orjson.dumps(
            {
                "event_id": "t1",
                "subscriber_id": SUB,
                "occurred_at": "2026-11-22T09:30:00+08:00",
                "amount": "1" + "0" * 9,
                "channel": "app",
            }
        )
        result = decode(RawRecord("telecom.topup", 0, 1, SUB.encode(), value), EventType.TOPUP)
        assert isinstance(result, DeadLetter)
        assert "amount" in result.message


class TestEventText:
    """Text from events reaches SMS descriptions, logs and terminals: a control character
    in it is refused (security review: a top-up channel "app\\r\\nWIN: http://x.io" went
    into a customer's SMS text)."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("service_code", "VIP\nReply YES to 10086"),
            ("counterparty", "10086\x07"),
            ("event_id", "e1\r\n[CRITICAL] forged"),
            ("region", "NJ\x1b[2J"),
            ("service_code", "x\x7f"),
            # format characters and separators (security re-check)
            ("service_code", "\u202eppa.evil"),
            ("counterparty", "10086\u2028x"),
            ("region", "N\u200bJ"),
            ("event_id", "\ufeffe1"),
            ("service_code", "VIP\u2066x\u2069"),
            ("service_code", "soft\u00adhyphen"),
        ],
    )
    def test_a_control_character_is_an_invalid_event(self, field: str, value: str) -> None:
        result = decode(_record(_usage(**{field: value})), EventType.USAGE)
        assert isinstance(result, DeadLetter), result
        assert result.reason is RejectReason.INVALID_EVENT
        assert field in result.message

    def test_other_text_is_taken(self) -> None:
        event = decode(
            _record(_usage(service_code="5G 套餐 · plus", region="南京")), EventType.USAGE
        )
        assert isinstance(event, UsageEvent)
        assert event.service_code == "5G 套餐 · plus"


class TestLists:
    def test_more_than_eight_quiet_hours_windows_is_an_invalid_event(self) -> None:
        """20 windows passed and made a task's quiet hours longer than its model takes:
        the worker crashed at each restart (security review)."""
        windows = [f"{h:02d}:00-{h:02d}:01" for h in range(9)]
        value = orjson.dumps(
            {
                "event_id": "p1",
                "subscriber_id": SUB,
                "occurred_at": "2026-11-22T09:30:00+08:00",
                "quiet_hours": windows,
            }
        )
        result = decode(RawRecord("crm.profile", 0, 1, SUB.encode(), value), EventType.PROFILE)
        assert isinstance(result, DeadLetter)
        assert "quiet_hours" in result.message
        value = value.replace(b',"08:00-08:01"', b"")
        assert not isinstance(
            decode(RawRecord("crm.profile", 0, 1, SUB.encode(), value), EventType.PROFILE),
            DeadLetter,
        )


class TestProducerMistakes:
    """What an upstream review sent, refused with what to fix."""

    @pytest.mark.parametrize("key", [None, b""])
    def test_no_key_or_an_empty_one_is_missing_key(self, key: bytes | None) -> None:
        """An empty key read `key_mismatch: record key '' differs ...` on an event and
        `missing_key` on a tombstone (producer review)."""
        result = decode(_record(_usage(), key=key), EventType.USAGE)  # type: ignore[arg-type]
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.MISSING_KEY
        assert result.message == "produce with the subscriber id as the record key"

    def test_a_byte_order_mark_is_named(self) -> None:
        result = decode(_record(b"\xef\xbb\xbf" + _usage()), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_JSON
        assert result.message == (
            "the value starts with a UTF-8 byte-order mark (EF BB BF): send the JSON without one"
        )

    @pytest.mark.parametrize("key", [b"abc", b"+8613800138001", SUB.encode() + b"\n"])
    def test_a_tombstone_keyed_by_no_subscriber_id_is_refused(self, key: bytes) -> None:
        """It was taken, and forgot nobody: the producer never learnt why."""
        record = RawRecord("telecom.profile", 0, 3, key, None)
        result = decode(record, EventType.PROFILE)
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.KEY_MISMATCH
        assert "forgets nobody: key it by the subscriber id" in result.message

    def test_a_tombstone_keyed_by_a_subscriber_id_forgets_them(self) -> None:
        assert (
            decode(RawRecord("telecom.profile", 0, 3, SUB.encode(), None), EventType.PROFILE)
            is None
        )

    def test_an_event_on_the_wrong_topic_is_named(self) -> None:
        topup = orjson.dumps(
            {
                "event_id": "t1",
                "subscriber_id": SUB,
                "occurred_at": "2026-11-22T09:30:00+08:00",
                "amount": 50,
                "channel": "app",
            }
        )
        result = decode(_record(topup), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.message == (
            "kind: Field required (it reads as a topup event: sent to the wrong topic?)"
        )
        plain = decode(_record(_usage(kind="fax")), EventType.USAGE)
        assert isinstance(plain, DeadLetter)
        assert "wrong topic" not in plain.message


class TestNotJsonSaysWhatToSend:
    """Found by an upstream producer: GBK or Latin-1 text read "invalid unicode code point"
    and a Confluent wire-format frame "expected value", neither naming the fix."""

    TEXT = '{"event_id":"u1","subscriber_id":"%s","occurred_at":"2026-11-22T09:30:00+08:00",'
    TEXT += '"kind":"voice","service_code":"%s"}'

    @pytest.mark.parametrize(("code", "encoding"), [("支付宝", "gbk"), ("café", "latin-1")])
    def test_text_in_another_encoding_is_said_not_utf8(self, code: str, encoding: str) -> None:
        value = (self.TEXT % (SUB, code)).encode(encoding)
        result = decode(_record(value), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_JSON
        assert "not UTF-8" in result.message
        assert "encode the JSON text as UTF-8" in result.message

    def test_a_confluent_frame_is_named(self) -> None:
        value = b"\x00\x00\x00\x00\x07" + (self.TEXT % (SUB, "x")).encode()
        result = decode(_record(value), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert "Confluent Schema Registry header" in result.message


class TestFieldMessagesNameTheFix:
    """Found by an upstream producer: a millisecond epoch read "Input should be a valid
    string", a number with +86 a bare pattern, and the subscriber as a JSON number the
    same: none said what to send."""

    @pytest.mark.parametrize("epoch", [1764904200, 1764904200123, 1764904200.5])
    def test_an_epoch_time_is_said_to_be_one(self, epoch: float) -> None:
        result = decode(_record(_usage(occurred_at=epoch)), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.message.startswith("occurred_at: a time is text, not an epoch number")
        assert str(int(epoch)) not in result.message

    @pytest.mark.parametrize("written", ["+8613800138001", "138-0013-8001", "138 0013 8001"])
    def test_a_subscriber_number_with_signs_says_digits_only(self, written: str) -> None:
        result = decode(_record(_usage(subscriber_id=written)), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert "subscriber_id: write the subscriber number as 5 to 20 digits only" in (
            result.message
        )

    def test_a_subscriber_number_as_a_json_number_says_write_a_string(self) -> None:
        result = decode(_record(_usage(subscriber_id=int(SUB))), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert "subscriber_id: write the subscriber number as a JSON string" in result.message

    @pytest.mark.parametrize("field", ["event_id", "region"])
    def test_another_field_sent_as_an_epoch_sized_number_is_not_called_a_time(
        self, field: str
    ) -> None:
        """An event_id 1764904200 (a numeric id sent as a JSON number) read "a time is
        text, not an epoch number": the producer was told to write it in RFC 3339."""
        result = decode(_record(_usage(**{field: 1764904200})), EventType.USAGE)
        assert isinstance(result, DeadLetter)
        assert result.message.startswith(f"{field}: write it as a JSON string (in quotes)")
        assert "epoch" not in result.message

    @pytest.mark.parametrize("window", ["22:00-24:00", "10pm-8am", "22:00~08:00", "2200-0800"])
    def test_a_quiet_hours_window_out_of_form_says_how_to_write_one(self, window: str) -> None:
        """Found walking as a CRM producer: `22:00-24:00` read "String should match
        pattern '^([01][0-9]|2[0-3]):...$'", a regex and no fix."""
        profile = orjson.dumps(
            {
                "event_id": "p1",
                "subscriber_id": SUB,
                "occurred_at": "2026-11-22T09:30:00+08:00",
                "quiet_hours": ["12:00-13:00", window],
            }
        )
        result = decode(_record(profile), EventType.PROFILE)
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.INVALID_EVENT
        assert result.message.startswith("quiet_hours.1: write each window as HH:MM-HH:MM")
        assert "00:00, not 24:00" in result.message
        assert "pattern" not in result.message
        assert window not in result.message  # a dead letter names fields, not values

    @pytest.mark.parametrize(
        ("field", "text", "least", "most"),
        [
            ("severity", "1", 1, 3),
            ("star_level", "5", 1, 7),
        ],
    )
    def test_a_count_sent_as_text_says_write_a_json_integer(
        self, field: str, text: str, least: int, most: int
    ) -> None:
        """Found walking as a producer: a severity of "1" (a CSV or ORM export that quotes
        everything) read "Input should be a valid integer", and "1" looks like one."""
        kind = EventType.COMPLAINT if field == "severity" else EventType.PROFILE
        doc: dict[str, object] = {
            "event_id": "c1",
            "subscriber_id": SUB,
            "occurred_at": "2026-11-22T09:30:00+08:00",
            field: text,
        }
        if kind is EventType.COMPLAINT:
            doc |= {"complaint_id": "C1", "category": "network", "status": "opened"}
        result = decode(_record(orjson.dumps(doc)), kind)
        assert isinstance(result, DeadLetter)
        assert result.message == (
            f'{field}: write a JSON integer from {least} to {most} (e.g. {least}, not "{least}")'
        )

    @pytest.mark.parametrize(
        ("field", "number", "bound"),
        [
            ("severity", b"1e300", "less than or equal to 3"),
            ("severity", b"1e20", "less than or equal to 3"),
            ("severity", b"-1e300", "greater than or equal to 1"),
            ("star_level", b"1e300", "less than or equal to 7"),
        ],
    )
    def test_a_count_too_big_for_an_integer_is_told_its_range(
        self, field: str, number: bytes, bound: str
    ) -> None:
        """A severity of 1e300 is a number, too big: it was told "Unable to parse input
        string as an integer", as if it were text, where 100 is told the bound."""
        kind = EventType.COMPLAINT if field == "severity" else EventType.PROFILE
        doc: dict[str, object] = {
            "event_id": "c1",
            "subscriber_id": SUB,
            "occurred_at": "2026-11-22T09:30:00+08:00",
            field: 0,
        }
        if kind is EventType.COMPLAINT:
            doc |= {"complaint_id": "C1", "category": "network", "status": "opened"}
        value = orjson.dumps(doc).replace(f'"{field}":0'.encode(), f'"{field}":'.encode() + number)
        result = decode(_record(value), kind)
        assert isinstance(result, DeadLetter)
        assert result.message == f"{field}: Input should be {bound}"


class TestOutcomeDuplicateKeys:
    """An outcome naming its task, subscriber or status twice is refused: the parser kept
    the last, so a consumer's template bug acted on another task than the one meant (a
    decline on the wrong task kept the wrong rule from the customer for 30 days)."""

    def test_a_second_task_id_is_a_dead_letter_naming_it(self) -> None:
        from moments.outcomes import decode_outcome

        value = (
            b'{"task_id": "' + TASK.encode() + b'", "subscriber_id": "' + SUB.encode() + b'", '
            b'"status": "declined", "occurred_at": "2026-12-03T10:00:00Z", '
            b'"task_id": "0' + TASK[1:].encode() + b'"}'
        )
        result = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), value))
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.DUPLICATE_KEY
        assert '"task_id" appears twice in the outcome' in result.message
        assert TASK not in result.message

    def test_a_second_occurred_at_is_a_dead_letter_naming_it(self) -> None:
        """`occurred_at` sets when an unreachable task's retry is due: a second one was
        read as the last, silently, as a second `task_id` was."""
        from moments.outcomes import decode_outcome

        value = (
            b'{"task_id": "' + TASK.encode() + b'", "subscriber_id": "' + SUB.encode() + b'", '
            b'"status": "unreachable", "occurred_at": "2026-12-03T10:00:00Z", '
            b'"occurred_at": "2026-12-01T10:00:00Z"}'
        )
        result = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), value))
        assert isinstance(result, DeadLetter)
        assert result.reason is RejectReason.DUPLICATE_KEY
        assert '"occurred_at" appears twice in the outcome' in result.message
        assert "2026-12" not in result.message

    def test_a_name_inside_the_note_is_no_duplicate(self) -> None:
        from moments.outcomes import decode_outcome

        value = orjson.dumps(
            {
                "task_id": TASK,
                "subscriber_id": SUB,
                "status": "done_no_change",
                "occurred_at": "2026-12-03T10:00:00Z",
                "note": 'customer said "task_id" twice',
            }
        )
        result = decode_outcome(RawRecord("moments.task-outcomes", 0, 3, SUB.encode(), value))
        assert not isinstance(result, DeadLetter)
        assert result.task_id == TASK


@pytest.mark.parametrize("amount", [b"-5", b"-1e10", b"-1000000000", b'"-0.5"', b"0"])
def test_a_top_up_at_or_below_zero_is_told_above_zero(amount: bytes) -> None:
    """A positive amount far below zero was told "greater than or equal to
    -999999999.9999", the bound of money that may be negative: -5 then reads as the fix."""
    value = (
        b'{"event_id":"t1","subscriber_id":"' + SUB.encode() + b'",'
        b'"occurred_at":"2026-11-22T09:30:00+08:00","channel":"app","amount":' + amount + b"}"
    )
    result = decode(RawRecord("telecom.topup", 0, 1, SUB.encode(), value), EventType.TOPUP)
    assert isinstance(result, DeadLetter), result
    assert result.message == "amount: Input should be greater than 0"


_TOPUP = (
    '{"event_id":"t1","subscriber_id":"' + SUB + '","occurred_at":"2026-11-22T09:30:00+08:00",'
    '"amount":5,"channel":"%s"%s}'
)


@pytest.mark.parametrize(
    ("channel", "after", "lone"),
    [
        (r"app \ud83d", "", True),
        (r"app \ude00", "", True),
        (r"app \\\ud83d", "", True),  # an escaped backslash, then half an emoji
        (r"app \ud83d\\ude00", "", True),
        # A backslash escaped before `u` is text, not a surrogate: the value is no JSON
        # for its trailing comma, and cutting text would not fix it.
        (r"app \\ud83d", ",", False),
        (r"app \\\\ud83d", ",", False),
        (r"app \ud83d\ude00", ",", False),
    ],
)
def test_a_lone_surrogate_is_named_only_where_there_is_one(
    channel: str, after: str, lone: bool
) -> None:
    value = (_TOPUP % (channel, after)).encode()
    result = decode(_record(value), EventType.TOPUP)
    assert isinstance(result, DeadLetter), result
    assert result.reason is RejectReason.INVALID_JSON
    assert ("lone UTF-16 surrogate" in result.message) is lone, result.message


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("49.900000", "at most 4 decimal places"),  # a DECIMAL(18,6) column as text
        ("5.33333", "at most 4 decimal places"),
        ("1000000000", "below a billion"),
        ("-1000000000.00", "below a billion"),
        ("0000000049.90", "at most 9 digits before the point"),
    ],
)
def test_a_decimal_string_out_of_form_names_the_fix(text: str, fix: str) -> None:
    """A decimal string with more places, or more digits, than money has was told to be "a
    JSON number or a decimal string like "49.90"", which it is."""
    result = decode(_record(_usage(charge=text)), EventType.USAGE)
    assert isinstance(result, DeadLetter), result
    assert result.message.startswith("charge: "), result.message
    assert fix in result.message, result.message


def _time_refused(written: str) -> DeadLetter:
    """The dead letter of a usage event whose `occurred_at` is `written`."""
    result = decode(_record(_usage(occurred_at=written)), EventType.USAGE)
    assert isinstance(result, DeadLetter), result
    return result


GO_STRING = (
    "write RFC 3339, not Go's time.String() (a debugging form): format with "
    "t.Format(time.RFC3339Nano), e.g. 2026-12-05T13:10:00+08:00"
)
"""Go's `time.String()` (`fmt.Sprint(t)`, `%v`), which got the general hint."""


class TestTimeFormsOfOtherLibraries:
    """Times a producer's library writes that are not RFC 3339 got the general "write an
    RFC 3339 time with a UTC offset", naming nothing to change (producer walk-through):
    Java's `ZonedDateTime.toString()` (a zone name in brackets, and zero seconds left
    out), an offset of hours only (`+08`, as PostgreSQL's text output and `strftime`'s
    `%z` cut down write it), Unix time written as text, and Go's `time.String()`."""

    @pytest.mark.parametrize(
        ("written", "fix"),
        [
            (
                "2026-12-07T19:00+08:00[Asia/Shanghai]",
                "write no zone name in brackets after the offset (Java's "
                "ZonedDateTime.toString() adds it, and leaves out zero seconds): format with "
                "DateTimeFormatter.ISO_OFFSET_DATE_TIME, e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-12-07T11:00:00Z[UTC]",
                "write no zone name in brackets after the offset (Java's "
                "ZonedDateTime.toString() adds it, and leaves out zero seconds): format with "
                "DateTimeFormatter.ISO_OFFSET_DATE_TIME, e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-12-07T19:00:00+08",
                "write the UTC offset's minutes too (+08:00, not +08), e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-12-07T19:00:00.5+08",
                "write the UTC offset's minutes too (+08:00, not +08), e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "1796641200",
                "a time is text in RFC 3339, not an epoch number (seconds or milliseconds) "
                "in quotes: e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "1796641200123",
                "a time is text in RFC 3339, not an epoch number (seconds or milliseconds) "
                "in quotes: e.g. 2026-12-05T13:10:00+08:00",
            ),
            ("2026-12-07 13:04:05.123 +0000 UTC m=+0.000", GO_STRING),  # with its monotonic
            ("2026-12-07 13:04:05.123456789 +0800 CST", GO_STRING),
            ("2026-12-07 13:04:05 +0800 +08", GO_STRING),  # a zone with no abbreviation
            ("2026-12-07 13:04:05 -0330 NST m=-12.5", GO_STRING),
        ],
    )
    def test_the_message_names_what_to_change(self, written: str, fix: str) -> None:
        result = _time_refused(written)
        assert result.reason is RejectReason.INVALID_EVENT
        assert result.message == f"occurred_at: {fix}"


@pytest.mark.parametrize("written", ["49,90", "5,5", "-0,05", "12,3456"])
def test_money_with_a_decimal_comma_says_write_a_point(written: str) -> None:
    """A decimal comma (a German, French or Russian locale's `49,90`) was told "no exponent,
    no thousands separator", neither of which it has (producer walk-through). The
    message quotes no value: `deadletter show` counts one line for every amount."""
    result = decode(_record(_usage(kind="sms", quantity=1, charge=written)), EventType.USAGE)
    assert isinstance(result, DeadLetter)
    assert result.reason is RejectReason.INVALID_EVENT
    assert result.message == (
        'charge: write the decimal separator as a point ("49.90", not "49,90": a '
        "locale's decimal comma)"
    )


@pytest.mark.parametrize("written", ["1,000", "1,000.00", "12,345,678"])
def test_money_with_thousands_separators_keeps_its_message(written: str) -> None:
    """`1,000` may be a thousand or one: not taken for a decimal comma."""
    result = decode(_record(_usage(kind="sms", quantity=1, charge=written)), EventType.USAGE)
    assert isinstance(result, DeadLetter)
    assert "no thousands separator" in result.message


class TestTimeFormsNamedByTheirFix:
    """Times refused with only the general "write an RFC 3339 time with a UTC offset",
    which named nothing to change (producer walk-through): a leap second, a comma before
    the fraction (ISO 8601 allows it, Python's logging writes it), a space before the
    offset, an RFC 2822 (email, HTTP) date, JavaScript's `Date.toString()`, an ISO week
    date and an ordinal date. Each message says what to change, and quotes nothing."""

    @pytest.mark.parametrize(
        ("written", "fix"),
        [
            (
                "2016-12-31T23:59:60Z",
                "write no leap second (second 60): write the second before it, 59, e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "2016-12-31T23:59:60.5+00:00",
                "write no leap second (second 60): write the second before it, 59, e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-12-07T10:00:00,123+08:00",
                "write a point before the fraction of a second (00.123, not 00,123), e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-12-07T10:00:00 +08:00",
                "write no space before the UTC offset (00+08:00, not 00 +08:00), e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-12-07T10:00:00.250 Z",
                "write no space before the UTC offset (00+08:00, not 00 +08:00), e.g. "
                "2026-12-05T13:10:00+08:00",
            ),
            (
                "Mon, 07 Dec 2026 10:00:00 +0800",
                "write RFC 3339, not an RFC 2822 (email or HTTP) date: Python's isoformat(), "
                "Java's ISO_OFFSET_DATE_TIME, e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "7 Dec 2026 02:00:00 GMT",
                "write RFC 3339, not an RFC 2822 (email or HTTP) date: Python's isoformat(), "
                "Java's ISO_OFFSET_DATE_TIME, e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "Mon Dec 07 2026 10:00:00 GMT+0800 (China Standard Time)",
                "write an RFC 3339 time, not JavaScript's Date.toString(): write "
                "date.toISOString(), e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-W50-1T10:00:00+08:00",
                "write the calendar day (year-month-day), not an ISO week date or a day of "
                "the year, e.g. 2026-12-05T13:10:00+08:00",
            ),
            (
                "2026-341T10:00:00+08:00",
                "write the calendar day (year-month-day), not an ISO week date or a day of "
                "the year, e.g. 2026-12-05T13:10:00+08:00",
            ),
        ],
    )
    def test_the_message_names_what_to_change(self, written: str, fix: str) -> None:
        result = _time_refused(written)
        assert result.reason is RejectReason.INVALID_EVENT
        assert result.message == f"occurred_at: {fix}"

    @pytest.mark.parametrize(
        ("written", "fixes"),
        [
            (
                "2026-12-07T10:00:00 +0800",
                "write no space before the UTC offset (00+08:00, not 00 +08:00); write the UTC "
                "offset with a colon (+08:00, not +0800)",
            ),
            (
                "2026-12-07 10:00:00+0800",
                "write a T between the date and the time; write the UTC offset with a colon "
                "(+08:00, not +0800)",
            ),
            (
                "2026-12-07 10:00",
                "write a T between the date and the time; write the seconds (13:10:00, not "
                "13:10); add a UTC offset",
            ),
            (
                "2026-12-07T10:00:00,5 +08",
                "write a point before the fraction of a second (00.123, not 00,123); write no "
                "space before the UTC offset (00+08:00, not 00 +08:00); write the UTC "
                "offset's minutes too (+08:00, not +08)",
            ),
            (
                "2016-12-31 23:59:60",
                "write a T between the date and the time; write no leap second (second 60): "
                "write the second before it, 59; add a UTC offset",
            ),
            (
                "9926-12-07 10:00:00+08:00",
                "write a T between the date and the time; write a real day in 1970-9898 and "
                "time of day (hours 00-23)",
            ),
        ],
    )
    def test_a_time_with_several_faults_is_told_every_fix_at_once(
        self, written: str, fixes: str
    ) -> None:
        """`2026-12-07 10:00:00+0800` was told to write a T, and once fixed, sent again and
        refused again, to write the offset's colon: one fix a round trip."""
        result = _time_refused(written)
        assert result.message == f"occurred_at: {fixes}, e.g. 2026-12-05T13:10:00+08:00"
        assert written not in result.message

    def test_a_calendar_day_of_three_digits_is_still_the_general_form(self) -> None:
        """`2026-1207`, a day of the year's shape but four digits, is not an ordinal date."""
        result = _time_refused("2026-1207T10:00:00+08:00")
        assert "write an RFC 3339 time with a UTC offset" in result.message

    def test_minus_zero_offset_is_the_utc_instant(self) -> None:
        """RFC 3339's `-00:00` ("UTC, local offset unknown") is the instant in UTC: taken,
        as `Z` is: quiet hours and local days are on the profile's `timezone`, and the task
        writes its times in UTC, as for `Z`."""
        result = decode(_record(_usage(occurred_at="2026-12-07T02:00:00-00:00")), EventType.USAGE)
        assert isinstance(result, UsageEvent), result
        assert result.occurred_at == dt.datetime(2026, 12, 7, 2, tzinfo=dt.UTC)
        assert result.occurred_at.utcoffset() == dt.timedelta(0)


def test_events_check_names_the_fix_of_each_time_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments events check` says the worker's message for each form, line by line."""
    forms = {
        "2016-12-31T23:59:60Z": "write no leap second",
        "2026-12-07T10:00:00,123+08:00": "write a point before the fraction",
        "2026-12-07T10:00:00 +08:00": "write no space before the UTC offset",
        "Mon, 07 Dec 2026 10:00:00 +0800": "write RFC 3339, not an RFC 2822",
        "2026-W50-1T10:00:00+08:00": "write the calendar day (year-month-day)",
    }
    path = tmp_path / "usage.jsonl"
    path.write_bytes(
        b"".join(b'{"type": "usage", ' + _usage(occurred_at=t)[1:] + b"\n" for t in forms)
    )
    assert main(["events", "check", str(path)]) == 1
    said = capsys.readouterr().out
    for line, fix in enumerate(forms.values(), 1):
        assert f"usage.jsonl:{line}: invalid_event (usage): occurred_at: {fix}" in said, said
