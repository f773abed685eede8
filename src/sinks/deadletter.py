"""Dead letters: the original bytes, unchanged, with their origin in KIP-1034 style headers."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable

from moments.records import DeadLetter, RawRecord
from sinks.base import Headers, Producer, produce_all
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry

log = logging.getLogger(__name__)


def dead_letter_headers(dl: DeadLetter, now: dt.datetime) -> list[tuple[str, bytes]]:
    return [
        ("__dlq.errors.topic", dl.record.topic.encode()),
        ("__dlq.errors.partition", str(dl.record.partition).encode()),
        ("__dlq.errors.offset", str(dl.record.offset).encode()),
        ("__dlq.errors.exception.class.name", dl.error_class.encode()),
        ("__dlq.errors.exception.message", dl.message.encode()[:4096]),
        ("__dlq.errors.reason", dl.reason.value.encode()),
        ("__dlq.errors.timestamp", now.isoformat().encode()),
    ]


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
        batch = self._pending
        messages: list[tuple[str, bytes | None, bytes | None, Headers | None]] = [
            (self.topic, dl.record.key, dl.record.value, dead_letter_headers(dl, now))
            for dl in batch
        ]
        await with_retry(
            lambda: produce_all(self.producer, messages),
            Dependency.KAFKA,
            self.metrics,
            "sending dead letters",
        )
        for dl in batch:
            self.metrics.rejected.labels(dl.event_type, dl.reason.value).inc()
            self._unsaid[dl.reason.value] += 1
        if self._first is None:
            self._first = batch[0].record
        self._say()
        self._pending = []

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
