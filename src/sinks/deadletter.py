"""Dead letters: the original bytes, unchanged, with their origin in KIP-1034 style headers."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

from moments.records import DeadLetter
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


class DeadLetterSink:
    def __init__(self, producer: Producer, topic: str, metrics: Metrics) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self._pending: list[DeadLetter] = []

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
        by_reason: Counter[str] = Counter()
        for dl in batch:
            self.metrics.rejected.labels(dl.event_type, dl.reason.value).inc()
            by_reason[dl.reason.value] += 1
        # One line a batch, and at most one every 30 s (moments.logthrottle): a producer
        # sending garbage made a line per record. The bytes stay in the topic (under Kafka
        # ACLs; `moments deadletter show`); the log gets no subscriber data.
        first = batch[0].record
        log.info(
            "dead letters: %s (the first %s[%d]@%d); moments deadletter show lists them",
            ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common()),
            first.topic,
            first.partition,
            first.offset,
        )
        self._pending = []
