"""A write whose acknowledgement never comes fails at a deadline (`sinks.base.acknowledged`).

aiokafka has no delivery timeout. A plain producer expires a batch after its
`request_timeout_ms` with the broker's error, but an idempotent one (Apache Kafka grants
it; `moments.producer`) retries a batch for as long as its partition has a leader in the
producer's metadata (`Sender._can_retry` never expires it): a write to a topic deleted
under it while that metadata still names a leader, or to partitions with too few in-sync
replicas, hung inside aiokafka with no error at all. `sinks.retry.with_retry` saw nothing
to count: `moments_topic_missing` stayed 0, `moments_dependency_up` stayed 1, and the batch
waited silently for good. Now the acknowledgements are awaited `DELIVERY_TIMEOUT_S` at
most; then the write is a failed try: UnknownTopicOrPartitionError when the broker, asked
afresh, no longer has the topic (counted towards a missing topic), else KafkaTimeoutError
(a broker away); `with_retry` retries it.

Tansu grants no idempotent producer (and creates a deleted topic again on a produce), so
no integration test can make aiokafka hang so: the producers here are fakes whose
acknowledgements never come."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from typing import Any, NamedTuple

import pytest
from aiokafka import errors as k
from aiokafka.producer.message_accumulator import BatchBuilder

import sinks.base
from moments.records import DeadLetter, RawRecord, RejectReason
from sinks.base import Headers, produce_to_partitions
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Dependency, Metrics
from sinks.retry import MISSING_TOPIC_ATTEMPTS, kafka_outage, unknown_topic, with_retry
from tests.integration.dispatch.conftest import task

from .test_missing_main_topics import FixedClock, back_offs, clock, kafka_up, missing

__all__ = ["clock"]  # the fixture, imported for the tests below

NOW = dt.datetime.now(dt.UTC)
CHANGELOG = "app-subscribers-changelog"
TASKS = "moments.tasks"
DEAD_LETTERS = "moments.deadletter"
DEADLINE_S = 0.01
"""The tests' deadline: what is awaited here never comes, so it only has to pass."""
HELD = 3
"""Tries after the fifth in a row that found the topic gone: the write is held over them."""


class Written(NamedTuple):
    offset: int


class Cluster:
    def __init__(self, topics: set[str]) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0, 1} if topic in self.topics else None


class Client:
    """aiokafka's client as `sinks.base.gone_topics` asks it: metadata afresh."""

    def __init__(self, topics: set[str]) -> None:
        self.cluster = Cluster(topics)
        self.asked = 0

    def add_topic(self, topic: str) -> None:
        pass

    async def force_metadata_update(self) -> bool:
        self.asked += 1
        return True


class Unacknowledged:
    """An idempotent producer stuck on its topic: its first `stuck` writes are never
    acknowledged (their futures left pending), the later ones are. Its broker has the
    topics in `there`."""

    def __init__(self, stuck: int, there: set[str]) -> None:
        self.stuck = stuck
        self.client = Client(there)
        self.futures: list[asyncio.Future[Any]] = []
        self.topics: list[str] = []
        self.all_stuck = asyncio.Event()
        """Set once its last write never to be acknowledged was made."""

    def _future(self, topic: str, offset: int) -> asyncio.Future[Any]:
        self.topics.append(topic)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if self.stuck:
            self.stuck -= 1
            if not self.stuck:
                self.all_stuck.set()
        else:
            future.set_result(Written(offset))
        return future

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        return self._future(topic, 41)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        return self._future(topic, 7)


@pytest.fixture
def deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # raising=False: on a source without the deadline the write hangs (the bug), and the
    # test's timeout says so, rather than failing on the attribute.
    monkeypatch.setattr(sinks.base, "DELIVERY_TIMEOUT_S", DEADLINE_S, raising=False)


RECORDS = [(0, b"13800138000", b"{}"), (1, b"13800138001", b"{}")]


@pytest.mark.timeout(60)
class TestAWriteNeverAcknowledged:
    async def test_fails_as_a_missing_topic_when_the_broker_no_longer_has_it(
        self, deadline: None
    ) -> None:
        producer = Unacknowledged(stuck=len(RECORDS), there=set())
        with pytest.raises(k.UnknownTopicOrPartitionError) as raised:
            await produce_to_partitions(producer, CHANGELOG, RECORDS)
        assert unknown_topic(raised.value)
        assert f"the broker no longer has {CHANGELOG}" in str(raised.value)
        assert producer.client.asked == 1
        assert all(f.cancelled() for f in producer.futures), "left to aiokafka: cancelled"

    async def test_fails_as_a_broker_away_when_the_topic_is_there(self, deadline: None) -> None:
        producer = Unacknowledged(stuck=1, there={CHANGELOG})
        with pytest.raises(k.KafkaTimeoutError) as raised:
            await produce_to_partitions(producer, CHANGELOG, RECORDS)
        assert kafka_outage(raised.value)
        assert "1 write(s) to app-subscribers-changelog not acknowledged" in str(raised.value)
        assert [f.cancelled() for f in producer.futures] == [True, False]

    async def test_a_producer_that_cannot_be_asked_fails_as_a_broker_away(
        self, deadline: None
    ) -> None:
        producer = Unacknowledged(stuck=1, there=set())
        del producer.client
        with pytest.raises(k.KafkaTimeoutError):
            await produce_to_partitions(producer, CHANGELOG, RECORDS)

    async def test_acknowledged_in_time_it_answers_as_before(self, deadline: None) -> None:
        producer = Unacknowledged(stuck=0, there=set())
        assert await produce_to_partitions(producer, CHANGELOG, RECORDS) == {0: 41, 1: 41}
        assert producer.client.asked == 0

    async def test_cancelled_while_it_waits_it_cancels_the_acknowledgements(self) -> None:
        """The worker stopping (or a rebalance) cancels the write: as `asyncio.gather`
        did, what it awaited is cancelled too."""
        producer = Unacknowledged(stuck=len(RECORDS), there={CHANGELOG})
        write = asyncio.ensure_future(produce_to_partitions(producer, CHANGELOG, RECORDS))
        await producer.all_stuck.wait()
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        assert all(f.cancelled() for f in producer.futures)


@pytest.mark.timeout(60)
class TestItSurfaces:
    async def test_the_changelog_write_is_held_as_a_missing_topic(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock, deadline: None
    ) -> None:
        """Retried by `with_retry`: from the fifth try in a row the topic is counted
        missing while the write is held, Kafka up; then the write goes through."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, CHANGELOG)
        # One record a try: each try's write is one acknowledgement never given.
        producer = Unacknowledged(stuck=MISSING_TOPIC_ATTEMPTS + HELD, there=set())
        written = await with_retry(
            lambda: produce_to_partitions(producer, CHANGELOG, RECORDS[:1]),
            Dependency.KAFKA,
            metrics,
            "writing the state changelog",
            needed_topic=CHANGELOG,
        )
        assert written == {0: 41}
        held = sleeps.seen[MISSING_TOPIC_ATTEMPTS - 1 :]
        assert [(s.up, s.missing) for s in held] == [(1, 1)] * (HELD + 1)
        assert (kafka_up(metrics), missing(metrics, CHANGELOG)) == (1, 0)

    async def test_the_tasks_publish_is_held_as_a_missing_topic(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock, deadline: None
    ) -> None:
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        producer = Unacknowledged(stuck=MISSING_TOPIC_ATTEMPTS + HELD, there=set())
        await TaskSink(producer, TASKS, memory_stores(), metrics).dispatch(
            [task("t1", deliver_after=NOW)]
        )
        held = sleeps.seen[MISSING_TOPIC_ATTEMPTS - 1 :]
        assert [(s.up, s.missing) for s in held] == [(1, 1)] * (HELD + 1)
        assert producer.topics == [TASKS] * (MISSING_TOPIC_ATTEMPTS + HELD + 1)
        assert missing(metrics, TASKS) == 0

    async def test_dead_letters_never_acknowledged_are_a_broker_away(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock, deadline: None
    ) -> None:
        """The topic there, the broker not answering the write: an outage, counted."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, DEAD_LETTERS)
        producer = Unacknowledged(stuck=2, there={DEAD_LETTERS})
        sink = DeadLetterSink(producer, DEAD_LETTERS, metrics)
        record = RawRecord("telecom.topup", 3, 1842, b"13800138000", b"{", 1_764_900_000_000)
        sink.add(DeadLetter(record, "topup", RejectReason.INVALID_JSON, "JSONDecodeError", "x"))
        await sink.flush()
        assert [(s.up, s.errors) for s in sleeps.seen] == [(0, 1), (0, 2)]
        assert kafka_up(metrics) == 1
        assert producer.topics == [DEAD_LETTERS] * 3
