"""A profile tombstone through a real worker: the subscriber's state and Redis traces are
erased, and the call it was holding for them is dropped when its time comes."""

from __future__ import annotations

import datetime as dt
import time

import orjson
import pytest
from redis.asyncio import Redis

from moments.producer import start_producer
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.metrics import Metrics
from sinks.stores import redis_stores

from .conftest import RulesWorker
from .kafka_io import produce, read_topic, wait_for_metric

pytestmark = [pytest.mark.integration]

SUB = "13800138009"
RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: roaming_call
    description: A call on the first arrival in a country
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_call, channel: outbound_call, priority: 2,
           action: call, ttl: 24h, description: "Call about {country}"}
"""


async def test_a_tombstone_erases_the_subscriber_and_drops_their_waiting_call(
    worker_on_rules: RulesWorker,
) -> None:
    settings, worker = await worker_on_rules(RULES)
    port = settings.metrics_port
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    roaming = {
        "event_id": "r-1",
        "subscriber_id": SUB,
        "occurred_at": now,
        "country": "JP",
        "roaming_type": "international",
    }
    await produce(settings, [("roaming", SUB, roaming)])
    # Calls are held for the merge window (30 minutes): the task waits in Redis.
    await wait_for_metric(port, "moments_tasks_deferred_total", {"reason": "merge_window"}, 1)

    prefix = f"moments:{settings.app_id}:"
    redis = Redis.from_url(settings.redis_url)
    try:
        assert await redis.hgetall(f"{prefix}facts:{SUB}"), "the roaming fact was recorded"
        assert await redis.exists(f"{prefix}open:{SUB}")
        await produce(settings, [("profile", SUB, None)])
        # Counted once the batch is done, the forget included.
        await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1)
        facts = await redis.hgetall(f"{prefix}facts:{SUB}")
        assert set(facts) == {b"forgotten", b"erased"}, worker.log()[-3000:]
        assert not await redis.exists(f"{prefix}open:{SUB}")
        # The tombstone's worker took the waiting call out of the queue and dropped it:
        # its payload is gone with it, not kept until the window ends.
        forgotten = {"moment_type": "roaming_call", "reason": "forgotten"}
        assert await wait_for_metric(port, "moments_tasks_suppressed_total", forgotten, 1) == 1
        assert not await redis.exists(f"{prefix}waiting:{SUB}")
        entries = [k async for k in redis.scan_iter(match=f"{prefix}task:*")]
        assert [await redis.get(k) for k in entries] == [b"Xforgotten"]

        # The window ends: no worker releases anything of theirs.
        worker.stop()
        ledger = TaskLedger(redis, prefix, settings.ledger_ttl_seconds)
        producer = await start_producer(settings)
        try:
            sink = TaskSink(producer, settings.topic("tasks"), redis_stores(ledger), Metrics())
            assert await sink.release_due(now=time.time() + 3600) == 0
        finally:
            await producer.stop()
    finally:
        await redis.aclose()
    assert await read_topic(settings, "tasks", 1, wait_s=3) == []


SMS_RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: roaming_sms
    description: A text on the first arrival in a country
    on: [roaming]
    when: {roaming_type: international}
    condition: {first_time: country}
    task: {family: first_time, type: roaming_sms, channel: sms, priority: 3,
           action: welcome, ttl: 24h, description: "Welcome to {country}"}
"""


def _roaming(event_id: str, when: dt.datetime, country: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "subscriber_id": SUB,
        "occurred_at": when.isoformat(),
        "country": country,
        "roaming_type": "international",
    }


async def test_events_from_before_the_tombstone_read_after_it_reach_no_one(
    worker_on_rules: RulesWorker,
) -> None:
    """The roaming topic read behind the profile topic: its events dated before the
    tombstone are dropped (counted, no dead letter, no record), in the next batch as in
    a later one once a new subscriber's event began a record; the new subscriber's own
    event makes its task."""
    settings, worker = await worker_on_rules(SMS_RULES)
    port = settings.metrics_port
    before = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    await produce(settings, [("profile", SUB, None)])  # its Kafka timestamp: now
    await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1)
    await produce(settings, [("roaming", SUB, _roaming("r-jp", before, "JP"))])
    forgotten = {"event_type": "roaming"}
    await wait_for_metric(port, "moments_events_forgotten_total", forgotten, 1)

    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    await produce(settings, [("roaming", SUB, _roaming("r-kr", after, "KR"))])
    await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 2)
    late = before + dt.timedelta(minutes=1)
    await produce(settings, [("roaming", SUB, _roaming("r-de", late, "DE"))])
    assert await wait_for_metric(port, "moments_events_forgotten_total", forgotten, 2) == 2

    tasks = await read_topic(settings, "tasks", 2, wait_s=5, settle=1)
    countries = [orjson.loads(r.value)["moment"]["params"]["country"] for r in tasks]
    assert countries == ["KR"], worker.log()[-3000:]
    assert await read_topic(settings, "deadletter", 1, wait_s=2) == []
    redis = Redis.from_url(settings.redis_url)
    try:
        facts = await redis.hgetall(f"moments:{settings.app_id}:facts:{SUB}")
    finally:
        await redis.aclose()
    assert set(facts) == {b"forgotten", b"erased", b"abroad"}  # abroad: KR's, the new one's
    assert float(facts[b"abroad"]) == after.timestamp()
