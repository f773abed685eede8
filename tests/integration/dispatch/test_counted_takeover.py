"""A silence over a long suspension is one moment: its first task waited for the line,
expired unsent and was counted (deferred, then suppressed); the task a later close makes
again takes the dropped entry over (`TaskLedger.claim`'s `TAKEN_OVER`, the ledger's Lua
and its memory twin alike), waits for the line with `counted` in the payload it is parked
with, and its drop at expiry counts nothing. Left out of the takeover, it stood down
while the entry lived and, once that had lapsed, was new to the ledger: counted deferred
and suppressed again every few days of the suspension."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from uuid import uuid4

import orjson
import pytest
from redis.asyncio import Redis

from moments.backtest import CollectingProducer
from moments.models import Channel, Deferral, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, redis_stores
from tests.unit.fakes import Clock

pytestmark = pytest.mark.integration

SUB = "13400000001"
TASK = "silence-task"


def silence_task(at: float) -> ServiceTask:
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    expires = when + dt.timedelta(hours=3)
    return ServiceTask(
        task_id=TASK,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.ANOMALY,
            type="no_activity",
            rule_id="no_activity",
            rule_version=1,
            description="d",
        ),
        priority=3,
        channel=Channel.SMS,
        action="act",
        triggered_at=when,
        created_at=when,
        deliver_after=when,
        expires_at=expires,
        evidence=[],
        deferred=Deferral(reason="suspended", until=expires),
    )


def total(metrics: Metrics, name: str) -> float:
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == f"{name}_total"
    )


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_a_task_made_again_for_a_suspended_line_is_counted_once(
    redis_client: Redis, kind: str
) -> None:
    clock = Clock(float(int(time.time())))
    stores: DispatchStores = (
        redis_stores(TaskLedger(redis_client, f"test:{uuid4().hex[:8]}:", 864000))
        if kind == "redis"
        else memory_stores(clock, ttl_seconds=864000)
    )
    metrics = Metrics()
    producer = CollectingProducer(clock)
    sink = TaskSink(producer, "tasks", stores, metrics, DispatchPolicy(), clock=clock)
    suspended = ProfileEvent(
        event_id="p1",
        subscriber_id=SUB,
        occurred_at=dt.datetime.fromtimestamp(clock.now - 7200, dt.UTC),
        status="suspended",
    )
    await sink.subscribers.record_facts([suspended])
    # The first task expired unsent an hour ago: its entry dropped, kept a day past that.
    await stores.ledger.claim([(TASK, b"{}")])
    await stores.ledger.drop_many([(TASK, "suspended")], keep_until={TASK: clock.now - 3600})

    sink.add(silence_task(clock.now), rejudged=True)  # the day's close, the line suspended
    await sink.flush()
    assert await stores.ledger.state(TASK) == "deferred"
    entry = await stores.ledger.get(TASK)
    assert entry is not None
    assert orjson.loads(entry[1:])["counted"] is True

    clock.now += 3700  # the hourly look at a suspended line's tasks parks it again
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "deferred"
    entry = await stores.ledger.get(TASK)
    assert entry is not None
    assert orjson.loads(entry[1:])["counted"] is True

    clock.now += 10800  # still suspended past its expiry
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "dropped"
    assert total(metrics, "moments_tasks_deferred") == 0
    assert total(metrics, "moments_tasks_suppressed") == 0
    assert producer.sent == []


class CrashError(Exception):
    """The worker dies here."""


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_a_takeover_re_driven_after_a_crash_before_its_park_is_counted_once(
    redis_client: Redis, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker died between the claim that took the dropped entry over and the park:
    the pending entry is all the re-drive reads. It held the payload the claim was given,
    without `counted`, so the task re-driven, parked again and dropped at its expiry
    counted a second suppression of the moment its first task's drop had counted."""
    clock = Clock(float(int(time.time())))
    stores: DispatchStores = (
        redis_stores(TaskLedger(redis_client, f"test:{uuid4().hex[:8]}:", 864000))
        if kind == "redis"
        else memory_stores(clock, ttl_seconds=864000)
    )
    metrics = Metrics()
    producer = CollectingProducer(clock)
    dying = TaskSink(producer, "tasks", stores, metrics, DispatchPolicy(), clock=clock)
    suspended = ProfileEvent(
        event_id="p1",
        subscriber_id=SUB,
        occurred_at=dt.datetime.fromtimestamp(clock.now - 7200, dt.UTC),
        status="suspended",
    )
    await dying.subscribers.record_facts([suspended])
    await stores.ledger.claim([(TASK, b"{}")])
    await stores.ledger.drop_many([(TASK, "suspended")], keep_until={TASK: clock.now - 3600})

    async def crash(*_: object, **__: object) -> list[bool]:
        raise CrashError

    with monkeypatch.context() as patch:
        patch.setattr(stores.deferral, "park_many", crash)
        dying.add(silence_task(clock.now), rejudged=True)
        with pytest.raises(CrashError):
            await dying.flush()
    assert await stores.ledger.state(TASK) == "pending"
    entry = await stores.ledger.get(TASK)
    assert entry is not None
    assert orjson.loads(entry[1:])["counted"] is True

    sink = TaskSink(producer, "tasks", stores, metrics, DispatchPolicy(), clock=clock)
    clock.now += 600
    assert await sink.redrive(older_than=-1) == 1  # still suspended: parked again
    assert await stores.ledger.state(TASK) == "deferred"
    entry = await stores.ledger.get(TASK)
    assert entry is not None
    assert orjson.loads(entry[1:])["counted"] is True

    clock.now += 10800  # still suspended past its expiry
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "dropped"
    assert total(metrics, "moments_tasks_deferred") == 0
    assert total(metrics, "moments_tasks_suppressed") == 0
    assert producer.sent == []
