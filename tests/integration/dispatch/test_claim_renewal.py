"""A re-drive's claim renewed while its produce runs (`TaskSink._keep_claim`, `_FENCE` on
Redis), on the wall clock with the real scripts: a produce that takes longer than the
grace period keeps the claim, so another worker's re-drive finds nothing stale and the
task goes out once. tests/unit/test_redrive_stalled.py has the scenario on the memory
stores with a fake clock; this runs it on Redis (and memory) in real time, with a grace
period of 1.5 s and a produce of 5 s, and its control without the renewal, which shows
that such a produce does outlast the grace period: the other worker claims the task."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ServiceTask
from sinks.base import Headers
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Held, redis_stores
from sinks.withdrawals import WITHDRAWALS_TOPIC

pytestmark = pytest.mark.integration

SUB = "13800000005"
TASK = "a5" * 16
POLICY = DispatchPolicy.model_validate({"timezone": "UTC"})
GRACE_S = 1.5
"""The re-drive's grace period here (`MOMENTS_PENDING_REDRIVE_SECONDS`): renewed every
0.5 s, a second of slack for a loaded machine's scheduling."""
PRODUCE_S = 5.0
"""How long A's produce takes (the broker away, the produce retried): over three grace
periods."""
LOOK_S = 0.25
"""How often B's re-drive looks for stale entries meanwhile."""


@pytest.fixture(params=["redis", "memory"])
async def stores(request: pytest.FixtureRequest, redis_db: str) -> AsyncIterator[DispatchStores]:
    if request.param == "memory":
        yield memory_stores()
        return
    client = Redis.from_url(redis_db)
    try:
        yield redis_stores(TaskLedger(client, "renewal:", 3600))
    finally:
        await client.aclose()


def call(at: dt.datetime) -> ServiceTask:
    return ServiceTask(
        task_id=TASK,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type="call", rule_id="call", rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.OUTBOUND_CALL,
        action="act",
        triggered_at=at,
        created_at=at,
        deliver_after=at,
        expires_at=at + dt.timedelta(days=3),
        evidence=["e1"],
    )


class SlowBroker(CollectingProducer):
    """A producer whose first task send waits for `away` first: the broker answering only
    once that is over."""

    def __init__(self, away: Callable[[], Awaitable[None]]) -> None:
        super().__init__(time.time)
        self.away: Callable[[], Awaitable[None]] | None = away

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        if topic != WITHDRAWALS_TOPIC and self.away is not None:
            away, self.away = self.away, None
            await away()
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


def sink(stores: DispatchStores, producer: CollectingProducer) -> TaskSink:
    return TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=time.time,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )


def sent(producer: CollectingProducer) -> list[str]:
    return [orjson.loads(p.payload)["task_id"] for p in producer.sent]


@pytest.mark.parametrize("renewed", [True, False])
async def test_a_produce_longer_than_the_grace_period_keeps_its_claim(
    stores: DispatchStores, renewed: bool
) -> None:
    """A's re-drive claims the call (its worker died), fences it and produces it; the
    broker answers only after 5 s, over three grace periods. Meanwhile B's re-drive looks
    every 0.25 s. Renewed every third of the grace period, A's claim holds: B claims
    nothing, the call goes out once, A's, recorded as sent. The control, A's renewal
    taken out: B's re-drive claims the call while A's produce is on its way (the race the
    renewal closes), so the test's produce does outlast the grace period."""
    b_producer = CollectingProducer(time.time)
    b = sink(stores, b_producer)
    b_claims: list[int] = []

    async def broker_away() -> None:
        deadline = time.monotonic() + PRODUCE_S
        while time.monotonic() < deadline:
            await asyncio.sleep(LOOK_S)
            b_claims.append(await b.redrive(GRACE_S))

    a_producer = SlowBroker(broker_away)
    a = sink(stores, a_producer)
    if not renewed:

        async def no_renewal(ids: Any, held: Held, lost: set[str]) -> None:
            await asyncio.Event().wait()  # cancelled when the produce ends

        a._keep_claim = no_renewal  # type: ignore[method-assign]
    made = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await stores.ledger.claim([(TASK, task_bytes(call(made)))])  # its worker died
    await asyncio.sleep(GRACE_S + 0.1)
    assert await a.redrive(GRACE_S) == 1
    assert sent(a_producer) == [TASK]
    assert len(b_claims) >= PRODUCE_S / LOOK_S / 2  # B looked all along
    if renewed:
        assert sum(b_claims) == 0
        assert sent(b_producer) == []
        assert await stores.ledger.state(TASK) == "sent"
    else:
        assert sum(b_claims) >= 1
        assert sent(b_producer) == [TASK]
