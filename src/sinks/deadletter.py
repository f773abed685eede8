"""Dead letters: the original bytes, unchanged, with their origin in KIP-1034 style headers.

A dead letter carries the original record's headers too (a producer's trace ids), then
ours: an original header named `__dlq.*` is left out, so that ours are the only ones.

A value over the input limit (`too_large`) is the one exception: its dead letter carries
the first `MAX_MESSAGE_BYTES` and the original size. Whole, it could be over what the
producer or the broker takes (a 1 MB record the broker accepted came back refused with
our headers added), and a refusal for size is permanent: retried, it stopped every
partition of the worker for good."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from moments.decoding import MAX_MESSAGE_BYTES
from moments.records import DeadLetter, RawRecord
from sinks.base import Headers, Message, Producer, acknowledged
from sinks.metrics import Dependency, Metrics, OversizeOutcome
from sinks.retry import with_retry

log = logging.getLogger(__name__)

DLQ_PREFIX = "__dlq.errors."
ORIGINAL_SIZE = f"{DLQ_PREFIX}original.size"
"""Bytes of the original value, on a dead letter whose value is not all of it."""
ORIGINAL_TIMESTAMP = f"{DLQ_PREFIX}original.timestamp"
"""The original record's Kafka timestamp (the dead letter's own is when it was written)."""
OURS = "__dlq."
"""Headers of this prefix are the dead-letter topic's own, never copied from a record."""


def dead_letter_headers(dl: DeadLetter, now: dt.datetime) -> list[tuple[str, bytes]]:
    headers = [
        (f"{DLQ_PREFIX}topic", dl.record.topic.encode()),
        (f"{DLQ_PREFIX}partition", str(dl.record.partition).encode()),
        (f"{DLQ_PREFIX}offset", str(dl.record.offset).encode()),
        (f"{DLQ_PREFIX}exception.class.name", dl.error_class.encode()),
        (f"{DLQ_PREFIX}exception.message", header_text(dl.message)),
        (f"{DLQ_PREFIX}reason", dl.reason.value.encode()),
        (f"{DLQ_PREFIX}timestamp", now.isoformat().encode()),
    ]
    if dl.record.timestamp_ms is not None:
        headers.append((ORIGINAL_TIMESTAMP, kafka_time(dl.record.timestamp_ms).encode()))
    value = dl.record.value
    if value is not None and len(value) > MAX_MESSAGE_BYTES:
        headers.append((ORIGINAL_SIZE, str(len(value)).encode()))
    return headers


MESSAGE_MAX_BYTES = 4096
"""The longest `exception.message` header, in bytes (its schema's maxLength)."""


def header_text(text: str, limit: int = MESSAGE_MAX_BYTES) -> bytes:
    """`text` in UTF-8, at most `limit` bytes: a longer one is cut on a character boundary
    and ends ` [cut from N bytes]`. Cut at a byte count, it could end in half a character
    (a `\ufffd` once read: `moments deadletter show`, any consumer decoding it strictly
    refused the header) and nothing told the reader that the rest was missing."""
    raw = text.encode()
    if len(raw) <= limit:
        return raw
    marker = f" [cut from {len(raw):,} bytes]".encode()
    # The text is whole UTF-8: only its last character can be left incomplete by the cut.
    kept = raw[: limit - len(marker)].decode("utf-8", "ignore").encode()
    return kept + marker


def kafka_time(timestamp_ms: int) -> str:
    """A Kafka timestamp as RFC 3339 in UTC, to the millisecond (exact)."""
    when = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return when.isoformat(timespec="milliseconds")


def original_headers(dl: DeadLetter) -> list[tuple[str, bytes | None]]:
    """The record's own headers, less any named `__dlq.*` (ours, from nobody else)."""
    return [(k, v) for k, v in dl.record.headers if not k.startswith(OURS)]


def dead_letter_value(dl: DeadLetter) -> bytes | None:
    """The original value, cut to its first `MAX_MESSAGE_BYTES` when longer (`too_large`:
    enough to see what it is and who sent it; `ORIGINAL_SIZE` says how long it was)."""
    value = dl.record.value
    if value is not None and len(value) > MAX_MESSAGE_BYTES:
        return value[:MAX_MESSAGE_BYTES]
    return value


def dead_letter_message(topic: str, dl: DeadLetter, now: dt.datetime) -> Message:
    """The dead letter of `dl`: its key, its value (cut if over the limit), the record's
    own headers, then ours."""
    headers = [*original_headers(dl), *dead_letter_headers(dl, now)]
    return (topic, dl.record.key, dead_letter_value(dl), headers)


def without_value(topic: str, dl: DeadLetter, now: dt.datetime, refused: int) -> Message:
    """The dead letter sent instead of one refused for its size (`refused` bytes, over
    the producer's or the dead-letter topic's limit): its headers say where the record
    came from and why, its value is empty (never null: a null is a profile tombstone)
    and the record's own headers are left out (they may be what weighs); its message
    says what was dropped."""
    value = dl.record.value
    said = (
        f"{dl.message} [the dead letter, {refused:,} bytes, was refused as too large: sent "
        "with an empty value; the record is in its topic at the offset above, as long as "
        "the topic keeps it]"
    )
    headers: Headers = [
        (k, v) for k, v in dead_letter_headers(_with_message(dl, said), now) if k != ORIGINAL_SIZE
    ]
    headers.append((ORIGINAL_SIZE, str(len(value) if value is not None else 0).encode()))
    return (topic, dl.record.key, b"", headers)


def _with_message(dl: DeadLetter, message: str) -> DeadLetter:
    return DeadLetter(dl.record, dl.event_type, dl.reason, dl.error_class, message)


def message_size(message: Message) -> int:
    """About what a record weighs on the wire: key, value and headers (for a log line)."""
    _, key, value, headers = message
    return (
        len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or ())
    )


def _size_errors() -> tuple[type[BaseException], ...]:
    """Refusals of a record for its size: the producer's own check (`max_request_size`)
    and the broker's (`max.message.bytes`, `message.max.bytes`). Sending it again gets
    the same answer."""
    from aiokafka.errors import (
        MessageSizeTooLargeError,
        RecordListTooLargeError,
        RecordTooLargeError,
    )

    return (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


async def send_refusing_size(producer: Producer, messages: Sequence[Message]) -> list[int]:
    """Send every message and await every acknowledgement; returns the indexes of those
    refused for their size. Any other error is raised (the caller retries the batch)."""
    too_large = _size_errors()
    refused: list[int] = []
    sent: list[tuple[int, asyncio.Future[object]]] = []
    for n, (topic, key, value, headers) in enumerate(messages):
        try:
            future = await producer.send(topic, value=value, key=key, headers=headers)
        except too_large:
            refused.append(n)
            continue
        sent.append((n, asyncio.ensure_future(future)))
    topics = {m[0] for m in messages}
    results = await acknowledged(producer, [f for _, f in sent], topics, return_exceptions=True)
    for (n, _), result in zip(sent, results, strict=True):
        if isinstance(result, too_large):
            refused.append(n)
        elif isinstance(result, BaseException):
            raise result
    return sorted(refused)


SAY_EVERY_S = 30.0
"""Dead letters are logged at most this often, counted by reason; the ones after a line
are said by the first batch 30 s later (the metric `moments_events_rejected_total` counts
each at once)."""


class DeadLetterSink:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self._pending: list[DeadLetter] = []
        self._clock = clock
        self._unsaid: Counter[str] = Counter()
        """Dead letters by reason since the last log line."""
        self._first: RawRecord | None = None
        self._said_at: float | None = None

    def add(self, item: DeadLetter) -> None:
        self._pending.append(item)

    async def flush(self) -> None:
        if not self._pending:
            return
        now = dt.datetime.now(dt.UTC)
        # Taken before any await: the batch loop and the outcomes agent share the sink,
        # and a letter either adds while this waits belongs to the next flush.
        batch, self._pending = self._pending, []
        messages = [dead_letter_message(self.topic, dl, now) for dl in batch]
        refused = await self._send(messages, "sending dead letters")
        if refused:
            await self._send_without_value([(batch[n], messages[n]) for n in refused], now)
        for dl in batch:
            self.metrics.rejected.labels(dl.event_type, dl.reason.value).inc()
            self._unsaid[dl.reason.value] += 1
        if self._first is None:
            self._first = batch[0].record
        self._say()

    async def _send(self, messages: Sequence[Message], what: str) -> list[int]:
        return await with_retry(
            lambda: send_refusing_size(self.producer, messages),
            Dependency.KAFKA,
            self.metrics,
            what,
            needed_topic=self.topic,  # deleted since the start: held, named, not an outage
            producer=self.producer,  # asked afresh whether the topic is still there
        )

    async def _send_without_value(
        self, refused: Sequence[tuple[DeadLetter, Message]], now: dt.datetime
    ) -> None:
        """Dead letters refused for their size go again with an empty value, once: a
        size refusal never gets better, and retried it held every partition. One line
        per batch says so (a topic whose limit refuses them all would refuse thousands)."""
        again = [without_value(self.topic, dl, now, message_size(m)) for dl, m in refused]
        lost = set(await self._send(again, "sending dead letters without their value"))
        for n in range(len(refused)):
            outcome = OversizeOutcome.NOT_SENT if n in lost else OversizeOutcome.SENT_WITHOUT_VALUE
            self.metrics.deadletters_oversize.labels(outcome.value).inc()
        dl, message = refused[0]
        log.error(
            "%d dead letter(s) refused as too large (the first: %s[%d]@%d, %s, %s bytes): "
            "%d sent again with an empty value, %d not written (only in their input topic). "
            "A dead letter holds at most %s bytes of value plus the record's key and "
            "headers: check max.message.bytes of %s",
            len(refused),
            dl.record.topic,
            dl.record.partition,
            dl.record.offset,
            dl.reason.value,
            f"{message_size(message):,}",  # digit groups: the log masks 7-digit runs
            len(refused) - len(lost),
            len(lost),
            f"{MAX_MESSAGE_BYTES:,}",
            self.topic,
        )

    def _say(self) -> None:
        """At most one line every `SAY_EVERY_S`, with every dead letter since the last by
        reason: a line per record flooded the log (20,000 for a producer sending garbage),
        and a line per batch throttled by template hid both counts and other reasons.
        The bytes stay in the topic (under Kafka ACLs; `moments deadletter show`); the log
        gets no subscriber data."""
        now = self._clock()
        if self._said_at is not None and now - self._said_at < SAY_EVERY_S:
            return
        first = self._first
        if first is None or not self._unsaid:
            return
        log.info(
            "dead letters: %s (the first %s[%d]@%d); moments deadletter show lists them",
            ", ".join(f"{n:,} {reason}" for reason, n in self._unsaid.most_common()),
            first.topic,
            first.partition,
            first.offset,
        )
        self._unsaid.clear()
        self._first = None
        self._said_at = now
