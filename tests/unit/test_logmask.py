"""Subscriber numbers are masked in every log record, message and traceback alike."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, Iterator

import orjson
import pytest
from pydantic import ValidationError

from moments.logformat import json_formatter
from moments.logmask import install_pii_masking, mask_text
from moments.models import UsageEvent
from moments.settings import Settings, load_settings

SUB, IMEI = "13800138001", "356938035643809"
SHORT5, SHORT6 = "97531", "864209"  # the contract allows subscriber ids of 5 to 20 digits
TASK_ID = "c7f406e2d4b383b24203ade1be2217af"


@pytest.fixture
def masking() -> Iterator[None]:
    install_pii_masking(True)
    yield
    install_pii_masking(True)


class TestMaskText:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"key={SUB}", "key=138****8001"),
            (f'"subscriber_id": "{SUB}"', '"subscriber_id": "138****8001"'),
            (f"imei {IMEI}", "imei 356********3809"),
            ("partition 3 offset 123456 pid 4242", "partition 3 offset 123456 pid 4242"),
            ("2026-11-23 10:20:46,123", "2026-11-23 10:20:46,123"),
        ],
    )
    def test_digit_runs_of_msisdn_length(self, text: str, expected: str) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # ids are strings: quoted in reprs and JSON, whatever their length
            (f"'{SHORT5}' is not a field", "'*****' is not a field"),
            (f'{{"subscriber_id":"{SHORT6}"}}', '{"subscriber_id":"******"}'),
            (
                f"{{'subscriber_id': '{SHORT5}', 'count': 12345}}",
                "{'subscriber_id': '*****', 'count': 12345}",
            ),
            # after a field name that holds one, quoted or not
            (f"subscriber_id={SHORT5} msisdn: {SHORT6}", "subscriber_id=***** msisdn: ******"),
            (f"counterparty={SHORT5}", "counterparty=*****"),
            # Kafka keys and values in aiokafka's DEBUG lines are bytes literals
            (f"Sending (key=b'{SHORT5}' value=b'x')", "Sending (key=b'*****' value=b'x')"),
            # a record batch: the key follows its length byte and runs into the next one
            (
                rf"b'\x00\x01\xc6\x02\x00\n{SHORT5}\xae\x02{{}}\x0e'",
                r"b'\x00\x01\xc6\x02\x00\n*****\xae\x02{}\x0e'",
            ),
            (rf"b'\x00\n{SHORT5}4{{\x0e'", r"b'\x00\n******{\x0e'"),
        ],
    )
    def test_short_ids_where_they_show_as_ids(self, text: str, expected: str) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "processed 123456 events in 0.05s from partition 3, offset 654321",
            "metrics on http://0.0.0.0:50123/metrics (pid 24242)",
            "sleeping=0.505123456789 drift=-0.00512345678 since_epoch=3.0211234567",
            f"task {TASK_ID} published",
            "topic='t8094743d2f.telecom.usage' partition=1",
            "2026-12-03 16:55:13,922 INFO took 12345 ms",
            "a card 4111 1111 1111 1111, uuid f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "brokers 10.0.0.1:9092,10.0.0.2:9092 version 0.15.3",
        ],
    )
    def test_ordinary_numbers_stay_readable(self, text: str) -> None:
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        "text",
        [
            # the Settings repr in SIGUSR1's stack dump: a setting's value is no subscriber
            "Settings(batch_size=500, ledger_ttl_seconds=34560000, lateness_seconds=3600)",
            "MOMENTS_LEDGER_TTL_SECONDS=34560000 MOMENTS_ROCKSDB_BLOCK_CACHE_MIB=10485760",
            '{"ledger_ttl_seconds": 34560000, "rocksdb_write_buffer_mib": 12345678}',
            # a name that says it holds a duration, a size or a count
            "wait_seconds = 86400000 deadline_ms=1733529600000 payload_bytes: 12582912",
            "uptime_s=12345678.25 records_count=10000000",
        ],
    )
    def test_a_setting_or_a_quantity_after_its_name_stays_readable(self, text: str) -> None:
        """`kill -USR1` printed `ledger_ttl_seconds=345*0000`: a number after a setting's
        name, or after a name ending in a unit or `_count`, is what the name says."""
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"ledger_ttl_seconds=60 key={SUB}", "ledger_ttl_seconds=60 key=138****8001"),
            (f"subscriber_id_seconds={SUB}", "subscriber_id_seconds=138****8001"),
            (f"called={SUB} msisdn={SUB}", "called=138****8001 msisdn=138****8001"),
            (f"batch_size='{SUB}'", "batch_size='138****8001'"),
            # a one-word setting, or a setting's name in another case, is a word of text
            (f"Store: {SUB}", "Store: 138****8001"),
            (f"store={SUB} rules: {SUB}", "store=138****8001 rules: 138****8001"),
            (f"Batch_Size={SUB}", "Batch_Size=138****8001"),
            (f"SUBSCRIBER_ID_SECONDS={SUB}", "SUBSCRIBER_ID_SECONDS=138****8001"),
        ],
    )
    def test_an_id_beside_a_setting_is_still_masked(self, text: str, expected: str) -> None:
        """Only the number right after a setting's or a quantity's name is left alone;
        an id field's name wins over a unit, and a quoted string is an id as before."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"SUBSCRIBER_ID={SHORT5}", "SUBSCRIBER_ID=*****"),
            (f"subscriberId: {SHORT5}", "subscriberId: *****"),
            (
                f"SubscriberID={SHORT6} subscriber-id: {SHORT5}",
                "SubscriberID=****** subscriber-id: *****",
            ),
            (f"subscriber id {SHORT5}", "subscriber id *****"),
            (f"MSISDN={SHORT5} Msisdn: {SHORT5}", "MSISDN=***** Msisdn: *****"),
            (f"counterParty={SHORT5} IMEI={SHORT5}", "counterParty=***** IMEI=*****"),
            # an id's name wins over a unit, whatever the number's length
            (f"subscriber_id_seconds={SHORT5}", "subscriber_id_seconds=*****"),
            (f"SUBSCRIBER_ID_SECONDS={SHORT5}", "SUBSCRIBER_ID_SECONDS=*****"),
        ],
    )
    def test_a_short_id_after_its_field_name_in_any_case(self, text: str, expected: str) -> None:
        """After `subscriber_id=` a 5-digit id was masked, after `SUBSCRIBER_ID=` (an env
        dump, a Java client's log) or `subscriberId:` (a JSON-minded producer's) it was
        not: only a name written as the contract's, in lower case, was an id's."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"subscriber_ids=[{SHORT5}, {SHORT6}]", "subscriber_ids=[*****, ******]"),
            (f"subscriber_ids=({SHORT5}, {SHORT6})", "subscriber_ids=(*****, ******)"),
            (f"msisdns: [{SHORT5}, 7, {SHORT6}]", "msisdns: [*****, 7, ******]"),
            (f"imei={SHORT5},{SHORT6} count=12345", "imei=*****,****** count=12345"),
            (f"subscriberIds=('{SHORT5}', '{SHORT6}')", "subscriberIds=('*****', '******')"),
            (f'{{"msisdns": [{SHORT5}, {SHORT6}]}}', '{"msisdns": [*****, ******]}'),
            (
                f'"counterparties": [\n  {SHORT5},\n  {SHORT6}\n]',
                '"counterparties": [\n  *****,\n  ******\n]',
            ),
            (
                "subscriber_ids=[8613800000001, 8613800000002]",
                "subscriber_ids=[861******0001, 861******0002]",
            ),
            (f"msisdn={SHORT5}, offset=12345", "msisdn=*****, offset=12345"),
        ],
    )
    def test_every_id_of_a_list_after_its_field_name(self, text: str, expected: str) -> None:
        """`msisdns: [97531, 97532]` showed every id but the first: only the number right
        after the name was taken for an id."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "SubscriberIdleTimeout=30000",
            "SUBSCRIBER_IDLE_TIMEOUT=30000 nosubscriber_id_here=12345",
            "anytimeinterval=12345 premsisdnx: 12345",
            "SubscriberIdleTimeout_ms=30000000",
        ],
    )
    def test_an_id_name_inside_another_word_is_none(self, text: str) -> None:
        """`SubscriberIdleTimeout=30000` showed `*****`: an id's name was looked for inside
        any word, so a timeout or a count under a name that merely contained one was
        masked."""
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"event.subscriber_id={SHORT5}", "event.subscriber_id=*****"),
            (f"x_msisdn={SHORT5} callerMsisdn: {SHORT6}", "x_msisdn=***** callerMsisdn: ******"),
            (f"IMEI2={SHORT5} imei_1={SHORT6}", "IMEI2=***** imei_1=******"),
            (f"MSISDNList={SHORT5} IMEIValue: {SHORT6}", "MSISDNList=***** IMEIValue: ******"),
        ],
    )
    def test_an_id_name_as_part_of_a_longer_name_is_one(self, text: str, expected: str) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdns=[{SHORT5}, None, {SHORT6}]", "msisdns=[*****, None, ******]"),
            (f"msisdns={{{SHORT5}: 3, {SHORT6}: 4}}", "msisdns={*****: 3, ******: 4}"),
            (f"imeis=[[{SHORT5}], [{SHORT6}]]", "imeis=[[*****], [******]]"),
        ],
    )
    def test_every_id_inside_the_brackets_after_an_id_name(self, text: str, expected: str) -> None:
        """The ids after a None, a dict's values or a closing bracket showed in clear."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "subscriber_ids: 8613800001111 8613800002222",
                "subscriber_ids: 861******1111 861******2222",
            ),
            (f"subscriber_ids: {SHORT5} {SHORT6}", "subscriber_ids: ***** ******"),
            (f"msisdns={SHORT5}  {SHORT6}\t{SHORT5}", "msisdns=*****  ******\t*****"),
            # the ids end at the first word: what follows is a count or a duration
            (
                f"msisdns: {SHORT5} {SHORT6} in 12345 ms, 42 retries",
                "msisdns: ***** ****** in 12345 ms, 42 retries",
            ),
            (f"subscriber_id={SHORT5} took 12345 ms", "subscriber_id=***** took 12345 ms"),
            (f"subscriber_id={SHORT5} 12345.678 s", "subscriber_id=***** 12345.678 s"),
            # a number written in groups after the ids is still masked as one
            (f"msisdns: {SHORT5} 138 0013 8001", "msisdns: ***** 138****8001"),
        ],
    )
    def test_space_separated_ids_after_an_id_name(self, text: str, expected: str) -> None:
        """`subscriber_ids: 97531 864209` showed every id but the first: only a comma
        joined the ids of a list written without brackets."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # the next line of a message is not the list's: its count stays
            (
                f"subscriber_id={SHORT5}\n12345 records committed",
                "subscriber_id=*****\n12345 records committed",
            ),
            (f"msisdns: {SHORT5} {SHORT6}\n  12345 ms", "msisdns: ***** ******\n  12345 ms"),
            # a number with its unit (or another word) written on it is no id
            (f"subscriber_id={SHORT5} 12345ms", "subscriber_id=***** 12345ms"),
            (f"msisdn={SHORT5} {SHORT6} 12345us", "msisdn=***** ****** 12345us"),
            # what still holds: a pretty-printed list's ids, joined by commas
            (f"msisdns: {SHORT5},\n  {SHORT6}", "msisdns: *****,\n  ******"),
        ],
    )
    def test_space_separated_ids_end_at_the_line_and_at_a_word(
        self, text: str, expected: str
    ) -> None:
        """Spaces joined a line's next number to the ids before it: the space list read
        on over a newline (`subscriber_id=97531` then a line `12345 records committed`)
        and into a number with its unit written on it (`12345ms`)."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdns={SHORT5}/{SHORT6}", "msisdns=*****/******"),
            (f"msisdns={SHORT5};{SHORT6}", "msisdns=*****;******"),
            (f"msisdns={SHORT5}|{SHORT6}", "msisdns=*****|******"),
            (
                f"imeis: {SHORT5} | {SHORT6} ; {SHORT5} / {SHORT6}",
                "imeis: ***** | ****** ; ***** / ******",
            ),
            (f"msisdn={SHORT5}; offset=12345", "msisdn=*****; offset=12345"),
        ],
    )
    def test_ids_separated_by_a_slash_semicolon_or_bar(self, text: str, expected: str) -> None:
        """`msisdns=97531/864209` (or `;`, `|`) showed every id but the first."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"counter party {SHORT5}", "counter party *****"),
            ("counter party 8613800001111", "counter party 861******1111"),
            (f"Counter Party: {SHORT6}", "Counter Party: ******"),
            (f"counter parties: {SHORT5}, {SHORT6}", "counter parties: *****, ******"),
        ],
    )
    def test_counter_party_written_with_a_space(self, text: str, expected: str) -> None:
        """`subscriber id 97531` was masked, `counter party 97531` was not."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('subscriber_id="1234"', 'subscriber_id="****"'),
            ("msisdn='12'", "msisdn='**'"),
            (
                '{"subscriber_id": "1234", "count": "12"}',
                '{"subscriber_id": "****", "count": "12"}',
            ),
            ("msisdns=['1234', None, \"567\"]", "msisdns=['****', None, \"***\"]"),
            ("msisdns: '1234', '5678'", "msisdns: '****', '****'"),
            (f"msisdns: '{SHORT5}', '1234'", "msisdns: '*****', '****'"),
            (f"msisdns='{SHORT5}';'1234'", "msisdns='*****';'****'"),
            (
                "subscriber_id=123456789012345678901234",
                "subscriber_id=123*****************1234",
            ),
            (
                "imei: 1234567890123456789012, 97531",
                "imei: 123***************9012, *****",
            ),
            ('msisdn="123456789012345678901"', 'msisdn="123**************8901"'),
            ("msisdns=[123456789012345678901]", "msisdns=[123**************8901]"),
        ],
    )
    def test_short_quoted_and_over_long_ids_after_an_id_name(
        self, text: str, expected: str
    ) -> None:
        """An id is a string, of any length where its name says it is one: `"1234"` (a
        producer's id shorter than the contract's 5 digits) and an unquoted one over 20
        digits (one the contract refuses, which a log line still quotes) showed in clear."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "encounter party=12345 counterpartition: 12345",
            "msisdns: 3 found, subscriber_ids_count=42",
            "msisdn lookup of 12345 rows in 1234 ms",
        ],
    )
    def test_words_and_short_numbers_near_an_id_name_stay_readable(self, text: str) -> None:
        """What the id's name is not followed by directly, and unquoted numbers under 5
        digits (counts), are no id."""
        assert mask_text(text) == text

    def test_a_setting_with_a_unit_still_stays_readable(self) -> None:
        assert mask_text("timeout_s=12 ledger_ttl_seconds=34560000") == (
            "timeout_s=12 ledger_ttl_seconds=34560000"
        )

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call 138-0013-8001 now", "call 138****8001 now"),
            ("call 138 0013 8001 now", "call 138****8001 now"),
            ("from +86 138 0013 8001.", "from 861******8001."),
            ("from 86-138-0013-8001", "from 861******8001"),
        ],
    )
    def test_a_number_written_in_groups(self, text: str, expected: str) -> None:
        """A producer's `+86 138 0013 8001` in a dead letter or a log line was shown whole
        (re-check review)."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdn={SHORT5}, 138 0013 8001", "msisdn=*****, 138****8001"),
            (f"msisdns={SHORT5}, 138-0013-8001 done", "msisdns=*****, 138****8001 done"),
            (f"msisdns: 138 0013 8001, {SHORT5}", "msisdns: 138****8001, *****"),
            ("msisdn=+86 138 0013 8001", "msisdn=861******8001"),
            (f"msisdns=+86-138-0013-8001;{SHORT6}", "msisdns=861******8001;******"),
        ],
    )
    def test_a_number_written_in_groups_in_a_list_after_an_id_name(
        self, text: str, expected: str
    ) -> None:
        """`msisdn=97531, 138 0013 8001` showed `0013 8001`: the list after the name took
        `138` for its next id and the rest was no number's shape; a short id after a
        grouped one showed whole."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("value 123456789012345678901234 here", "value 123*****************1234 here"),
            ("1234567890123456789012345", "123******************2345"),
            ("key '123456789012345678901'", "key '123**************8901'"),
        ],
    )
    def test_a_run_of_over_20_digits_without_an_id_name(self, text: str, expected: str) -> None:
        """A run of 21 digits or more in free text showed whole: the net for free text
        took 7 to 20 digits, and a longer run matched none of it."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (rf"msisdns=\"{SHORT5}\", \"{SHORT6}\"", r"msisdns=\"*****\", \"******\""),
            (r"msisdns=[\"123\", \"456\"]", r"msisdns=[\"***\", \"***\"]"),
            (rf"imeis: \'{SHORT5}\' \'{SHORT6}\'", r"imeis: \'*****\' \'******\'"),
            (rf'"{{\"msisdn\": \"{SHORT5}\", \"n\": 1}}"', r'"{\"msisdn\": \"*****\", \"n\": 1}"'),
            (r'"{\"msisdns\": [\"12\", \"34\"]}"', r'"{\"msisdns\": [\"**\", \"**\"]}"'),
            (rf"\\\"imei\\\": \\\"{SHORT5}\\\"", r"\\\"imei\\\": \\\"*****\\\""),
            (rf"note=\"{SHORT6}\"", r"note=\"******\""),
        ],
    )
    def test_ids_in_escaped_quotes(self, text: str, expected: str) -> None:
        """JSON written inside a string (`"{\\"msisdn\\": \\"97531\\"}"`) quotes its ids with
        `\\"`: the first id after a name was masked, the next ones of its list, a short one
        and a quoted one after no name showed in clear."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"subscriber_id={SHORT5} 12345 ms", "subscriber_id=***** 12345 ms"),
            (f"msisdns: {SHORT5} {SHORT6} 12345 s, done", "msisdns: ***** ****** 12345 s, done"),
            (f"imeis {SHORT5} 123456 MiB", "imeis ***** 123456 MiB"),
            # a word that is no unit, or a unit that is a name, ends nothing
            (f"msisdns: {SHORT5} {SHORT6} subscribers", "msisdns: ***** ****** subscribers"),
            (f"msisdns: {SHORT5} {SHORT6} ms=3", "msisdns: ***** ****** ms=3"),
        ],
    )
    def test_a_duration_with_its_unit_after_a_space_is_no_id(
        self, text: str, expected: str
    ) -> None:
        """`subscriber_id=97531 12345 ms` masked the duration: a number with its unit
        written on it (`12345ms`) ended the ids, one with a space before the unit did not."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('msisdn_count="3"', 'msisdn_count="3"'),
            ("msisdnCount: '12' MSISDN_COUNT=3", "msisdnCount: '12' MSISDN_COUNT=3"),
            ("subscriber_ids_count=12345678", "subscriber_ids_count=12345678"),
            ('{"imei_count": 12345}', '{"imei_count": 12345}'),
            # a quoted id of 5 digits or more is an id's string, whatever the name
            (f'msisdn_count="{SHORT5}"', 'msisdn_count="*****"'),
            # a dict by id: its keys are ids
            (f"msisdn_count={{{SHORT5}: 3}}", "msisdn_count={*****: 3}"),
            # an id's name ending in another unit is still an id's (`_seconds`)
            (f"subscriber_id_seconds='{SHORT5}'", "subscriber_id_seconds='*****'"),
        ],
    )
    def test_a_count_of_ids_is_no_id(self, text: str, expected: str) -> None:
        """`msisdn_count="3"` showed `msisdn_count="*"`: the id's name in it made the count
        an id."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "GET /v1/tasks?msisdn=%2B8613800138001&n=1",
                "GET /v1/tasks?msisdn=%2B861******8001&n=1",
            ),
            ("GET /v1/tasks?msisdn=%2B86+138+0013+8001", "GET /v1/tasks?msisdn=%2B861******8001"),
            ("GET /v1/msisdns/138%200013%208001/tasks", "GET /v1/msisdns/138****8001/tasks"),
            (f"GET /v1/tasks?msisdn=%2B{SHORT5}&n=1", "GET /v1/tasks?msisdn=%2B*****&n=1"),
            ("Sending (key=b'138 0013 8001')", "Sending (key=b'138****8001')"),
            (
                f"msisdns: '{SUB}', '138 0013 8001'",
                "msisdns: '138****8001', '138****8001'",
            ),
            # a hex string's digits stay as they are
            (f"task {TASK_ID}", f"task {TASK_ID}"),
        ],
    )
    def test_numbers_in_urls_payloads_and_quoted_groups(self, text: str, expected: str) -> None:
        """Found by generated lines (test_logmask_fuzz.py): a number after `%2B` (a URL's
        `+`) was taken for a hex string's digits, one written in groups with a URL's
        spaces (`+`, `%20`) or inside a bytes literal showed whole, and a quoted grouped
        number after another id lost only its first group."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call +44 20 7946 0958 now", "call 442*****0958 now"),
            ("call +1 415 555 2671", "call 141****2671"),
            ("+86 10 8888 6666", "861*****6666"),
            ("from 0755 8888 6666", "from 075*****6666"),
            ("counterparty=+44 20 7946 0958, 97531", "counterparty=442*****0958, *****"),
            ("GET /v1/calls/%2B44%2020%207946%200958", "GET /v1/calls/%2B442*****0958"),
            ("call +44 7911 123456", "call 447*****3456"),
            # a mobile number's groups after another number's are that number's
            (
                "msisdns: +86 10 8888 6666 130 0000 0001",
                "msisdns: 861*****6666 130****0001",
            ),
            ("call +86 10 8888 6666 0755 8888 6666", "call 861*****6666 075*****6666"),
            # a time's offset, a date, small numbers after a plus: no phone number
            ("2026-12-07 10:20:43+08:00 x", "2026-12-07 10:20:43+08:00 x"),
            ("v +1 2 3, 2026-12-07 12:05", "v +1 2 3, 2026-12-07 12:05"),
            ("sleep +1 20 30, skew +31 52 13", "sleep +1 20 30, skew +31 52 13"),
        ],
    )
    def test_other_phone_numbers_written_in_groups(self, text: str, expected: str) -> None:
        """A called number abroad (`+44 20 7946 0958`, `+1 415 555 2671`) or a landline
        (`+86 10 8888 6666`, `0755 8888 6666`) showed whole: only the grouping of a
        mobile number (3, 4 and 4 digits) was read as one number."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call 138 00138 001 now", "call 138****8001 now"),
            ("call 1380 013 8001", "call 138****8001"),
            ("call 1 3800 138 001", "call 138****8001"),
            ("from +86 13 800 138 001", "from 861******8001"),
            ("msisdns: 13 800 138001 97531", "msisdns: 138****8001 *****"),
            ("call 138.0013.8001 now", "call 138****8001 now"),
            ("call (010) 8888 6666", "call 010****6666"),
            ("call (0755) 8888-6666", "call 075*****6666"),
            (
                "imei 35-209900-176148-1, sv 35 209900 176148 23",
                "imei 352********1481, sv 352*********4823",
            ),
            # a fraction, a version, a time, other numbers in a row stay
            ("monotonic=132.12345678 s", "monotonic=132.12345678 s"),
            ("python 3.11.2 at 10:20:43", "python 3.11.2 at 10:20:43"),
            ("sizes 13 20 30 40 50", "sizes 13 20 30 40 50"),
        ],
    )
    def test_a_mobile_number_in_any_grouping(self, text: str, expected: str) -> None:
        """A mobile number's 11 digits grouped otherwise than 3, 4 and 4 (`138 00138 001`),
        with dots, or a landline's with its area code in brackets showed whole: no
        group had 7 digits."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"GET /v1/search?q=msisdn%3D{SHORT5} 200", "GET /v1/search?q=msisdn%3D***** 200"),
            (f"GET /v1/search?q=msisdn%253D{SHORT5}", "GET /v1/search?q=msisdn%253D*****"),
            (f"q=subscriber_id%3A%20{SHORT6}&n=1", "q=subscriber_id%3A%20******&n=1"),
            (f"q=%7B%22msisdn%22%3A%22{SHORT5}%22%7D", "q=%7B%22msisdn%22%3A%22*****%22%7D"),
            (f"q=msisdns%3D[{SHORT5}, {SHORT6}]", "q=msisdns%3D[*****, ******]"),
        ],
    )
    def test_a_short_id_after_a_url_escaped_sign(self, text: str, expected: str) -> None:
        """`msisdn%3D97531` (a query's `msisdn=97531` written inside another query's value,
        once or twice escaped) showed the id: after an id's name only the signs themselves
        (`=`, `:`, quotes) led to its value, not their URL escapes."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdn is {SHORT5}", "msisdn is *****"),
            (f"subscriber_id was {SHORT6}, retrying", "subscriber_id was ******, retrying"),
            (f"no task: counterparty of {SHORT5}", "no task: counterparty of *****"),
            (f"imei for {SHORT5} unknown", "imei for ***** unknown"),
            (f"msisdns are {SHORT5}, {SHORT6}", "msisdns are *****, ******"),
            (f"msisdns were [{SHORT5}, {SHORT6}]", "msisdns were [*****, ******]"),
            (f"msisdn: is {SHORT5}", "msisdn: is *****"),
            ("msisdn is '1234'", "msisdn is '****'"),
        ],
    )
    def test_a_short_id_after_a_joining_word(self, text: str, expected: str) -> None:
        """`msisdn is 97531` showed the id: only signs (`=`, `:`, a space) stood between an
        id's name and its value, not the words a sentence puts there."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdns for 86400 s, {SHORT5}", "msisdns for 86400 s, *****"),
            (f"msisdns for 86400 s; {SHORT5}, {SHORT6}", "msisdns for 86400 s; *****, ******"),
            (f"msisdns for 86400 s, 12345 ms, {SHORT5}", "msisdns for 86400 s, 12345 ms, *****"),
            # 7 digits or more with a unit are masked, as in free text
            (f"msisdns for 1234567 ms, {SHORT5}", "msisdns for ******* ms, *****"),
            # no comma after the unit: a space alone
            (f"msisdns for 86400 s {SHORT5}", "msisdns for 86400 s *****"),
            (f"msisdns for 86400 s 12345 ms {SHORT5}", "msisdns for 86400 s 12345 ms *****"),
            (f"msisdns for 1234567 ms {SHORT5} {SHORT6}", "msisdns for ******* ms ***** ******"),
            # and in brackets after it
            (f"msisdns for 86400 s [{SHORT5}, {SHORT6}]", "msisdns for 86400 s [*****, ******]"),
            (f"msisdns for 86400 s, ({SHORT5},)", "msisdns for 86400 s, (*****,)"),
            (f"msisdns for 1234567 ms [{SHORT5}]", "msisdns for ******* ms [*****]"),
        ],
    )
    def test_the_ids_after_a_duration_after_a_joining_word(self, text: str, expected: str) -> None:
        """`msisdns for 86400 s, 97531` showed `97531`: a duration after a joining word is
        no id, and the list after it was never read; `msisdns for 86400 s 97531`, without
        the comma, still showed it."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdn=None {SHORT5}", "msisdn=None *****"),
            (f"msisdns=null, {SHORT5} done", "msisdns=null, ***** done"),
            (f"msisdns={SHORT5}, None, {SHORT6}", "msisdns=*****, None, ******"),
            (f"msisdns: {SHORT5} None {SHORT6}", "msisdns: ***** None ******"),
        ],
    )
    def test_a_null_among_the_ids_after_an_id_name(self, text: str, expected: str) -> None:
        """`msisdn=None 97531` showed the id, and `msisdns=97531, None, 864209` the ids
        after the None: inside brackets a None was one of the list's items, written without
        them it ended the list."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "msisdn is None, offset 12345",
            "msisdn is 1234, count 12345",
            "msisdns for 86400 s, 12345 ms",
            "msisdns for 86400 s 12345 ms",
            "msisdns for 86400 s then 12345",
            "msisdn of 12345 bytes",
            "msisdn=None took 12345 ms",
            "msisdn count is 12345, msisdn_count is 12345",
            "msisdn issued 12345, msisdn format 12345",
        ],
    )
    def test_what_a_joining_word_does_not_make_an_id(self, text: str) -> None:
        """A duration or a size after a joining word is still what its unit says, a null
        id leaves the line's next words alone, and a word that merely starts with a joining
        word (`issued`) or any other word after the name is none."""
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call (415) 555-2671 now", "call 415***2671 now"),
            ("call (415)555-2671", "call 415***2671"),
            ("call +1 (415) 555-2671", "call 141****2671"),
            ("msisdn: (415) 555-2671", "msisdn: 415***2671"),
            ("counterparty=+1 (415) 555 2671, 97531", "counterparty=141****2671, *****"),
            ("GET /v1/calls/%28415%29%20555-2671", "GET /v1/calls/415***2671"),
            # a count in brackets before other numbers is none
            ("retries (3) 555 2671", "retries (3) 555 2671"),
            ("(123) 45 6789", "(123) 45 6789"),
        ],
    )
    def test_a_us_number_with_its_area_code_in_brackets(self, text: str, expected: str) -> None:
        """`(415) 555-2671` and `+1 (415) 555-2671` showed whole: only an area code starting
        with 0 (`(010) 8888 6666`) was read in brackets, and its line as 4 and 4 digits."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call 138 0013 8001x12 now", "call 138****8001x12 now"),
            ("call +86-138-0013-8001X205", "call 861******8001X205"),
            ("call (010) 8888 6666x3", "call 010****6666x3"),
            ("call +44 20 7946 0958x12", "call 442*****0958x12"),
            ("msisdn=138 0013 8001x12", "msisdn=138****8001x12"),
            ("call 13800138001x12", "call 138****8001x12"),
        ],
    )
    def test_a_number_in_groups_with_an_extension(self, text: str, expected: str) -> None:
        """`138 0013 8001x12` showed whole: a letter right after the last group made the
        groups part of a word, while `13800138001x12` was masked."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call +86 138 0013 8001abc", "call 861******8001abc"),
            ("call +86 138 0013 8001.5", "call 861******8001.5"),
            ("call +86 10 1300 0000abc", "call 861*****0000abc"),
            ("call +44 20 7946 0958.5", "call 442*****0958.5"),
            ("call 138 0013 8001abc now", "call 138****8001abc now"),
            ("call 138-0013-8001.25", "call 138****8001.25"),
            ("call (010) 8888 6666abc", "call 010****6666abc"),
            ("call 415-555-2671ms", "call 415***2671ms"),
            ("msisdn=+44 20 7946 0958_x", "msisdn=442*****0958_x"),
            ("b'+86 138 0013 8001abc'", "b'861******8001abc'"),
            # written whole after a plus (no hex string's digits: a number's) too
            ("call +8613800138001abc", "call +861******8001abc"),
            ("GET /v1/tasks?q=%2B8613800138001abc", "GET /v1/tasks?q=%2B861******8001abc"),
            # a word glued before its `+` (a configured name too: `moments-20261207+86 10
            # 0000 0000` showed the number, read only from where no word stood before)
            ("caller=x+44 20 7946 0958 ok", "caller=x442*****0958 ok"),
            ("id+86 10 0000 0000", "id861*****0000"),
            ("telecom.roaming.+86 10 0000 0000", "telecom.roaming.861*****0000"),
            # a fraction, a version, a row of small numbers stay
            ("monotonic=132.12345678 s", "monotonic=132.12345678 s"),
            ("c++ 11 2026", "c++ 11 2026"),
            ("x+1 20 30", "x+1 20 30"),
            ("python 3.11.2rc1", "python 3.11.2rc1"),
            ("sleep +1 20 30.5s", "sleep +1 20 30.5s"),
        ],
    )
    def test_a_number_in_groups_with_letters_or_a_fraction_on_it(
        self, text: str, expected: str
    ) -> None:
        """`+86 138 0013 8001abc` and `+86 138 0013 8001.5` showed whole, `+86 10 1300
        0000abc` as `861*1300 0000abc`: no letter nor fraction was to follow the last
        group, and the country code's groups backed off to the fewest that were followed
        by none, leaving the rest in clear. A number with a word glued on is still one."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call 415-555-2671 failed", "call 415***2671 failed"),
            ("call 1-415-555-2671", "call 141****2671"),
            ("msisdn: 415-555-2671, 97531", "msisdn: 415***2671, *****"),
            ("tel:415-555-2671;ext=12", "tel:415***2671;ext=12"),
            # spaces are a metrics line's numbers; a dash before a 0 or 1 no US number's
            ("sizes 512 256 1024, 415 555 2671", "sizes 512 256 1024, 415 555 2671"),
            ("ids 415-155-2671, 015-555-2671", "ids 415-155-2671, 015-555-2671"),
        ],
    )
    def test_a_us_number_written_with_dashes(self, text: str, expected: str) -> None:
        """`415-555-2671` showed whole: a US number was read with its area code in
        brackets only, and 3, 3 and 4 digits with spaces are as often a row of sizes."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"GET /v1/x?msisdns={SHORT5}%2C{SHORT6} 200", "GET /v1/x?msisdns=*****%2C****** 200"),
            (f"msisdns={SHORT5}%2c{SHORT6}%2F{SHORT5}", "msisdns=*****%2c******%2F*****"),
            (f"msisdns={SHORT5}%3B{SHORT6}%7C{SHORT5}", "msisdns=*****%3B******%7C*****"),
            (f"q=msisdns%3D{SHORT5}%252C{SHORT6}", "q=msisdns%3D*****%252C******"),
            (f"msisdns=%5B{SHORT5}%2C%20{SHORT6}%5D", "msisdns=%5B*****%2C%20******%5D"),
            (f"msisdns={SHORT5}+{SHORT6}&n=1", "msisdns=*****+******&n=1"),
            (f"msisdns={SHORT5}%20{SHORT6}", "msisdns=*****%20******"),
            (
                "q=msisdns%3D%5B%221234%22%2C%22567%22%5D",
                "q=msisdns%3D%5B%22****%22%2C%22***%22%5D",
            ),
            (
                "msisdns=13800138000%2C13900139000",
                "msisdns=138****8000%2C139****9000",
            ),
            # the list ends where the query's next field starts
            (f"msisdns={SHORT5}%2C{SHORT6}&offset=12345", "msisdns=*****%2C******&offset=12345"),
        ],
    )
    def test_every_id_of_a_url_encoded_list(self, text: str, expected: str) -> None:
        """`msisdns=97531%2C864209` showed every id but the first: a URL's escaped comma
        (or `/`, `;`, `|`, space) did not join the ids of a list."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("GET /v1/x?msisdn=%221234%22", "GET /v1/x?msisdn=%22****%22"),
            ("q=%7B%22msisdn%22%3A%221234%22%7D", "q=%7B%22msisdn%22%3A%22****%22%7D"),
            ("q=msisdn%3D%25221234%2522", "q=msisdn%3D%2522****%2522"),
            ("q=msisdn%3D%271234%27", "q=msisdn%3D%27****%27"),
            # a quoted string of 5 digits or more is an id's, after no name as well
            (f"q=%7B%22a%22%3A%22{SHORT5}%22%7D", "q=%7B%22a%22%3A%22*****%22%7D"),
            # a count's quoted number after no id's name stays
            ("q=%7B%22n%22%3A%221234%22%7D", "q=%7B%22n%22%3A%221234%22%7D"),
        ],
    )
    def test_a_short_id_in_url_encoded_quotes(self, text: str, expected: str) -> None:
        """`msisdn=%221234%22` showed the id where `msisdn="1234"` masks it: a URL's
        escaped quotes (`%22`, `%27`) made no quoted string."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("q=%2213800138001%22", "q=%22138****8001%22"),
            ("msisdn=%2213800138001%22", "msisdn=%22138****8001%22"),
            ("msisdns=%5B%2213800138001%22%5D", "msisdns=%5B%22138****8001%22%5D"),
            ("path /a%2013800138001", "path /a%20138****8001"),
            ("path /a%20138%200013%208001", "path /a%20138****8001"),
        ],
    )
    def test_a_url_escape_is_none_of_a_number_s_digits(self, text: str, expected: str) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call +86.138.0013.8001 now", "call 861******8001 now"),
            ("call +1.415.555.2671", "call 141****2671"),
            ('{"to": "+86.10.8888.6666"}', '{"to": "861*****6666"}'),
            ("caller=x+86.138.0013.8001.5", "caller=x861******8001.5"),
        ],
    )
    def test_a_number_with_dots_after_a_plus_and_its_code(self, text: str, expected: str) -> None:
        """`+86.138.0013.8001` showed whole: dots were read between a mobile number's groups
        (`138.0013.8001`), not after a country code."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text", ["aiokafka 0.10.0 on 10.0.0.1:9092", "v+1.2.3", "version 2.8.1.20261207"]
    )
    def test_a_version_or_an_address_with_dots_stays(self, text: str) -> None:
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("q=%252B8613800138001", "q=%252B861******8001"),
            ("q=%25252B8613800138001", "q=%25252B861******8001"),
        ],
    )
    def test_a_plus_escaped_twice_is_no_hex_string(self, text: str, expected: str) -> None:
        """`%252B8613800138001` (a `+` escaped twice, as a URL logged inside another's
        query writes it) showed whole: the escape's `B` and the `2` before it read as a
        hex string's letters and digits, where `%2B` alone was known as a URL's."""
        """`%2213800138001%22` showed `%221******8001%22`: the escape's `22` was read as the
        number's first digits, and the number's own were masked one place late."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # no country code starts with 0: a small offset, no phone number
            ("shift +004 53 49 done", "shift +004 53 49 done"),
            # a mobile number's groups hold 2 digits or more: a row of small numbers
            ("buckets 15 20 25 30 35 4", "buckets 15 20 25 30 35 4"),
        ],
    )
    def test_what_is_no_number_of_a_person_stays(self, text: str, expected: str) -> None:
        """A small offset after a `+` (`+004 53 49`) and a row of small numbers (`15 20 25
        30 35 4`) were masked as numbers of a person."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [f"msisdns: {SHORT5} {SHORT6} records", f"msisdns={SHORT5}, {SHORT6} events"],
    )
    def test_a_count_s_noun_after_the_ids_leaves_the_last_id_masked(self, text: str) -> None:
        """`msisdns: 97531 97532 records` is two ids as likely as an id and a count: read
        as a count, the second id showed."""
        assert SHORT6 not in mask_text(text)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdns={SHORT5}, 12345 ms", "msisdns=*****, 12345 ms"),
            (f"msisdns: {SHORT5},{SHORT6} 123456 MiB", "msisdns: *****,****** 123456 MiB"),
            (f"msisdns={SHORT5}; 12345 s, done", "msisdns=*****; 12345 s, done"),
            (f"msisdns={SHORT5}%2C12345 ms", "msisdns=*****%2C12345 ms"),
            (f"msisdns={SHORT5} / 12345.5 ms", "msisdns=***** / 12345.5 ms"),
            (f"msisdns=[{SHORT5}], 12345ms", "msisdns=[*****], 12345ms"),
            (f"imeis '{SHORT5}', 12345ms", "imeis '*****', 12345ms"),
            # a count's noun, a unit as a name or a quoted number is no unit's number
            (f"msisdns={SHORT5}, {SHORT6} records", "msisdns=*****, ****** records"),
            (f"msisdns={SHORT5}, {SHORT6} ms=3", "msisdns=*****, ****** ms=3"),
            (f"msisdns={SHORT5}, {SHORT6}abc", "msisdns=*****, ******abc"),
            (f"msisdns={SHORT5}, '{SHORT6}' ms", "msisdns=*****, '******' ms"),
        ],
    )
    def test_a_duration_with_its_unit_after_a_comma_is_no_id(
        self, text: str, expected: str
    ) -> None:
        """`msisdns=97531, 12345 ms` masked the duration: after a comma (a `/`, `;`, `|`)
        any number was the list's next id, while after a space a unit ended the list."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # not the US number (no area code starts with 0), as without the date
            ("015-555-2671 2026-12-07", "015-555-2671 2026-12-07"),
            ("415-555-2671 2026-12-07", "415***2671 2026-12-07"),
            ("138 0013 8001 2026-12-07T10:00:00Z", "138****8001 2026-12-07T10:00:00Z"),
            ("138-0013-8001 2026/12/07", "138****8001 2026/12/07"),
            ("+44 20 7946 0958 2026-12-07", "442*****0958 2026-12-07"),
            ("+86 10 8888 6666 2026-12-07", "861*****6666 2026-12-07"),
            ("1 3800 138 001 2026-12-07", "138****8001 2026-12-07"),
            # a date's year is no last group of a next number's head (`000 0000 2000`
            # refused `1300 000 0000`, shown whole: a property test's find)
            ("call 1300 000 0000 2000-01-01", "call 130****0000 2000-01-01"),
            (f"msisdn={SHORT5}, 138 0013 8001 2026-12-07", "msisdn=*****, 138****8001 2026-12-07"),
            ("b'138 0013 8001 2026-12-07'", "b'138****8001 2026-12-07'"),
            # a year alone after it: the mobile number's shape is read first, its 11 digits
            # masked, the 4 after them left (`138` was read as a country code before a
            # landline's `0013 8001 2026`, all masked)
            ("138 0013 8001 2026", "138****8001 2026"),
        ],
    )
    def test_a_date_after_a_number_in_groups_stays_whole(self, text: str, expected: str) -> None:
        """`015-555-2671 2026-12-07` read `015*******2026-12-07`: the date's year was taken
        for the last group of a number in groups (`015` its country code), its month too
        after a country code's groups (`+44 20 7946 0958 2026-12-07`)."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-12-07 138 0013 8001", "2026-12-07 138****8001"),
            ("2026/12/07 138-0013-8001", "2026/12/07 138****8001"),
            ("2026-12-07 13800138001", "2026-12-07 138****8001"),
            ("2026-12-07 0755 8888 6666", "2026-12-07 075*****6666"),
            ("10:00:00 138 0013 8001", "10:00:00 138****8001"),
            ("2026-12-07T10:00:00 138 0013 8001", "2026-12-07T10:00:00 138****8001"),
            ("b'2026-12-07 138 0013 8001'", "b'2026-12-07 138****8001'"),
            ("+44 20 7946 0958 10:00:00", "442*****0958 10:00:00"),
            ("+44 20 7946 0958 10:00", "442*****0958 10:00"),
            ("138 0013 8001 10:00:00", "138****8001 10:00:00"),
            ("b'+44 20 7946 0958 10:00:00'", "b'442*****0958 10:00:00'"),
            # a date before a mobile number was read as its first 8 digits
            ("1999-01-01 130 0000 0000", "1999-01-01 130****0000"),
            # a log line's milliseconds were read as its country code
            ("16:55:13,922 138 0013 8001", "16:55:13,922 138****8001"),
            # a number of a time's digits is still one, a mobile number in a date's shape too
            ("12:138 0013 8001", "12:138****8001"),
            ("1380-01-30-001", "138****0001"),
            # a dash after a `+` and a country code leads to a group, a date's shape too (a
            # time zone's `+8` and a date after a space stay)
            ("call +1-0000-01-01 00:00", "call 100**0101 00:00"),
            ("tz=+8 2026-12-07 10:00", "tz=+8 2026-12-07 10:00"),
        ],
    )
    def test_a_date_or_time_before_or_after_a_number_in_groups_stays_whole(
        self, text: str, expected: str
    ) -> None:
        """`2026-12-07 138 0013 8001` read `2026-12-071******8001`, the date's day taken for
        a country code (a time's seconds too), and `+44 20 7946 0958 10:00:00` read
        `442*******5810:00:00`, the hour taken for the number's last group."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # a landline (`+86 10` and 8 digits) before another (`010` and 8 digits): the
            # second's `010` was no group of the first, whose `1300 0000 010` read as a
            # mobile number, so the first matched from `10` and `+86`, `0000 0000` showed
            ("+86 10 1300 0000 010 0000 0000", "861*****0000 010****0000"),
            ("+86 10 8888 6666 130 0000 0001", "861*****6666 130****0001"),
            # a mobile number after +86 is read as one, a small number after it stays
            ("+86 138 0013 8001 12 times", "861******8001 12 times"),
            # two mobile numbers: `130` was read as a country code, `1300 0000 130` as a
            # mobile number grouped otherwise, and the second's `0000 0000` showed (a
            # property test's find), after a `+` too and with an extension on the second
            (
                "msisdns: 130 1300 0000 130 0000 0000x0",
                "msisdns: 130****0000 130****0000x0",
            ),
            ("130 1300 0000 130 0000 0000", "130****0000 130****0000"),
            ("+130 1300 0000 130 0000 0000", "130****0000 130****0000"),
            ("msisdns: 130 0000 0000x0", "msisdns: 130****0000x0"),
            # an extension or a country code in brackets no longer ends a list of ids: the
            # next one, 3 groups of 3 after a number, was read as a row's in free text
            (
                "msisdns: +86 10 0000 0000x0 100 000 000x0",
                "msisdns: 861*****0000x0 100**0000x0",
            ),
            (
                "msisdns: (+86) 13000000000 100 000 000x0",
                "msisdns: (+86) 130****0000 100**0000x0",
            ),
            # a mobile number grouped otherwise takes no head of the next number (`13000000
            # 130` read as one, the next's `0000 0000` showed: a property test's find)
            (
                "msisdns: 0000000x0 13000000 130 0000 0000",
                "msisdns: *******x0 130*0000 130****0000",
            ),
            ("call 13000000 130 0000 0000", "call 130*0000 130****0000"),
            ("call 13000000 010 8888 6666", "call 130*0000 010****6666"),
            (f"msisdn=(+86) {SHORT5}", "msisdn=(+86) *****"),
            (f"msisdns: {SHORT5}x12 {SHORT6}", "msisdns: *****x12 ******"),
        ],
    )
    def test_a_number_in_groups_whose_groups_start_another_is_masked_whole(
        self, text: str, expected: str
    ) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdns={SHORT5}, 12345 ms, 97532", "msisdns=*****, 12345 ms, *****"),
            (f"msisdns={SHORT5}; 12345 s; {SHORT6}", "msisdns=*****; 12345 s; ******"),
            (f"msisdns={SHORT5}, 12345ms, '1234'", "msisdns=*****, 12345ms, '****'"),
            (f"msisdns: {SHORT5} 12345 ms {SHORT6}", "msisdns: ***** 12345 ms ******"),
            (f"msisdns={SHORT5}, 1.5 s, {SHORT6}", "msisdns=*****, 1.5 s, ******"),
            # a number of 7 digits or more with a unit is masked, as in free text
            (f"msisdns={SHORT5}, 12345678 ms, 97532", "msisdns=*****, 123*5678 ms, *****"),
            # the first id is never a duration's number; the list still ends at a word
            (f"subscriber_id={SHORT5} s", "subscriber_id=***** s"),
            (f"msisdns={SHORT5}, 12345 ms, retry 97532", "msisdns=*****, 12345 ms, retry 97532"),
        ],
    )
    def test_an_id_after_a_number_with_a_unit_is_masked(self, text: str, expected: str) -> None:
        """`msisdns=97531, 12345 ms, 97532` showed `97532`: a number with a unit ended the
        list, and the ids after it were read as free text (5 digits: a count's)."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (f"msisdns={SHORT5}%2C12345%20ms", "msisdns=*****%2C12345%20ms"),
            (f"msisdns={SHORT5}%2012345%20ms", "msisdns=*****%2012345%20ms"),
            (f"msisdns={SHORT5}+12345%20ms", "msisdns=*****+12345%20ms"),
            (f"msisdns={SHORT5}%2C12345%2520s%2C{SHORT6}", "msisdns=*****%2C12345%2520s%2C******"),
            # a unit's letters starting a word after the escape are no unit
            (f"msisdns={SHORT5}%2C{SHORT6}%20msg", "msisdns=*****%2C******%20msg"),
        ],
    )
    def test_a_unit_after_a_url_escaped_space(self, text: str, expected: str) -> None:
        """`msisdns=97531%2C12345%20ms` masked the duration: a URL's `%20` before a unit was
        not read as the space `12345 ms` has."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "task f47ac10b-58cc-4372-a567-123456789012 done",
            "F47AC10B-58CC-4372-A567-123456789012",
            "urn:uuid:12345678-58cc-4372-a567-0e02b2c3d479",
            "member faust-0.15.3-f47ac10b-0455-6677-8899-a1b2c3d4e5f6",
            "id=f47ac10b-1388-0013-800a-bcdef0123456,",
        ],
    )
    def test_a_uuid_stays_whole(self, text: str) -> None:
        """`f47ac10b-58cc-4372-a567-123456789012` showed `...-123*****9012`: an all-digit
        group of a UUID was read as a number, and its 4-digit groups as a number in groups
        (`0455-6677-8899`); a UUID names a task or a member, never a subscriber."""
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # digits only: no UUID's hex, a number in groups
            (
                "12345678-1234-1234-1234-123456789012",
                "123*5678-1234-1234-1234-123*****9012",
            ),
            # an id's name still wins
            (
                "msisdn=13800138-58cc-4372-a567-0e02b2c3d479",
                "msisdn=138*0138-58cc-4372-a567-0e02b2c3d479",
            ),
        ],
    )
    def test_what_only_looks_like_a_uuid_is_masked(self, text: str, expected: str) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("call 8613800138000abc", "call 861******8000abc"),
            ("call 4420794609580abc failed", "call 442******9580abc failed"),
            ("handset 356938035643809abc", "handset 356********3809abc"),
            ("key id13800138000", "key id138****8000"),
            ("key deadbeef13800138000", "key deadbeef138****8000"),
            ("key abc8613800138000def", "key abc861******8000def"),
            ("task 1234567abcdef", "task *******abcdef"),
            # a digit past the letters, but 13 to 15 hex characters: no hex id's length
            ("call 8613800138000a1", "call 861******8000a1"),
            ("call 8613800138a1b2 failed", "call 861***0138a1b2 failed"),
            ("ref 1a8613800138b2", "ref 1a861***0138b2"),
            # a URL escape's hex digits are none of a hex string
            ("q=%2A8613800138000abc", "q=%2A861******8000abc"),
        ],
    )
    def test_a_number_glued_to_hex_letters_is_masked(self, text: str, expected: str) -> None:
        """`8613800138000abc` showed whole: any hex letter beside a run of digits made it a
        hex string's part, while a hex id (a task id, a trace id, a git sha) mixes digits
        and letters through its length; a number with a word on one side does not."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            f"task {TASK_ID} trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
            "traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "commit ab1234567cd8 and 9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6",
            "sha256 a1234567890b1234567890c1234567890d1234567890e1234567890f1234",
            "topic='t8094743d2f.telecom.usage'",
            # a short sha (up to 12) and a span id (16) with a long run of digits
            "commit 1234567a1b2c span 861380013800a1b2",
            # a hex string of 13 to 15 characters whose run of digits is short of a
            # number's (under 10): 12-15% of random ones were masked
            "ref 1234567a1b2c3 ref 9f8e7d6c1234567 ref 1b123456789a2",
        ],
    )
    def test_hex_ids_stay_readable(self, text: str) -> None:
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-12-13 800 138 001", "2026-12-13 800**8001"),
            ("call 612 345 678 now", "call 612**5678 now"),
            ("call 612-345-678", "call 612**5678"),
            ("10:00:00 612 345 678", "10:00:00 612**5678"),
            ("16:55:13,922 612 345 678", "16:55:13,922 612**5678"),
            ("612 345 678 2026-12-07", "612**5678 2026-12-07"),
            ("GET /v1/msisdns/612%20345%20678/tasks", "GET /v1/msisdns/612**5678/tasks"),
            (f"msisdns={SHORT5}, 612 345 678", "msisdns=*****, 612**5678"),
            ("call +34 612 345 678", "call 346****5678"),
            # after the country code of a country that writes its numbers so, without a
            # `+` (a row of numbers' first, `64 128 256 512`, stays), or any code and dashes
            ("call 34 612 345 678", "call 346****5678"),
            ("call 0048 512 345 678", "call 004******5678"),
            ("call 420 601 123 456", "call 420*****3456"),
            ("call 1-800-138-001", "call 180***8001"),
            # more groups after it with dashes: the number's, read from its code
            ("call 1-800-138-001-002", "call 180******1002"),
            ("call 1-800-138-001-02-7 now", "call 180******1027 now"),
            # a short number after it is no group of a row's: it stays, the number masked
            ("call 34 612 345 678 9", "call 346****5678 9"),
            ("call 0048 512 345 678 12 times", "call 004******5678 12 times"),
            # after a number with an extension on it: no row's (free text, as after an
            # id's name)
            ("130 0000 0000x0 100 000 000", "130****0000x0 100**0000"),
            ("call 13800138001x12 612 345 678", "call 138****8001x12 612**5678"),
            # a hex literal is no number with an extension: a row after it stays
            ("0x0 100 200 300 400", "0x0 100 200 300 400"),
            # among the ids after an id's name, whatever stands beside it
            ("msisdns: 612 345 678 138 0013 8001", "msisdns: 612**5678 138****8001"),
            (f"msisdns: 612 345 678 {SHORT5}", "msisdns: 612**5678 *****"),
            # after a country code too (`34 100 000` showed: a property test's find)
            (
                "msisdns: 34 100 000 000 13000000000x0",
                "msisdns: 341****0000 130****0000x0",
            ),
            (
                f"msisdns: {SHORT5} 34 612 345 678 138 0013 8001",
                "msisdns: ***** 346****5678 138****8001",
            ),
            # a row of numbers, one of 3-digit groups within it, stays
            (
                "sizes 128 256 512 1024, buckets 64 128 256 512",
                "sizes 128 256 512 1024, buckets 64 128 256 512",
            ),
            ("sizes 512 256 1024", "sizes 512 256 1024"),
            ("buckets 34 128 256 512 1024", "buckets 34 128 256 512 1024"),
            ("buckets 48 100 200 300 400 500", "buckets 48 100 200 300 400 500"),
        ],
    )
    def test_nine_digits_in_three_groups(self, text: str, expected: str) -> None:
        """`2026-12-13 800 138 001` showed `800 138 001`: 9 digits in three groups of 3, as a
        mobile number is written in Spain, Poland or the Czech Republic, were no shape of a
        number (the date's `13` only made the rest look like a Chinese mobile's groups)."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            # a number under 3 digits after it is no row's next group, as after a
            # country code (`34 612 345 678 9`): `612 345 678 9` showed whole
            ("612 345 678 9", "612**5678 9"),
            ("call 612 345 678 12 now", "call 612**5678 12 now"),
            # a number of 7 digits or more after the groups is no row's next group
            # either: `612 345 678 13800138001` read `678` as the country code of the
            # next number, and `612 345` showed
            ("612 345 678 13800138001", "612**5678 138****8001"),
            ("34 612 345 678 13000000000", "346****5678 130****0000"),
            # as among the ids after an id's name (`msisdns: 34 100 000 000 13000000000`)
            ("34 100 000 000 13000000000", "341****0000 130****0000"),
            ("x 34 100 000 000 13800138001 y", "x 341****0000 138****8001 y"),
        ],
    )
    def test_nine_digits_in_three_groups_before_a_short_or_long_number(
        self, text: str, expected: str
    ) -> None:
        """A number under 3 digits or of 7 or more after three groups of 3 is none of a
        row of numbers' (`128 256 512 1024` stays): the groups are a number, masked."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "sizes 128 256 512 1024",
            "buckets 100 200 300 400",
            "buckets 34 128 256 512 1024",
            "buckets 64 128 256 512",
        ],
    )
    def test_a_row_of_numbers_still_stays(self, text: str) -> None:
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("id138-0013-8001", "id138****8001"),
            ("caller id138 0013 8001 rang", "caller id138****8001 rang"),
            ("user_138-0013-8001", "user_138****8001"),
            ("tel+86 138 0013 8001abc", "tel861******8001abc"),
            ("msisdn138-0013-8001x12", "msisdn138****8001x12"),
            # a word's own digits are no country code of the number after them
            ("build v2 138 0013 8001", "build v2 138****8001"),
            ("node3 130 0000 0000 up", "node3 130****0000 up"),
            # glued to a hex string or a URL's escape, the number after it is still read
            ("9f8e7d6c5b4a1-13800138001", "9f8e7d6c5b4a1-138****8001"),
            ("tel%253A%252B86-13800138001", "tel%253A%252B86-138****8001"),
            ("q=x%252B86 138 0013 8001", "q=x%252B86 138****8001"),
        ],
    )
    def test_a_number_in_groups_glued_to_a_word_is_masked(self, text: str, expected: str) -> None:
        """`id138-0013-8001` showed whole: a number in groups was read only where no
        letter stood before it, while a run of digits glued to a word (`id13800138001`)
        is masked."""
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            # a hex string's digits before the groups: a hex id's, not a number's
            "ref a1b2c3d4e5f138-0013-8001",
            "commit 9f8e7d6c5b4a392 1706 5443",
        ],
    )
    def test_groups_after_a_hex_string_stay(self, text: str) -> None:
        assert mask_text(text) == text

    def test_a_line_without_a_digit_is_not_read_by_the_pattern(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The masker runs on every line, most of them without a digit: there it tried
        each alternative of its pattern at every letter, for nothing to mask."""
        from moments import logmask

        def no_pattern() -> None:
            raise AssertionError("the text pattern was run on a line without a digit")

        monkeypatch.setattr(logmask, "_patterns", no_pattern)
        line = "consumer group moments is rebalancing: b'key' {'msisdn': None} \u00e9"
        assert mask_text(line) == line

    def test_a_digit_of_another_script_is_still_read(self) -> None:
        """The pattern's `\\d` reads any script's digits (full width ones): so must the
        look for a digit before it, or such a number shows whole."""
        wide = "".join(chr(0xFF10 + int(d)) for d in SUB)
        assert mask_text(f"call {wide}") == f"call {wide[:3]}****{wide[-4:]}"

    def test_a_threads_ident_stays_readable_a_number_like_it_is_masked(self) -> None:
        """A stack dump (SIGUSR1) names each thread by its ident: no person's number, and
        masked, the dump's threads were alike (`140********2896`)."""
        ident = threading.get_ident()
        dump = f"<_MainThread(MainThread, started {ident})>, 'tid': {ident}"
        assert mask_text(dump) == dump
        other = str(ident + 1)
        assert other not in mask_text(f"'tid': {other}")


class TestConfiguredNames:
    """A topic or app id with a run of digits (`t495161564fa.telecom.roaming`, a prefix the
    integration tests draw at random) read as a number glued to a word and was masked: the
    worker's warning about that topic named `t495****564fa...`, and a test looking for the
    topic failed. Configured names stay as written; a number beside them is still masked."""

    @pytest.fixture
    def named(self) -> Iterator[None]:
        install_pii_masking(True, names=["t495161564fa", "t495161564fa.", "moments-20261207"])
        yield
        install_pii_masking(True)

    def test_without_names_the_digits_are_masked(self, masking: None) -> None:
        assert "495161564" not in mask_text("t495161564fa.telecom.roaming 3")

    @pytest.mark.parametrize(
        "text",
        [
            "since the worker started: t495161564fa.telecom.roaming 23 (e.g. a record",
            "group t495161564fa joined",
            "topic moments-20261207-state-changelog has 4 partitions",
            "'t495161564fa.telecom.roaming'",
        ],
    )
    def test_a_configured_name_stays_as_written(self, named: None, text: str) -> None:
        assert mask_text(text) == text

    @pytest.mark.parametrize(
        ("text", "kept"),
        [
            (f"t495161564fa.telecom.roaming {SUB}", "t495161564fa.telecom.roaming 138****8001"),
            (f"t495161564fa {SUB}t495161564fa", f"t495161564fa {mask_text(SUB)}t495161564fa"),
            # glued to a name: the name's letters and digits are a word's, no hex string's
            ("t495161564fa13800138001", "t495161564fa138****8001"),
            ("moments-20261207abc13800138001 x", "moments-20261207abc138****8001 x"),
            ("13800138001abcmoments-20261207", "138****8001abcmoments-20261207"),
            ("t4951615648fa.x", None),  # another name: one digit more
            ("moments-202612071", None),  # glued to more digits: a number
        ],
    )
    def test_numbers_beside_or_like_a_name_are_still_masked(
        self, named: None, text: str, kept: str | None
    ) -> None:
        masked = mask_text(text)
        if kept is not None:
            assert masked == kept
        else:
            assert masked != text

    @pytest.mark.parametrize(
        "text",
        [
            "b'moments-20261207'",
            "key=b't495161564fa.telecom.roaming' value=b'x'",
            r"b'\x00\x10t495161564fa.telecom.roaming\x02'",
        ],
    )
    def test_a_configured_name_in_a_bytes_literal_stays(self, named: None, text: str) -> None:
        """aiokafka's DEBUG lines write a topic's name in bytes literals: every run of 5
        digits or more there was masked (`b'moments-202*1207'`), names too."""
        assert mask_text(text) == text

    def test_a_name_whose_digits_only_a_bytes_literal_masks_stays_there(self) -> None:
        """A run of 5 or 6 digits stays in free text but not in a bytes literal: such a
        name was left out of the names kept, and `b'moments-12345'` read `b'moments-*****'`."""
        install_pii_masking(True, names=["moments-12345"])
        try:
            assert mask_text("b'moments-12345' b'97531'") == "b'moments-12345' b'*****'"
        finally:
            install_pii_masking(True)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("b'moments-20261207 13800138001'", "b'moments-20261207 138****8001'"),
            ("b'moments-2026120713800138001'", "b'moments-202************8001'"),
            (r"b'\x0613800138001t495161564fa'", r"b'\x06138****8001t495161564fa'"),
        ],
    )
    def test_a_number_beside_a_name_in_a_bytes_literal_is_masked(
        self, named: None, text: str, expected: str
    ) -> None:
        assert mask_text(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("moments-20261207.13800138001", "moments-20261207.138****8001"),
            ("t495161564fa.13800138001 joined", "t495161564fa.138****8001 joined"),
            ("moments-20261207.138 0013 8001", "moments-20261207.138****8001"),
            ("moments-20261207.+86-138-0013-8001", "moments-20261207.861******8001"),
        ],
    )
    def test_a_number_after_a_name_and_a_dot_is_no_fraction(
        self, named: None, text: str, expected: str
    ) -> None:
        """`moments-20261207.13800138001` showed whole: the digits after the name's last
        digit and a dot were read as a decimal fraction's."""
        assert mask_text(text) == expected

    def test_a_fraction_still_stays(self, named: None) -> None:
        text = "took 20261207.13800138001 drift=-0.00512345678 t=3.13800138001"
        assert mask_text(text) == "took 202*1207.13800138001 drift=-0.00512345678 t=3.13800138001"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("took 3.14 13800138001", "took 3.14 138****8001"),
            ("took 0.5 130 0000 0000", "took 0.5 130****0000"),
            ("aiokafka 2.8.1 on 10.0.0.1:9092", "aiokafka 2.8.1 on 10.0.0.1:9092"),
        ],
    )
    def test_a_number_after_a_fraction_is_still_read(
        self, named: None, text: str, expected: str
    ) -> None:
        assert mask_text(text) == expected

    def test_a_name_of_digits_alone_keeps_nothing(self) -> None:
        """An app id of digits alone could equal a subscriber's number."""
        install_pii_masking(True, names=[SUB])
        try:
            assert SUB not in mask_text(f"msisdn {SUB}")
            assert SUB not in mask_text(f"app {SUB}")
        finally:
            install_pii_masking(True)

    def test_digits_across_the_prefix_and_a_topics_name_are_a_name_too(self) -> None:
        settings = Settings(topic_prefix="t12345", topics={"usage": "67890.usage"})
        install_pii_masking(True, names=settings.log_names())
        try:
            line = f"events on {settings.topic('usage')}"
            assert mask_text(line) == line
        finally:
            install_pii_masking(True)

    def test_not_masking_builds_no_pattern_of_names(self) -> None:
        """MOMENTS_LOG_PII: the names' pattern would cost the masker's first build."""
        from moments import logmask

        install_pii_masking(False, names=["t495161564fa"])
        try:
            assert logmask._state["names"] is None
        finally:
            install_pii_masking(True)

    def test_the_settings_name_the_app_id_prefix_and_topics(self) -> None:
        settings = Settings(
            app_id="moments-20261207",
            topic_prefix="t495161564fa.",
            topics={"roaming": "net.roaming-2026120701"},
        )
        names = settings.log_names()
        assert {"moments-20261207", "t495161564fa.", "net.roaming-2026120701"} <= set(names)
        install_pii_masking(True, names=names)
        try:
            line = f"events on {settings.topic('roaming')}: {SUB}"
            assert mask_text(line) == f"events on {settings.topic('roaming')}: 138****8001"
        finally:
            install_pii_masking(True)


class TestConfiguredNamesInAnyContext:
    """A configured name's digits stay in any context that masks a run of them: a bytes
    literal, and inside the brackets after an id's name, where every run of 5 digits or
    more is read as an id (`msisdns: [moments-12345]` read `[moments-*****]`); a
    subscriber number beside the name is still masked."""

    @pytest.fixture(autouse=True)
    def _names(self) -> Iterator[None]:
        install_pii_masking(True, names=["moments-12345", "t12345.telecom.roaming"])
        yield
        install_pii_masking(True)

    @pytest.mark.parametrize(
        "line",
        [
            "b'moments-12345'",
            "topic=b't12345.telecom.roaming'",
            "msisdns: [moments-12345]",
            "subscriber_ids=(t12345.telecom.roaming)",
        ],
    )
    def test_a_configured_names_digits_stay_in_any_context(self, line: str) -> None:
        assert mask_text(line) == line

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("b'moments-12345' 13800138001", "b'moments-12345' 138****8001"),
            ("msisdns: [moments-12345, 97531]", "msisdns: [moments-12345, *****]"),
            ("msisdns: [moments-1234597531]", "msisdns: [moments-123***7531]"),
            ("msisdns: [97531moments-12345]", "msisdns: [*****moments-12345]"),
        ],
    )
    def test_a_subscriber_number_beside_the_name_is_still_masked(
        self, line: str, expected: str
    ) -> None:
        assert mask_text(line) == expected


class TestGroupsAfterASettingsName:
    """A setting's or a quantity's value that is the first group of a number written in
    groups was kept, and the groups after it read alone: `offset=138 0013 8001` showed
    `0013 8001`. The number is masked as one; a value that starts none stays."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("offset=138 0013 8001", "offset=138****8001"),
            ("took_ms=138 0013 8001", "took_ms=138****8001"),
            ("ledger_ttl_seconds: +86 138 0013 8001", "ledger_ttl_seconds: 861******8001"),
            ("took_ms=86 138 0013 8001 done", "took_ms=861******8001 done"),
            ("event_offset=415-555-2671", "event_offset=415***2671"),
            ("took_ms=138 0013 8001x12", "took_ms=138****8001x12"),
            ("offset=123 4567 13800138001", "offset=123 4567 138****8001"),
            ("offset=48213377, 13800138001", "offset=48213377, 138****8001"),
        ],
    )
    def test_a_number_in_groups_after_a_settings_name_is_masked(
        self, masking: None, line: str, expected: str
    ) -> None:
        assert mask_text(line) == expected

    @pytest.mark.parametrize(
        "line",
        [
            "offset=48213377 12345",
            "took_ms=12 34 56",
            "offset=48213377 2026-12-07 10:00:00",
            "offset=123 4567",
            "took_ms=12.5 ms",
        ],
    )
    def test_a_settings_value_and_numbers_after_it_stay(self, masking: None, line: str) -> None:
        assert mask_text(line) == line


class TestNineDigitsAfterAWord:
    """9 digits in groups of 3 after a word ending in a digit showed whole (`v2 612 345
    678`): the word's digits were read as a row's number before it (`64 128 256 512`)."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("v2 612 345 678", "v2 612**5678"),
            ("rule r12 612 345 678 fired", "rule r12 612**5678 fired"),
            ("node_7 612-345-678", "node_7 612**5678"),
        ],
    )
    def test_nine_digits_after_a_word_ending_in_a_digit_are_masked(
        self, masking: None, line: str, expected: str
    ) -> None:
        assert mask_text(line) == expected

    @pytest.mark.parametrize("line", ["v2 128 256 512 1024", "64 128 256 512", "12 612 345 678"])
    def test_a_row_of_numbers_after_a_word_stays(self, masking: None, line: str) -> None:
        assert mask_text(line) == line


class TestOtherSeparators:
    """Groups written with two spaces (aligned columns), a non-breaking space (a number
    pasted from a web form or a document, a locale's grouping) or an en dash (a word
    processor's dash) showed whole: only one space, a dash, a `+` and a URL's space were
    read between groups."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("+86  138  0013  8001", "861******8001"),
            ("called 138  0013  8001 at", "called 138****8001 at"),
            ("+86\u00a0138\u00a00013\u00a08001", "861******8001"),
            ("138\u00a00013\u00a08001", "138****8001"),
            ("+86\u202f138\u202f0013\u202f8001", "861******8001"),
            ("+86\u2013138\u20130013\u20138001", "861******8001"),
            ("138\u20130013\u20138001", "138****8001"),
            ("+44  20  7946  0958", "442*****0958"),
            ("612\u00a0345\u00a0678", "612**5678"),
            ("offset=138  0013  8001", "offset=138****8001"),
            ("msisdns: 97531  138  0013  8001", "msisdns: *****  138****8001"),
        ],
    )
    def test_groups_so_separated_are_masked(self, masking: None, line: str, expected: str) -> None:
        assert mask_text(line) == expected

    @pytest.mark.parametrize(
        "line",
        [
            "64  128  256  512",
            "partition  3  offset  1234  lag  56",
            "2026-12-07  10:00:00  138",
            "pages 100\u2013200",
            "64\u00a0128\u00a0256\u00a0512",
        ],
    )
    def test_rows_and_ranges_so_separated_stay(self, masking: None, line: str) -> None:
        assert mask_text(line) == line


class TestEnDashesInEveryDashedShape:
    """An en dash parts groups as a dash does (the rule above), but a US number's and a
    number after a code with dashes only were read with a hyphen-minus alone:
    `415\u2013555\u20132671` and `1\u2013800\u2013138\u2013001` showed whole where
    `415-555-2671` was masked."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("call 415\u2013555\u20132671 failed", "call 415***2671 failed"),
            ("call 415-555\u20132671", "call 415***2671"),
            ("msisdn: 415\u2013555\u20132671, 97531", "msisdn: 415***2671, *****"),
            ("call 1\u2013800\u2013138\u2013001", "call 180***8001"),
            ("call 1\u2013800\u2013138\u2013001\u2013002", "call 180******1002"),
        ],
    )
    def test_en_dashed_groups_are_masked_as_dashed_ones(
        self, masking: None, line: str, expected: str
    ) -> None:
        assert mask_text(line) == expected
        assert mask_text(line.replace("\u2013", "-")) == expected.replace("\u2013", "-")

    @pytest.mark.parametrize(
        "line", ["pages 100\u2013200", "ids 415\u2013155\u20132671", "ids 015\u2013555\u20132671"]
    )
    def test_ranges_and_no_us_numbers_stay(self, masking: None, line: str) -> None:
        assert mask_text(line) == line


class TestGroupsApartByACommaUnderscoreOrSlash:
    """A `/`, `_` or comma parts a list's, a path's, a name's numbers and a count written
    with digit groups (`f"{n:,}"`, the project's own way to keep a count readable), so
    none is a number's separator in general; but a mobile number's 3, 4 and 4 digits
    (`13` to `19` first) or a landline's (a `0` first), the same sign between each, is no
    count's grouping (a thousands group has 3 digits) and seldom a list's: masked
    (`138,0013,8001`, `138_0013_8001`, `138/0013/8001` showed whole)."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("called 138,0013,8001 at", "called 138****8001 at"),
            ("called 138_0013_8001 at", "called 138****8001 at"),
            ("called 138/0013/8001 at", "called 138****8001 at"),
            ("tel 0755/8888/6666", "tel 075*****6666"),
            ("row 7,138,0013,8001,3", "row 7,138****8001,3"),
            ("msisdns: 138/0013/8001, 97531", "msisdns: 138****8001, *****"),
            ("b'138,0013,8001'", "b'138****8001'"),
            ("user_138_0013_8001", "user_138****8001"),  # glued to a word, as with spaces
            ("GET /id138/0013/8001/x", "GET /id138****8001/x"),
        ],
    )
    def test_a_mobile_or_landline_shape_so_separated_is_masked(
        self, masking: None, line: str, expected: str
    ) -> None:
        assert mask_text(line) == expected

    @pytest.mark.parametrize(
        "line",
        [
            "processed 13,800,138,001 events",  # a count with digit groups stays readable
            "limit 13_800_138_001",
            '{"buckets":[100,250,500,1000]}',
            '{"backoff_ms":[100,2000,3000]}',
            "sizes 512/1024/2048",
            "on 2026/12/07 at /data/138/0013",
            "ratio 1380/0013",
            "ids 138,0013/8001",  # another sign each: a list's or a path's
        ],
    )
    def test_counts_lists_dates_and_paths_stay(self, masking: None, line: str) -> None:
        assert mask_text(line) == line


class TestLongCountsInProse:
    """A count or a size of 7 digits or more in prose is masked with its noun or unit
    after it, a deliberate choice (docs/security.md: "the price of not knowing which long
    number is personal"): the word after a number says nothing of it. A count written
    with digit groups, as the project writes those it shows, stays readable."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("processed 1234567 events", "processed ******* events"),
            ("took 1234567 ms", "took ******* ms"),
            (f"subscriber {SUB} events dropped", "subscriber 138****8001 events dropped"),
            ("processed 1,234,567 events", "processed 1,234,567 events"),
            ("record of 1,048,577 bytes", "record of 1,048,577 bytes"),
        ],
    )
    def test_a_long_count_is_masked_unless_written_in_digit_groups(
        self, masking: None, line: str, expected: str
    ) -> None:
        assert mask_text(line) == expected


LINE = 100_000
"""A crafted log line's size: a payload or a list a library logs whole, far beyond any
ordinary line, the input each shape of the pattern must read in one pass."""


def _repeated(unit: str, head: str = "", tail: str = "") -> str:
    return head + unit * (LINE // len(unit) + 1) + tail


class TestLongLines:
    """Lines of 100 kB crafted to make the pattern read text again and again come out
    masked as a short line would. No time is asserted: the input's size is what is bounded.
    Each takes a fraction of a second, while a pattern that reads such a line again from
    each position in it takes minutes, its time growing with the square of the size (the
    name's rest read as `\\w*` took 80 s for `SubscriberIdSubscriberId...`, 5.6 s for 20 kB
    of it with no id): the timeout turns that hang into a failure, not a stalled suite."""

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (_repeated("SubscriberId", tail="=97531"), _repeated("SubscriberId", tail="=*****")),
            (_repeated("SubscriberId", tail=" done"), _repeated("SubscriberId", tail=" done")),
            (_repeated("97531 ", "msisdns: "), _repeated("***** ", "msisdns: ")),
            (_repeated("97531/", "msisdns="), _repeated("*****/", "msisdns=")),
            (_repeated("'1234', ", "msisdns: "), _repeated("'****', ", "msisdns: ")),
            ("msisdn=" + "1" * LINE, "msisdn=111" + "*" * (LINE - 7) + "1111"),
            (_repeated(", 1", "msisdn=97531", " x"), _repeated(", 1", "msisdn=*****", " x")),
            (_repeated(" ", "msisdn=97531", "x"), _repeated(" ", "msisdn=*****", "x")),
            (_repeated(" ;", "msisdn=97531", "x"), _repeated(" ;", "msisdn=*****", "x")),
            (_repeated("[", "msisdns=["), _repeated("[", "msisdns=[")),
            (_repeated("msisdn "), _repeated("msisdn ")),
            (_repeated("counter ", tail="party 97531"), _repeated("counter ", tail="party *****")),
            (_repeated("\\", "msisdns=[", "]"), _repeated("\\", "msisdns=[", "]")),
            (_repeated('\\"1234\\", ', "msisdns: "), _repeated('\\"****\\", ', "msisdns: ")),
            (_repeated("None ", "msisdns: ", "97531"), _repeated("None ", "msisdns: ", "*****")),
            (_repeated("msisdn is "), _repeated("msisdn is ")),
            (_repeated("%25", "msisdn%", "3D97531"), _repeated("%25", "msisdn%", "3D97531")),
            (_repeated("%22", "msisdn=", "1234"), _repeated("%22", "msisdn=", "1234")),
            (_repeated("97531%2C", "msisdns="), _repeated("*****%2C", "msisdns=")),
            (_repeated("%20+", "msisdn=97531", "x"), _repeated("%20+", "msisdn=*****", "x")),
            (_repeated("%2C1", "msisdn=97531", " x"), _repeated("%2C1", "msisdn=*****", " x")),
            (_repeated(", 1 ms", "msisdn=97531"), _repeated(", 1 ms", "msisdn=*****")),
            (_repeated("a" * 999 + "1234567"), _repeated("a" * 999 + "1234567")),
            (_repeated("f47ac10b-"), _repeated("f47ac10b-")),
            (
                _repeated("1 s ", "msisdns for ", "97531"),
                _repeated("1 s ", "msisdns for ", "*****"),
            ),
            (
                _repeated("1 s ", "msisdns for ", "[97531]"),
                _repeated("1 s ", "msisdns for ", "[*****]"),
            ),
            # a hex string as long as the line, a run of digits in every 8 characters:
            # each run read the whole string on both sides for its length (65 s)
            (_repeated("a1234567"), _repeated("a1234567")),
            # one number of dashed groups: its 4 digits and the groups' 3 each
            (_repeated("-001", "1-800"), "180" + "*" * (3 * (LINE // 4 + 1) - 3) + "1001"),
        ],
        ids=[
            *("camel-names", "camel-names-no-id", "spaced-ids", "slashed-ids"),
            *("quoted-ids", "one-long-id", "short-numbers", "spaces"),
            *("separators", "brackets", "names", "counter"),
            *("backslashes", "escaped-quoted-ids", "nulls", "joining-words", "url-escapes"),
            *("url-quotes", "url-list", "url-spaces", "url-short-numbers"),
            *("durations", "hex-letters", "uuid-heads", "spaced-durations"),
            "durations-then-brackets",
            *("hex-string", "dashed-groups"),
        ],
    )
    @pytest.mark.timeout(60)
    def test_a_crafted_100_kb_line_is_masked_in_one_pass(self, line: str, expected: str) -> None:
        assert len(line) >= LINE
        assert mask_text(line) == expected


class TestRecords:
    def test_arguments_of_any_logger_are_masked(
        self, masking: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            logging.getLogger("aiokafka.conn").info("sent %r to %s", SUB.encode(), SUB)
        assert caplog.records[0].getMessage() == "sent b'138****8001' to 138****8001"
        assert SUB not in caplog.text

    def test_a_traceback_is_masked(self, masking: None, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.ERROR):
            try:
                UsageEvent.model_validate({"subscriber_id": SUB, "imei": "x" + IMEI})
            except ValidationError:
                logging.getLogger("moments.test").exception("bad event")
        assert "ValidationError" in caplog.text
        assert SUB not in caplog.text
        assert IMEI not in caplog.text

    def test_short_ids_in_arguments_extras_and_tracebacks(
        self, masking: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        logger = logging.getLogger("aiokafka.conn")
        with caplog.at_level(logging.DEBUG):
            logger.debug("Sending (key=%r value=%r)", SHORT5.encode(), {"subscriber_id": SHORT6})
            logger.info("task for %s", "x", extra={"subscriber_id": SHORT6})
            try:
                UsageEvent.model_validate({"subscriber_id": SHORT5, "imei": "x" + IMEI})
            except ValidationError:
                logging.getLogger("moments.test").exception("bad event")
        assert caplog.records[0].getMessage() == (
            "Sending (key=b'*****' value={'subscriber_id': '******'})"
        )
        assert caplog.records[1].getMessage() == "task for x"
        assert caplog.records[1].__dict__["subscriber_id"] == "******"
        assert "ValidationError" in caplog.text
        for number in (SHORT5, SHORT6, IMEI):
            assert number not in caplog.text

    def test_log_pii_turns_it_off(self, masking: None, caplog: pytest.LogCaptureFixture) -> None:
        install_pii_masking(False)
        with caplog.at_level(logging.INFO):
            logging.getLogger("moments.test").info("subscriber %s", SUB)
        assert SUB in caplog.text


class TestSecrets:
    """Passwords never reach a log line, whatever MOMENTS_LOG_PII says."""

    def test_aiokafka_debug_line_of_a_sasl_plain_login(
        self, masking: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        from aiokafka.protocol.admin import SaslAuthenticateRequest_v1

        request = SaslAuthenticateRequest_v1(b"\x00svc-moments\x00pl41n-pw")
        with caplog.at_level(logging.DEBUG):
            # what aiokafka.conn logs for every request it sends, the login included
            logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "k", 1, 2, request)
        assert "pl41n-pw" not in caplog.text
        assert caplog.records[0].getMessage() == (
            "Request to k:1 2: SaslAuthenticateRequest_v1(sasl_auth_bytes=****)"
        )

    def test_configured_passwords_even_with_log_pii(
        self, masking: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        install_pii_masking(False, secrets=["s3cr'et-pw"])
        with caplog.at_level(logging.INFO):
            log = logging.getLogger("moments.test")
            log.info("login of %s with %s", SUB, "s3cr'et-pw")
            log.info("sent %r", b"\x00user\x00s3cr'et-pw")  # as a bytes literal shows it
        assert "s3cr" not in caplog.text
        assert caplog.records[0].getMessage() == f"login of {SUB} with ****"
        assert caplog.records[1].getMessage() == 'sent b"\\x00user\\x00****"'

    def test_the_settings_name_every_password(self) -> None:
        settings = load_settings(
            redis_url="redis://u:url-pw@127.0.0.1:6379/0",
            metrics_username="prometheus",
            metrics_password="metrics-pw",
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="svc",
            kafka_sasl_password="kafka-pw",
        )
        assert sorted(settings.secret_values()) == ["kafka-pw", "metrics-pw", "url-pw"]


class TestJsonLines:
    """MOMENTS_LOG_FORMAT=json cleans a traceback and a stack as the text log does
    (python-json-logger formatted the traceback afresh, numbers and passwords in clear)."""

    def lines(self, formatter: logging.Formatter, log: Callable[[logging.Logger], None]) -> str:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        logger = logging.getLogger("moments.test.json")
        logger.addHandler(handler)
        try:
            log(logger)
        finally:
            logger.removeHandler(handler)
        return out.getvalue()

    @staticmethod
    def log_exception(logger: logging.Logger) -> None:
        try:
            raise ValueError(f"subscriber {SUB!r} password S3cretPass")
        except ValueError:
            logger.exception("reload failed")

    def test_a_traceback_is_cleaned_in_the_json_line_as_in_the_text_line(
        self, masking: None
    ) -> None:
        install_pii_masking(True, ["S3cretPass"])
        text = self.lines(logging.Formatter(), self.log_exception)
        (line,) = self.lines(json_formatter(), self.log_exception).splitlines()
        exception = orjson.loads(line)["exception"]
        for shown in (text, exception):
            assert "ValueError: subscriber '138****8001' password ****" in shown
            assert SUB not in shown
            assert "S3cretPass" not in shown

    def test_a_stack_is_cleaned_in_the_json_line(self, masking: None) -> None:
        install_pii_masking(True, ["S3cretPass"])

        def log_stack(logger: logging.Logger) -> None:
            logger.warning("where", stack_info=True)  # 13800138001 S3cretPass

        (line,) = self.lines(json_formatter(), log_stack).splitlines()
        stack = orjson.loads(line)["stack_info"]
        assert "# 138****8001 ****" in stack

    def test_a_dict_logged_as_the_message_is_cleaned(self, masking: None) -> None:
        """python-json-logger merges a dict message into the line as fields, never asking
        the record for its (masked) message: numbers and passwords went out in clear."""
        install_pii_masking(True, ["S3cretPass"])

        def log_dict(logger: logging.Logger) -> None:
            logger.warning({"subscriber_id": SHORT5, "note": f"call {SUB} with S3cretPass", SUB: 3})

        (line,) = self.lines(json_formatter(), log_dict).splitlines()
        assert orjson.loads(line)["subscriber_id"] == "*****"
        assert orjson.loads(line)["note"] == "call 138****8001 with ****"
        assert orjson.loads(line)["138****8001"] == 3
        for clear in (SUB, SHORT5, "S3cretPass"):
            assert clear not in line

    def test_nested_extras_are_cleaned_and_counts_stay_numbers(self, masking: None) -> None:
        """`extra=` values were copied into the line as they were: only a top-level id
        field was masked, a task's subscriber inside a dict, a key as bytes or an id
        passed as an int showed in clear."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning(
                "task",
                extra={
                    "task": {"msisdn": int(SUB), "ids": [SHORT6], "count": 12},
                    "key": SUB.encode(),
                    "offset": 4242,
                },
            )

        (line,) = self.lines(json_formatter(), log_extras).splitlines()
        fields = orjson.loads(line)
        assert fields["task"] == {"msisdn": "138****8001", "ids": ["******"], "count": 12}
        assert fields["key"] == "b'138****8001'"
        assert fields["offset"] == 4242
        assert isinstance(fields["process"], int)
        for clear in (SUB, SHORT6):
            assert clear not in line

    def test_an_id_held_as_a_float_is_masked(self, masking: None) -> None:
        """An id read from a float column (`13800138001.0`) went into the JSON line as it
        was, under an id's name too, where the text line masks it (`138****8001.0`); a
        float with a fraction (a duration, a timestamp) stays a number."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning(
                "row",
                extra={
                    "row": {"msisdn": float(SUB), "caller": float(SUB), "took_s": 1.5},
                    "at": 1765100000.125,
                    "offset": 48213377.0,
                },
            )

        (line,) = self.lines(json_formatter(), log_extras).splitlines()
        fields = orjson.loads(line)
        assert fields["row"] == {"msisdn": "138****8001", "caller": "138****8001", "took_s": 1.5}
        assert fields["at"] == 1765100000.125
        assert fields["offset"] == 48213377
        assert SUB not in line

    def test_a_short_id_under_its_field_name_in_any_case(self, masking: None) -> None:
        """An id under `SUBSCRIBER_ID` or `subscriberId` (a Java client's record, logged as
        an `extra=`) stayed in clear when short and a number; `subscriber_id` was masked."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning(
                "record",
                extra={"record": {"SUBSCRIBER_ID": int(SHORT5), "subscriberId": int(SHORT6)}},
            )

        (line,) = self.lines(json_formatter(), log_extras).splitlines()
        assert orjson.loads(line)["record"] == {"SUBSCRIBER_ID": "*****", "subscriberId": "******"}

    def test_every_id_of_a_list_under_an_id_field_name(self, masking: None) -> None:
        """`extra={"msisdns": [97531, 97532]}`: a list's numbers were not taken for what
        its name holds and showed in clear; a name with an id's name inside another word
        is no id field."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning(
                "batch",
                extra={
                    "batch": {
                        "msisdns": [int(SHORT5), int(SHORT6)],
                        "caller_msisdn": int(SHORT5),
                        "SubscriberIdleTimeout": 30000,
                    }
                },
            )

        (line,) = self.lines(json_formatter(), log_extras).splitlines()
        assert orjson.loads(line)["batch"] == {
            "msisdns": ["*****", "******"],
            "caller_msisdn": "*****",
            "SubscriberIdleTimeout": 30000,
        }

    def test_a_flag_under_an_id_field_name_stays_a_flag(self, masking: None) -> None:
        """`"has_msisdn": true` was written `"****"`: no boolean is an id, and a JSON
        line's flag turned to a string of stars (since names holding an id's name as a
        part of them count)."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning("seen", extra={"seen": {"has_msisdn": True, "imei_valid": False}})

        (line,) = self.lines(json_formatter(), log_extras).splitlines()
        assert orjson.loads(line)["seen"] == {"has_msisdn": True, "imei_valid": False}

    def test_a_count_of_ids_stays_a_number_in_a_json_line(self, masking: None) -> None:
        """`extra={"msisdn_count": 3}` was written `"*"`: a count under a name holding an
        id's name was taken for an id, as in a text line."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning(
                "batch",
                extra={"batch": {"msisdn_count": 3, "imeiCount": "2", "msisdn": int(SHORT5)}},
            )

        (line,) = self.lines(json_formatter(), log_extras).splitlines()
        assert orjson.loads(line)["batch"] == {
            "msisdn_count": 3,
            "imeiCount": "2",
            "msisdn": "*****",
        }

    def test_a_setting_s_value_stays_a_number_in_a_json_line(self, masking: None) -> None:
        """A setting's value or a duration passed as an `extra=` kept its number; an
        unnamed one of an id's length is still masked."""

        def log_extras(logger: logging.Logger) -> None:
            logger.warning(
                "settings",
                extra={"settings": {"ledger_ttl_seconds": 34560000, "took_ms": 12345678}},
            )
            logger.warning("big", extra={"value": int(SUB)})

        first, second = self.lines(json_formatter(), log_extras).splitlines()
        settings = {"ledger_ttl_seconds": 34560000, "took_ms": 12345678}
        assert orjson.loads(first)["settings"] == settings
        assert orjson.loads(second)["value"] == "138****8001"

    def test_log_pii_leaves_structured_values_but_not_passwords(self, masking: None) -> None:
        install_pii_masking(False, ["S3cretPass"])

        def log_dict(logger: logging.Logger) -> None:
            logger.warning({"subscriber_id": SUB, "url": "redis://:S3cretPass@redis:6379"})

        fields = orjson.loads(self.lines(json_formatter(), log_dict))
        assert fields["subscriber_id"] == SUB
        assert fields["url"] == "redis://:****@redis:6379"


def test_logging_s_report_of_a_record_a_handler_failed_on_is_cleaned(
    masking: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A format string its arguments do not fit (a library's mistake): logging reports it
    on stderr with the arguments as they were, the number and the password in clear."""
    install_pii_masking(True, ["S3cretPass"])
    logger = logging.getLogger("moments.test.report")
    logger.propagate = False  # pytest's own handler fails the test on such a record
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        logger.warning("sent %d to %s", SUB, "S3cretPass")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    report = capsys.readouterr().err
    assert "--- Logging error ---" in report
    assert "Arguments: ('138****8001', '****')" in report
    assert SUB not in report
    assert "S3cretPass" not in report


def test_the_traceback_of_an_uncaught_exception_is_cleaned(
    masking: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command that fails unexpectedly: Python prints the traceback itself, not through
    logging, and it showed the number and the password in clear."""
    install_pii_masking(True, ["S3cretPass"])
    try:
        raise RuntimeError(f"lookup of {SUB} with S3cretPass failed")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    report = capsys.readouterr().err
    assert "RuntimeError: lookup of 138****8001 with **** failed" in report
    assert SUB not in report


class TestCommandsMaskWhatTheyRead:
    """A command that reads the settings masks their passwords (and, unless
    MOMENTS_LOG_PII, subscriber numbers) in its log from then on: `state show`, `state
    seed`, `simulate`, `backtest` (for its policy) and `bench` read them without, so a
    Redis or Kafka password a client logged went out as written and MOMENTS_LOG_PII was
    ignored."""

    @pytest.mark.parametrize(
        "argv",
        [
            ["state", "show", SUB],
            ["state", "seed", "--events", "history.jsonl"],
            ["simulate", "--subscribers", "10", "--rate", "1", "--duration", "1m"],
            ["backtest", "--events", "history.jsonl", "--out", "out"],
            ["bench", "--rules-only"],
            ["run", "--exit-after", "1"],
        ],
    )
    def test_masking_gets_the_settings_secrets(
        self, argv: list[str], monkeypatch: pytest.MonkeyPatch, masking: None
    ) -> None:
        from moments.cli import main
        from moments.exceptions import ConfigError

        monkeypatch.setenv("MOMENTS_REDIS_PASSWORD", "s3cret-pw")
        monkeypatch.setenv("MOMENTS_LOG_PII", "true")
        monkeypatch.setenv("MOMENTS_APP_ID", "moments-20261207")
        calls: list[tuple[bool, list[str], list[str]]] = []

        def installed(
            mask: bool = True,
            secrets: tuple[str, ...] | list[str] = (),
            names: tuple[str, ...] | list[str] = (),
        ) -> None:
            calls.append((mask, list(secrets), list(names)))
            raise ConfigError("stopped once the settings' masking is installed")

        monkeypatch.setattr("moments.logmask.install_pii_masking", installed)
        assert main(argv) == 2
        assert [(mask, secrets) for mask, secrets, _ in calls] == [(False, ["s3cret-pw"])]
        assert "moments-20261207" in calls[0][2]  # its digits kept in the log lines


def test_no_log_line_of_ours_writes_an_offset_the_masker_takes_for_a_number() -> None:
    """The masker reads a run of 7 digits or more in free text as maybe a subscriber's
    number, and keeps one after `offset=`: the seek-back lines read `reading again from
    offset 482*3377` on a partition past a million records, no offset to look up."""
    import pathlib
    import re

    src = pathlib.Path(__file__).resolve().parents[2] / "src"
    written = re.compile(r"offset %d|offset \{")
    found = [
        f"{path.relative_to(src)}:{n}"
        for path in sorted(src.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if written.search(line)
    ]
    assert found == [], "write offset=%d, which the log masking keeps whole"
    assert mask_text("telecom.usage[1]: rebalanced; reading again from offset=48213377") == (
        "telecom.usage[1]: rebalanced; reading again from offset=48213377"
    )
