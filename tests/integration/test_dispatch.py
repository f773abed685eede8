"""The dispatch and dead-letter sinks against the real broker and Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from moments.models import Channel, Family, Moment, ServiceTask
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.settings import Settings
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.stores import redis_stores

from .conftest import MakeSettings
from .kafka_io import read_topic, read_written, values

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_task(task_id: str, sub: str = "13800138001") -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=sub,
        moment=Moment(
            family=Family.FIRST_TIME,
            type="first_international_roaming",
            rule_id="first_international_roaming",
            rule_version=1,
            description="Welcome to JP",
            params={"country": "JP"},
        ),
        priority=3,
        channel=Channel.SMS,
        action="roaming_welcome",
        triggered_at=NOW,
        created_at=NOW,
        deliver_after=NOW,
        expires_at=NOW + dt.timedelta(days=1),
        evidence=["r1"],
    )


class Harness:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer, redis: Redis) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.ledger = TaskLedger(redis, f"moments:{settings.app_id}:", 3600)
        self.tasks = TaskSink(
            producer, settings.topic("tasks"), redis_stores(self.ledger), self.metrics
        )
        self.dead = DeadLetterSink(producer, settings.topic("deadletter"), self.metrics)

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@pytest.fixture
async def harness(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any], redis_url: str
) -> AsyncIterator[Harness]:
    settings = make_settings()
    await topics_for(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    redis = Redis.from_url(redis_url)
    yield Harness(settings, producer, redis)
    await producer.stop()
    await redis.aclose()


class TestTaskSink:
    """Each task id reaches the dispatch topic once, whoever flushes it and however often."""

    async def test_publishes_once_and_counts_the_duplicates(self, harness: Harness) -> None:
        harness.tasks.add(make_task("t1"))
        harness.tasks.add(make_task("t2", sub="13900139002"))
        await harness.tasks.flush()
        harness.tasks.add(make_task("t1"))  # a replay after a crash makes the same id
        await harness.tasks.flush()
        records = await read_written(harness.settings, "tasks", at_least=2)
        assert sorted(str(v["task_id"]) for v in values(records)) == ["t1", "t2"]
        assert {r.key for r in records} == {b"13800138001", b"13900139002"}
        assert await harness.ledger.state("t1") == "sent"
        labels = {"moment_type": "first_international_roaming"}
        assert harness.sample("moments_tasks_published_total", **labels, channel="sms") == 2
        assert harness.sample("moments_tasks_suppressed_total", **labels, reason="dedup") == 1

    async def test_redrives_a_task_claimed_but_never_published(self, harness: Harness) -> None:
        """A crash between the pending mark and the produce must not lose the task."""
        task = make_task("t-crash")
        assert await harness.ledger.claim([(task.task_id, task_bytes(task))]) == [True]
        assert await harness.tasks.redrive(older_than=0) == 1
        records = await read_written(harness.settings, "tasks", at_least=1)
        assert [orjson.loads(r.value)["task_id"] for r in records] == ["t-crash"]
        assert await harness.ledger.state("t-crash") == "sent"
        assert await harness.tasks.redrive(older_than=0) == 0
        assert harness.sample("moments_tasks_redriven_total") == 1


class TestDeadLetterSink:
    """Dead letters keep the original bytes and carry their origin in headers."""

    async def test_original_bytes_and_origin_headers(self, harness: Harness) -> None:
        record = RawRecord("telecom.usage", 1, 42, b"13800138001", b"\xff not json")
        harness.dead.add(
            DeadLetter(record, "usage", RejectReason.INVALID_JSON, "JSONDecodeError", "bad")
        )
        await harness.dead.flush()
        [letter] = await read_topic(harness.settings, "deadletter", count=1, wait_s=20)
        assert letter.value == b"\xff not json"
        assert letter.key == b"13800138001"
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["__dlq.errors.topic"] == "telecom.usage"
        assert headers["__dlq.errors.partition"] == "1"
        assert headers["__dlq.errors.offset"] == "42"
        assert headers["__dlq.errors.reason"] == "invalid_json"
        assert headers["__dlq.errors.exception.class.name"] == "JSONDecodeError"
        rejected = {"event_type": "usage", "reason": "invalid_json"}
        assert harness.sample("moments_events_rejected_total", **rejected) == 1
