"""The re-drive's fence (`Ledger.fence`, `_FENCE` on Redis) and its claim token
(`claimed:<id>`, written by `_CLAIM_STALE`), on Redis and in memory: a re-drive that
stalled past the grace period after its claim, while another worker's re-drive claimed
the same entries, sends none of them (tests/unit/test_redrive_stalled.py has the
dispatch scenarios on memory; the last test here runs the first of them on Redis).
Before, nothing fenced the produce: the stalled re-drive published what it had decided
after the other had decided it, the confirm's no-op coming only after the produce."""

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
from moments.models import Channel, Family, Moment, ProfileEvent, ServiceTask
from sinks.base import Headers
from sinks.dispatch import TaskSink
from sinks.ledger import CLAIMED, TAKEN_OVER, TaskLedger
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Held, Joining, Leave, Parking, redis_stores
from sinks.withdrawals import WITHDRAWALS_TOPIC, profile_changes

pytestmark = pytest.mark.integration

SUB = "13800000001"
TASK, MOVED = "a" * 32, "b" * 32


async def test_a_claim_overtaken_by_another_is_fenced_out(stores: DispatchStores) -> None:
    """A claims the entry, B claims it again (A stalled past the grace period): A's fence
    refuses it, B's holds and re-scores it, so that no claim takes it right after."""
    ledger = stores.ledger
    await ledger.claim([(TASK, b"p")])
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="A")] == [TASK]
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="B")] == [TASK]
    await ledger.postpone([TASK], -3600.0)  # B decided for an hour: stale again
    assert await ledger.fence([TASK], [], "A") == set()
    assert await ledger.fence([TASK], [], "B") == {TASK}
    assert await ledger.claim_stale(30.0, token="C") == []  # re-scored by B's fence
    assert await ledger.fence([TASK], [], "B") == {TASK}


async def test_a_claim_decided_by_another_is_fenced_out(stores: DispatchStores) -> None:
    """B claimed and sent it (no longer pending): neither A's fence nor B's own holds."""
    ledger = stores.ledger
    await ledger.claim([(TASK, b"p")])
    await ledger.claim_stale(-1.0, token="A")
    await ledger.confirm([TASK])
    assert await ledger.fence([TASK], [], "A") == set()


async def test_a_claim_never_made_is_fenced_out(stores: DispatchStores) -> None:
    """An entry pending but claimed by no re-drive is not this re-drive's claim."""
    await stores.ledger.claim([(TASK, b"p")])
    assert await stores.ledger.fence([TASK], [], "A") == set()


async def test_a_moment_moved_out_holds_until_a_redrive_claims_it(
    stores: DispatchStores,
) -> None:
    """A merged moment A's decision moved out of its group under its own id (pending
    again, `Leave`): A's fence holds it while no re-drive claimed it; once B's re-drive
    claimed it (A stalled past the grace period), A's fence refuses it and B's holds it."""
    ledger = stores.ledger
    await ledger.claim([(TASK, b"p-t"), (MOVED, b"p-m")])
    parking = Parking(TASK, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    assert await stores.deferral.join_many([Joining(MOVED, SUB, b"")]) == [TASK]
    assert await ledger.leave_many([Leave(TASK, MOVED, b"p-m", to=MOVED)]) == [True]
    assert await ledger.fence([], [MOVED], "A") == {MOVED}
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="B")] == [MOVED]
    assert await ledger.fence([], [MOVED], "A") == set()
    assert await ledger.fence([MOVED], [], "B") == {MOVED}


async def test_a_drop_or_park_is_written_only_on_an_entry_still_held(
    stores: DispatchStores,
) -> None:
    """A claims the entry, B claims it again (A stalled past the grace period): A's drop
    and A's park are not written (the entry stays pending, B's), B's park is. A moment
    a decision moved out of its group (no token) is its decision's to drop until a
    re-drive claims it."""
    ledger = stores.ledger
    await ledger.claim([(TASK, b"p"), (MOVED, b"p-m")])
    await ledger.claim_stale(-1.0, token="A")
    await ledger.claim_stale(-1.0, token="B")
    a = Held("A", frozenset({TASK, MOVED}))
    await ledger.drop_many([(TASK, "opt_out")], held=a)
    parking = Parking(TASK, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await stores.deferral.park_many([parking], held=a) == [False]
    assert await ledger.state(TASK) == "pending"
    assert await stores.deferral.park_many([parking], held=Held("B", frozenset({TASK}))) == [True]
    assert await ledger.state(TASK) == "deferred"
    await ledger.drop_many([(MOVED, "expired")], held=Held("A", frozenset()))
    assert await ledger.state(MOVED) == "pending"  # claimed by B since: not A's


async def test_a_tombstones_take_out_of_the_queue_keeps_the_claim_token(
    stores: DispatchStores,
) -> None:
    """A's decision moves a merged moment out of its group under its own id (pending, no
    token: A's fence holds it) and A stalls; B's re-drive claims it (token B) and parks
    it; the subscriber's tombstone takes it out of the queue back to pending (`_FORGET`).
    A's fence still refuses it: the token B's claim wrote is kept there. Deleted by the
    take (the entry left pending with no token), A's fence held it again, and A published
    the moment of a subscriber just erased, before the tombstone's decision dropped it or,
    that worker dead, before a re-drive claimed it."""
    ledger = stores.ledger
    await ledger.claim([(TASK, b"p-t"), (MOVED, b"p-m")])
    parking = Parking(TASK, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    assert await stores.deferral.join_many([Joining(MOVED, SUB, b"")]) == [TASK]
    assert await ledger.leave_many([Leave(TASK, MOVED, b"p-m", to=MOVED)]) == [True]
    assert await ledger.fence([], [MOVED], "A") == {MOVED}
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="B")] == [MOVED]
    moved = Parking(MOVED, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await stores.deferral.park_many([moved], held=Held("B", frozenset({MOVED}))) == [True]
    taken = await stores.deferral.forget([SUB])
    assert sorted(r.task_id for r in taken) == sorted([TASK, MOVED])
    assert await ledger.state(MOVED) == "pending"
    assert await ledger.fence([], [MOVED], "A") == set()


POLICY = DispatchPolicy.model_validate({"timezone": "UTC"})


def call(at: dt.datetime) -> ServiceTask:
    return ServiceTask(
        task_id=TASK,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type="m", rule_id="m", rule_version=1, description="d"
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


def worker(stores: DispatchStores) -> tuple[TaskSink, CollectingProducer]:
    producer = CollectingProducer(time.time)
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=time.time,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return sink, producer


def stall_while_b_drops_it(a: TaskSink, b: TaskSink) -> None:
    """Have `a` stall once it read the facts: meanwhile the customer opts out of calls and
    `b`'s re-drive, past the grace period, claims the task, drops it `opt_out` and
    withdraws it."""
    kept: Callable[..., Awaitable[Any]] = a._read_for

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        got = await kept(*args, **kwargs)
        update = ProfileEvent.model_validate(
            {
                "event_id": "p1",
                "subscriber_id": SUB,
                "occurred_at": dt.datetime.now(dt.UTC),
                "opt_out": ["outbound_call"],
            }
        )
        await b.subscribers.record_facts([update])
        await b.withdrawals.withdraw(profile_changes([update]))
        assert await b.redrive(-1.0) == 1  # past the grace period
        return got

    a._read_for = stalled  # type: ignore[method-assign]


async def test_a_stalled_redrive_does_not_publish_what_another_dropped(
    stores: DispatchStores,
) -> None:
    """tests/unit/test_redrive_stalled.py's first scenario with the real scripts: A's
    re-drive reads the facts, then stalls; the customer opts out of calls, and B's
    re-drive claims the task again, drops it `opt_out` and withdraws it. A publishes
    nothing."""
    now = dt.datetime.now(dt.UTC)
    await stores.ledger.claim([(TASK, task_bytes(call(now - dt.timedelta(minutes=5))))])
    a, produced_a = worker(stores)
    b, produced_b = worker(stores)
    stall_while_b_drops_it(a, b)
    assert await a.redrive(-1.0) == 1
    withdrawn = [orjson.loads(p.payload) for p in produced_b.withdrawn]
    assert [(n["task_id"], n["reason"]) for n in withdrawn] == [(TASK, "opt_out")]
    assert produced_a.sent == []
    assert await stores.ledger.state(TASK) == "dropped"


async def test_a_release_fences_with_its_own_token(stores: DispatchStores) -> None:
    """A re-drive (token A) parked the task; its release takes it with its own token R,
    written as it takes it: R's fence holds (A's, a day old, would refuse it), A's
    refuses. Another re-drive's claim since (R stalled past the grace period) replaces
    it: R's fence then refuses, B's holds."""
    ledger = stores.ledger
    await ledger.claim([(TASK, b"p")])
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="A")] == [TASK]
    parking = Parking(TASK, SUB, b"", time.time() - 1, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    released = await stores.deferral.release(time.time(), 10, token="R")
    assert [r.task_id for r in released] == [TASK]
    assert await ledger.fence([TASK], [], "A") == set()
    assert await ledger.fence([TASK], [], "R") == {TASK}
    await ledger.postpone([TASK], -3600.0)  # stale again: R stalled past the grace period
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="B")] == [TASK]
    assert await ledger.fence([TASK], [], "R") == set()
    assert await ledger.fence([TASK], [], "B") == {TASK}


async def test_a_stalled_release_does_not_publish_what_a_redrive_dropped(
    stores: DispatchStores,
) -> None:
    """tests/unit/test_redrive_stalled.py's stalled release with the real scripts: A's
    release takes the parked call and reads the facts, then stalls; the customer opts out
    of calls, and B's re-drive claims the task, drops it `opt_out` and withdraws it. A
    publishes nothing. Before, the release was not fenced: A published the call after
    its withdrawal."""
    now = dt.datetime.now(dt.UTC)
    await stores.ledger.claim([(TASK, task_bytes(call(now - dt.timedelta(minutes=5))))])
    parking = Parking(TASK, SUB, b"", time.time() - 1, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    a, produced_a = worker(stores)
    b, produced_b = worker(stores)
    stall_while_b_drops_it(a, b)
    assert await a.release_due() == 1
    withdrawn = [orjson.loads(p.payload) for p in produced_b.withdrawn]
    assert [(n["task_id"], n["reason"]) for n in withdrawn] == [(TASK, "opt_out")]
    assert produced_a.sent == []
    assert await stores.ledger.state(TASK) == "dropped"


@pytest.fixture(params=["redis", "memory"])
async def long_stores(
    request: pytest.FixtureRequest, redis_db: str
) -> AsyncIterator[DispatchStores]:
    """Stores whose ledger keeps entries longer than a dropped one outlives its task
    (`DROPPED_KEPT_S`): a moment judged again takes a dropped entry over."""
    if request.param == "memory":
        yield memory_stores()
        return
    client = Redis.from_url(redis_db)
    try:
        yield redis_stores(TaskLedger(client, "fence:", 400 * 86400))
    finally:
        await client.aclose()


async def test_a_task_taken_over_holds_no_earlier_claim_token(
    long_stores: DispatchStores,
) -> None:
    """A re-drive (token A) claimed the task, which was dropped and expired; a moment
    judged again takes the entry over, merges into a waiting task, and is moved out of
    its group under its own id (`Leave`): its fence holds, as for any moment moved out
    that no re-drive claimed since. Before, A's token outlived the takeover (the claim
    dropped the other marks, not it): the fence refused the moment, re-driven a grace
    period later."""
    ledger = long_stores.ledger
    await ledger.claim([(MOVED, b"p-m")])
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="A")] == [MOVED]
    await ledger.drop_many([(MOVED, "expired")], keep_until={MOVED: time.time() - 1})
    assert await ledger.claim([(MOVED, b"p-m2"), (TASK, b"p-t")], again=[MOVED]) == [
        TAKEN_OVER,
        CLAIMED,
    ]
    parking = Parking(TASK, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await long_stores.deferral.park_many([parking]) == [True]
    assert await long_stores.deferral.join_many([Joining(MOVED, SUB, b"")]) == [TASK]
    assert await ledger.leave_many([Leave(TASK, MOVED, b"p-m2", to=MOVED)]) == [True]
    assert await ledger.fence([], [MOVED], "B") == {MOVED}


async def test_an_id_claimed_afresh_holds_no_earlier_claim_token(
    long_stores: DispatchStores,
) -> None:
    """As above for an id whose dropped entry lapsed before the token it held (a day from
    its claim): claimed afresh, merged and moved out under its own id, its fence holds."""
    ledger = long_stores.ledger
    await ledger.claim([(MOVED, b"p-m")])
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="A")] == [MOVED]
    # Kept a millisecond (its task expired a day ago): lapsed once this sleep is over.
    await ledger.drop_many([(MOVED, "expired")], keep_until={MOVED: time.time() - 86400})
    await asyncio.sleep(0.05)
    assert await ledger.state(MOVED) is None
    assert await ledger.claim([(MOVED, b"p-m2"), (TASK, b"p-t")]) == [CLAIMED, CLAIMED]
    parking = Parking(TASK, SUB, b"", 4_000_000_000.0, 1800.0)
    assert await long_stores.deferral.park_many([parking]) == [True]
    assert await long_stores.deferral.join_many([Joining(MOVED, SUB, b"")]) == [TASK]
    assert await ledger.leave_many([Leave(TASK, MOVED, b"p-m2", to=MOVED)]) == [True]
    assert await ledger.fence([], [MOVED], "B") == {MOVED}


class HeldProducer(CollectingProducer):
    """A worker's producer whose first task send runs `meanwhile` first: another worker's
    writes landing after this one's fence, while its produce is on its way."""

    def __init__(self, meanwhile: Callable[[], Awaitable[None]]) -> None:
        super().__init__(time.time)
        self.meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        if topic != WITHDRAWALS_TOPIC and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


def profile(opt_out: list[str], at: dt.datetime) -> ProfileEvent:
    return ProfileEvent.model_validate(
        {
            "event_id": f"p{at.timestamp()}",
            "subscriber_id": SUB,
            "occurred_at": at,
            "opt_out": opt_out,
        }
    )


async def test_a_stalled_redrives_drop_after_anothers_fence_is_not_written(
    stores: DispatchStores,
) -> None:
    """A's re-drive reads the facts (the customer opted out of calls), decides to drop the
    call, and stalls before it writes the drop; the customer opts back in, and B's
    re-drive, past the grace period, claims the task, fences it and publishes it. A's drop
    lands while B's produce is on its way: it is not written (the entry holds B's token),
    and A's withdrawal, owed for a drop not written, is not published. The call went out
    once, recorded as sent. Before, A's drop was written after B's fence: B's confirm was
    a no-op, the call recorded as dropped, and A's withdrawal told the consumer to drop a
    call sent and standing."""
    now = dt.datetime.now(dt.UTC)
    await stores.ledger.claim([(TASK, task_bytes(call(now - dt.timedelta(minutes=5))))])
    a, produced_a = worker(stores)
    b, _ = worker(stores)
    await b.subscribers.record_facts([profile(["outbound_call"], now)])
    at_write, go, written = asyncio.Event(), asyncio.Event(), asyncio.Event()
    write: Callable[..., Awaitable[None]] = a._write

    async def stalled_write(*args: Any, **kwargs: Any) -> None:
        at_write.set()
        await go.wait()
        try:
            await write(*args, **kwargs)
        finally:
            written.set()

    a._write = stalled_write  # type: ignore[method-assign]

    async def a_writes_meanwhile() -> None:
        go.set()
        await written.wait()

    produced_b = HeldProducer(a_writes_meanwhile)
    b.producer = produced_b
    a_redrives = asyncio.create_task(a.redrive(-1.0))
    await at_write.wait()
    await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
    assert await b.redrive(-1.0) == 1  # past the grace period
    assert await a_redrives == 1
    assert [orjson.loads(p.payload)["task_id"] for p in produced_b.sent] == [TASK]
    assert produced_a.sent == []
    assert produced_a.withdrawn == []
    assert await stores.ledger.state(TASK) == "sent"
