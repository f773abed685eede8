"""A re-drive's claim renewed while its produce runs (`TaskSink._keep_claim`, `_FENCE` on
Redis), on the wall clock with the real scripts: a produce that takes longer than the
grace period keeps the claim, so another worker's re-drive finds nothing stale and the
task goes out once. tests/unit/test_redrive_stalled.py has the scenario on the memory
stores with a fake clock; this runs it on Redis (and memory) in real time, with a grace
period of 1.5 s and a produce of 5 s, and its control without the renewal, which shows
that such a produce does outlast the grace period: the other worker claims the task.
And what is left open, on Redis: a worker that cannot renew for a whole grace period while
its produce is on its way (docs/architecture.md says why no fence closes it): the same id
out twice, a copy after the other worker's withdrawal, or, confirmed first, sent once."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Held, redis_stores
from sinks.withdrawals import WITHDRAWALS_TOPIC
from tests.integration.dispatch.test_redrive_fence import HeldProducer

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

    a_producer = HeldProducer(broker_away)
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


# What is left open (docs/architecture.md, the crash table's "a re-drive stalls" row): a
# worker that cannot renew its claim for a whole grace period while its produce is on
# its way. On Redis, each worker with a client of its own; A's Redis calls fail from its
# fence on (A cut off from Redis, not from the broker), so its renewal never lands.


@pytest.fixture
async def two_workers(redis_db: str) -> AsyncIterator[tuple[DispatchStores, DispatchStores]]:
    """A's stores and B's: one Redis, a client each."""
    a, b = Redis.from_url(redis_db), Redis.from_url(redis_db)
    try:
        yield (
            redis_stores(TaskLedger(a, "cutoff:", 3600)),
            redis_stores(TaskLedger(b, "cutoff:", 3600)),
        )
    finally:
        await a.aclose()
        await b.aclose()


def cut_off_after_the_fence(stores: DispatchStores) -> None:
    """A's fence right before its produce answers; every later one (its renewals) fails as
    a Redis away does, retried until the produce ends."""
    fence: Callable[..., Awaitable[set[str]]] = stores.ledger.fence
    fenced: list[bool] = []

    async def cut(*args: Any, **kwargs: Any) -> set[str]:
        if fenced:
            raise RedisConnectionError("A cut off from Redis")
        fenced.append(True)
        return await fence(*args, **kwargs)

    stores.ledger.fence = cut  # type: ignore[method-assign]


async def a_redrive_cut_off(
    stores: DispatchStores, away: Callable[[], Awaitable[None]]
) -> tuple[TaskSink, CollectingProducer]:
    """A call whose worker died, re-driven by A once past the grace period; A's broker
    answers its produce once `away` is over, and A cannot renew its claim meanwhile."""
    made = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await stores.ledger.claim([(TASK, task_bytes(call(made)))])  # its worker died
    await asyncio.sleep(GRACE_S + 0.1)
    producer = HeldProducer(away)
    a = sink(stores, producer)
    cut_off_after_the_fence(stores)
    assert await a.redrive(GRACE_S) == 1
    return a, producer


async def b_claims(b: TaskSink) -> None:
    """B's re-drive, every `LOOK_S`, until it claims something (within ten grace periods)."""
    for _ in range(int(10 * GRACE_S / LOOK_S)):
        if await b.redrive(GRACE_S):
            return
        await asyncio.sleep(LOOK_S)
    raise AssertionError("B's re-drive claimed nothing in ten grace periods")


async def test_a_worker_that_cannot_renew_for_a_grace_period_publishes_with_another(
    two_workers: tuple[DispatchStores, DispatchStores],
) -> None:
    """A's produce is on its way and A cannot renew its claim: a grace period on, B's
    re-drive claims the call and publishes it; then A's produce lands. The same id is on
    the topic twice (consumers drop repeats by `task_id`), recorded sent once: B's
    confirm, A's finding it sent writes nothing. What no fence here can stop: A's request
    was with the broker before B's claim, and nothing calls it back."""
    a_stores, b_stores = two_workers
    b_producer = CollectingProducer(time.time)
    b = sink(b_stores, b_producer)

    async def b_sends_it() -> None:
        await b_claims(b)

    _, a_producer = await a_redrive_cut_off(a_stores, b_sends_it)
    assert sent(b_producer) == [TASK]
    assert sent(a_producer) == [TASK]
    assert await b_stores.ledger.state(TASK) == "sent"
    assert len(await b_stores.ledger.list_unanswered()) == 1


async def test_a_late_copy_lands_after_the_others_withdrawal(
    two_workers: tuple[DispatchStores, DispatchStores],
) -> None:
    """As above, but the customer opted out of calls meanwhile: B's re-drive drops the
    call `opt_out` and withdraws it (it may have gone out), then A's copy lands, after the
    withdrawal. The ledger keeps it dropped (A's confirm writes nothing). A consumer that
    reads the withdrawals before acting on each task (docs/consuming-tasks.md) never acts
    on it; one that reads the tasks alone calls a customer who opted out."""
    a_stores, b_stores = two_workers
    b_producer = CollectingProducer(time.time)
    b = sink(b_stores, b_producer)

    async def b_withdraws_it() -> None:
        update = ProfileEvent.model_validate(
            {
                "event_id": "p1",
                "subscriber_id": SUB,
                "occurred_at": dt.datetime.now(dt.UTC),
                "opt_out": ["outbound_call"],
            }
        )
        await b.subscribers.record_facts([update])
        await b_claims(b)

    _, a_producer = await a_redrive_cut_off(a_stores, b_withdraws_it)
    assert sent(b_producer) == []
    withdrawn = [orjson.loads(p.payload) for p in b_producer.withdrawn]
    assert [(n["task_id"], n["reason"]) for n in withdrawn] == [(TASK, "opt_out")]
    assert sent(a_producer) == [TASK]  # after the withdrawal: `b_withdraws_it` came first
    assert await b_stores.ledger.state(TASK) == "dropped"


async def test_a_late_copy_confirmed_first_is_not_sent_again(
    two_workers: tuple[DispatchStores, DispatchStores],
) -> None:
    """B's re-drive claims the call, and A's produce lands and is confirmed before B's
    fence: the entry is sent, B's fence refuses it, and the call goes out once, A's."""
    a_stores, b_stores = two_workers
    b_producer = CollectingProducer(time.time)
    b = sink(b_stores, b_producer)
    claimed, confirmed = asyncio.Event(), asyncio.Event()
    read_for: Callable[..., Awaitable[Any]] = b._read_for

    async def b_stalls(*args: Any, **kwargs: Any) -> Any:
        got = await read_for(*args, **kwargs)
        claimed.set()
        await confirmed.wait()
        return got

    b._read_for = b_stalls  # type: ignore[method-assign]
    b_redrive: list[asyncio.Task[None]] = []

    async def b_claims_it() -> None:
        b_redrive.append(asyncio.create_task(b_claims(b)))
        await claimed.wait()

    _, a_producer = await a_redrive_cut_off(a_stores, b_claims_it)
    assert await b_stores.ledger.state(TASK) == "sent"
    confirmed.set()
    await b_redrive[0]
    assert sent(a_producer) == [TASK]
    assert sent(b_producer) == []
    assert await b_stores.ledger.state(TASK) == "sent"
