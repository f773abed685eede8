"""The dead-letter sink (sinks.deadletter): what a dead letter carries, and that one the
producer or the broker refuses for its size is sent once more without its value, never
retried for ever."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from moments.decoding import MAX_MESSAGE_BYTES
from moments.records import DeadLetter, RawRecord, RejectReason
from sinks.deadletter import (
    ORIGINAL_SIZE,
    ORIGINAL_TIMESTAMP,
    DeadLetterSink,
    dead_letter_headers,
    dead_letter_message,
)
from sinks.metrics import Metrics

from .fakes import FakeProducer, Sent, acknowledged

AT = dt.datetime(2026, 12, 4, 10, 30, tzinfo=dt.UTC)
SUB = b"13800138000"
BIG = b'{"note": "' + b"x" * 1_048_000 + b'"}'
"""A value the broker took (under its 1 MiB default) that the worker refuses."""


def _letter(value: bytes | None, reason: RejectReason = RejectReason.TOO_LARGE) -> DeadLetter:
    record = RawRecord("telecom.topup", 3, 1842, SUB, value, 1_764_900_000_000)
    return DeadLetter(record, "topup", reason, "TooLarge", "too big")


class RefusingProducer(FakeProducer):
    """Takes records up to `limit` bytes of value; refuses larger ones as aiokafka does:
    at `send` (its `max_request_size` check) or, `by_broker`, in the acknowledgement.
    `fail_first` transient errors come before anything goes through."""

    def __init__(self, limit: int, *, by_broker: bool = False, fail_first: int = 0) -> None:
        self.limit = limit
        self.by_broker = by_broker
        self.fail_first = fail_first
        self.sent: list[tuple[bytes | None, bytes | None, dict[str, bytes | None]]] = []

    async def take(self, record: Sent) -> Awaitable[Any]:
        if self.fail_first:
            self.fail_first -= 1
            return acknowledged(KafkaConnectionError("broker gone"))
        value = record.value or b""
        if len(value) > self.limit:
            error = MessageSizeTooLargeError(f"The message is {len(value)} bytes")
            if not self.by_broker:
                raise error
            return acknowledged(error)
        self.sent.append((record.key, record.value, dict(record.headers or ())))
        return acknowledged()


class TestWhatADeadLetterCarries:
    def test_a_too_large_value_is_cut_to_the_input_limit_with_its_size(self) -> None:
        _, key, value, headers = dead_letter_message("dlq", _letter(BIG), AT)
        assert key == SUB
        assert value == BIG[:MAX_MESSAGE_BYTES]
        assert dict(headers or ())[ORIGINAL_SIZE] == str(len(BIG)).encode()

    def test_any_other_value_is_unchanged_and_says_no_size(self) -> None:
        small = b'{"event_id": 1}'
        _, _, value, headers = dead_letter_message("dlq", _letter(small), AT)
        assert value == small
        assert ORIGINAL_SIZE not in dict(headers or ())
        assert ORIGINAL_SIZE not in dict(dead_letter_headers(_letter(None), AT))

    def test_a_long_message_is_cut_on_a_character_boundary_and_says_so(self) -> None:
        """A message over 4096 bytes in UTF-8 is cut to at most 4096, whole characters only
        (it decodes strictly), ending with how long it was; a shorter one is unchanged."""
        long = "ab" + "字段 subscriber_id 不对; " * 200  # 3-byte characters, 5,802 bytes
        letter = replace(_letter(b"{}"), message=long)
        cut = dict(dead_letter_headers(letter, AT))["__dlq.errors.exception.message"]
        assert len(cut) <= 4096
        text = cut.decode("utf-8")  # strict: no half character at the cut
        assert text.endswith(f" [cut from {len(long.encode()):,} bytes]")
        assert long.startswith(text[: text.rindex(" [cut from")])
        short = replace(letter, message="字段" * 100)
        assert (
            dict(dead_letter_headers(short, AT))["__dlq.errors.exception.message"]
            == ("字段" * 100).encode()
        )


class TestARefusalForSizeIsPermanent:
    """A dead letter refused for its size was retried with back-off for ever, as if Kafka
    were down: every partition stopped (producer-team review)."""

    @pytest.mark.parametrize("by_broker", [False, True], ids=["producer", "broker"])
    async def test_it_is_sent_again_with_an_empty_value_once(self, by_broker: bool) -> None:
        producer = RefusingProducer(limit=1000, by_broker=by_broker)
        metrics = Metrics()
        sink = DeadLetterSink(producer, "dlq", metrics)
        sink.add(_letter(b'{"a": "' + b"y" * 5000 + b'"}', RejectReason.INVALID_EVENT))
        sink.add(_letter(b"{", RejectReason.INVALID_JSON))
        await asyncio.wait_for(sink.flush(), 5)
        by_value = {value: headers for _, value, headers in producer.sent}
        assert set(by_value) == {b"", b"{"}
        emptied = by_value[b""]
        assert emptied["__dlq.errors.reason"] == b"invalid_event"
        assert emptied[ORIGINAL_SIZE] == b"5009"
        assert b"was refused as too large" in (emptied["__dlq.errors.exception.message"] or b"")
        assert ORIGINAL_SIZE not in by_value[b"{"]
        oversize = metrics.deadletters_oversize
        assert oversize.labels("sent_without_value")._value.get() == 1
        assert metrics.rejected.labels("topup", "invalid_event")._value.get() == 1

    async def test_refused_even_so_it_is_counted_and_the_batch_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        producer = RefusingProducer(limit=-1)  # refuses an empty value too
        metrics = Metrics()
        sink = DeadLetterSink(producer, "dlq", metrics)
        sink.add(_letter(BIG))
        await asyncio.wait_for(sink.flush(), 5)
        assert producer.sent == []
        assert metrics.deadletters_oversize.labels("not_sent")._value.get() == 1
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "1,048,012 bytes" not in said  # the sink never tried the whole value
        assert "telecom.topup[3]@1842" in said
        assert "max.message.bytes of dlq" in said

    async def test_a_connection_error_is_still_retried(self) -> None:
        producer = RefusingProducer(limit=10**7, fail_first=1)
        sink = DeadLetterSink(producer, "dlq", Metrics())
        sink.add(_letter(b"{", RejectReason.INVALID_JSON))
        await asyncio.wait_for(sink.flush(), 5)
        assert [value for _, value, _ in producer.sent] == [b"{"]


class TestTheOriginalRecordTravels:
    """The dead letter kept neither the record's headers (a producer's trace id) nor its
    timestamp, and a replay sent the event back without them (producer-team review)."""

    def _with_headers(self, *headers: tuple[str, bytes | None]) -> DeadLetter:
        record = RawRecord("telecom.topup", 3, 1842, SUB, b"{", 1_764_900_000_412, headers)
        return DeadLetter(record, "topup", RejectReason.INVALID_JSON, "JSONDecodeError", "x")

    def test_its_headers_come_first_and_none_named_like_ours(self) -> None:
        dl = self._with_headers(
            ("traceparent", b"00-abc-01"),
            ("__dlq.errors.reason", b"late"),  # forged, or a dead letter sent back by hand
            ("empty", None),
        )
        _, _, _, headers = dead_letter_message("dlq", dl, AT)
        pairs = list(headers or ())
        assert pairs[:2] == [("traceparent", b"00-abc-01"), ("empty", None)]
        assert [v for k, v in pairs if k == "__dlq.errors.reason"] == [b"invalid_json"]
        assert len([k for k, _ in pairs if k.startswith("__dlq.")]) == 8

    def test_its_timestamp_is_kept_to_the_millisecond(self) -> None:
        headers = dict(dead_letter_headers(self._with_headers(), AT))
        assert headers[ORIGINAL_TIMESTAMP] == b"2025-12-05T02:00:00.412+00:00"
        no_time = DeadLetter(
            RawRecord("t", 0, 1, None, b"{"), "topup", RejectReason.INVALID_JSON, "E", "m"
        )
        assert ORIGINAL_TIMESTAMP not in dict(dead_letter_headers(no_time, AT))

    async def test_sent_without_its_value_it_leaves_its_headers_too(self) -> None:
        producer = RefusingProducer(limit=10)
        sink = DeadLetterSink(producer, "dlq", Metrics())
        big = self._with_headers(("traceparent", b"00-abc-01"))
        sink.add(DeadLetter(replace(big.record, value=b"{" * 100), *_rest(big)))
        await asyncio.wait_for(sink.flush(), 5)
        ((_, value, headers),) = producer.sent
        assert value == b""
        assert "traceparent" not in headers
        assert headers[ORIGINAL_TIMESTAMP] == b"2025-12-05T02:00:00.412+00:00"


def _rest(dl: DeadLetter) -> tuple[str, RejectReason, str, str]:
    return (dl.event_type, dl.reason, dl.error_class, dl.message)


class HeldProducer(RefusingProducer):
    """Holds every acknowledgement until `release` is set."""

    def __init__(self) -> None:
        super().__init__(limit=1 << 20)
        self.release = asyncio.Event()

    async def take(self, record: Sent) -> Awaitable[Any]:
        done = await super().take(record)
        release = self.release

        async def acknowledged() -> None:
            await release.wait()
            await done

        return asyncio.ensure_future(acknowledged())


async def test_a_letter_added_while_a_flush_waits_is_sent_and_counted_once() -> None:
    """The batch loop and the outcomes agent share the sink: a flush kept its list while it
    awaited, so a letter added meanwhile was counted by it unsent, and sent and counted
    again by the next flush; with no next flush it was lost (code review)."""
    producer = HeldProducer()
    metrics = Metrics()
    sink = DeadLetterSink(producer, "dlq", metrics)
    first = _letter(b"{", RejectReason.INVALID_JSON)
    second = DeadLetter(replace(first.record, offset=1843), *_rest(first))
    sink.add(first)
    flushing = asyncio.ensure_future(sink.flush())
    await asyncio.sleep(0)  # the first flush now waits for its acknowledgement
    sink.add(second)
    later = asyncio.ensure_future(sink.flush())
    await asyncio.sleep(0)
    producer.release.set()
    await asyncio.wait_for(asyncio.gather(flushing, later), 5)
    offsets = [h["__dlq.errors.offset"] or b"" for _, _, h in producer.sent]
    assert sorted(offsets) == [b"1842", b"1843"]
    rejected = metrics.rejected.labels("topup", "invalid_json")._value.get()
    assert rejected == 2
