"""A stalled decision's merged moments (`Ledger.leave_many`, `_LEAVE` on Redis) are fenced
by its claim token, as its drops and parks are (`Held`), on Redis and in memory: a release
that took a waiting call with an SMS moment merged into it decides to drop the moment,
then stalls past the grace period; another worker's re-drive claims the call and publishes
it with the moment inside. Before, the stalled release's leave still found the moment
`M<call>` and marked it dropped, and sent its cooldown return: the moment went out, its
rule free to fire again (a second contact). The leave refused, the return it owed is
forgotten with it (the moment stays merged inside a task that went out: kept, it stayed
owed for good, and was sent once the moment's entry lapsed)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ProfileEvent, ServiceTask
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Held, Joining, Leave, Parking, redis_stores
from sinks.withdrawals import WITHDRAWALS_TOPIC

pytestmark = pytest.mark.integration

SUB = "13800000002"
CALL, SMS = "c" * 32, "d" * 32
POLICY = DispatchPolicy.model_validate({"timezone": "UTC"})


@pytest.fixture(params=["redis", "memory"])
async def stores(request: pytest.FixtureRequest, redis_db: str) -> AsyncIterator[DispatchStores]:
    if request.param == "memory":
        yield memory_stores()
        return
    client = Redis.from_url(redis_db)
    try:
        yield redis_stores(TaskLedger(client, "leavefence:", 3600))
    finally:
        await client.aclose()


def task(task_id: str, rule: str, channel: Channel, at: dt.datetime) -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type=rule, rule_id=rule, rule_version=1, description="d"
        ),
        priority=3,
        channel=channel,
        action="act",
        triggered_at=at,
        created_at=at,
        deliver_after=at,
        expires_at=at + dt.timedelta(days=3),
        evidence=["e1"],
    )


def worker(stores: DispatchStores) -> tuple[TaskSink, CollectingProducer, CollectedCooldownReturns]:
    producer = CollectingProducer(time.time)
    returns = CollectedCooldownReturns(lambda: {"call", "sms"})
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        POLICY,
        clock=time.time,
        returns=returns,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return sink, producer, returns


def profile(opt_out: list[str], at: dt.datetime) -> ProfileEvent:
    return ProfileEvent.model_validate(
        {
            "event_id": f"p{at.timestamp()}",
            "subscriber_id": SUB,
            "occurred_at": at,
            "opt_out": opt_out,
        }
    )


async def a_call_waiting_with_an_sms_inside(stores: DispatchStores, now: dt.datetime) -> None:
    """The call waits in the deferral queue, due now (parked by a decision, not a re-drive:
    not taken as possibly sent), the SMS moment merged into it."""
    made = now - dt.timedelta(minutes=5)
    await stores.ledger.claim(
        [
            (CALL, task_bytes(task(CALL, "call", Channel.OUTBOUND_CALL, made))),
            (SMS, task_bytes(task(SMS, "sms", Channel.SMS, made))),
        ]
    )
    parking = Parking(CALL, SUB, b"", time.time() - 1, 1800.0)
    assert await stores.deferral.park_many([parking]) == [True]
    assert await stores.deferral.join_many([Joining(SMS, SUB, b"")]) == [CALL]
    assert await stores.ledger.state(SMS) == "merged"


def stall_before_the_leave(a: TaskSink, meanwhile: Callable[[], Awaitable[None]]) -> None:
    """Have `a`'s first move of merged moments out of their group wait for `meanwhile`."""
    leave: Callable[..., Awaitable[set[str]]] = a._leave
    pending: list[Callable[[], Awaitable[None]]] = [meanwhile]

    async def stalled(*args: Any, **kwargs: Any) -> set[str]:
        if pending and any(args[0]):
            await pending.pop()()
        return await leave(*args, **kwargs)

    a._leave = stalled  # type: ignore[method-assign]


async def test_a_stalled_release_does_not_drop_a_moment_another_sent(
    stores: DispatchStores,
) -> None:
    """The customer opted out of SMS: A's release of the call decides to drop the SMS moment
    (its return owed), then stalls before it leaves the group; the customer opts back in,
    and B's re-drive, past the grace period, claims the call and publishes it with the
    moment inside. A's leave is refused: the moment stays merged in the call that went
    out, no return is sent for it, none stays owed, and A publishes nothing."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, returns_a = worker(stores)
    b, produced_b, returns_b = worker(stores)
    await a.subscribers.record_facts([profile(["sms"], now)])

    async def b_sends_it() -> None:
        await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
        assert await b.redrive(-1.0) == 1  # past the grace period

    stall_before_the_leave(a, b_sends_it)
    assert await a.release_due() == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert out["task_id"] == CALL
    assert [r["task_id"] for r in out["related"] or []] == [SMS]
    assert produced_a.sent == []
    assert returns_a.take() == []
    assert returns_b.take() == []
    assert await stores.ledger.state(SMS) == "merged"
    assert await stores.ledger.owed_returns(-1.0) == []
    # Nothing left owed: the timer, once the moment's entry is gone, sends nothing either.
    assert await a._owed.resend(-1.0) == 0
    assert returns_a.take() == []


async def test_a_stalled_release_does_not_publish_a_moment_another_sent_inside(
    stores: DispatchStores,
) -> None:
    """The customer opted out of calls: A's release drops the call and moves the SMS moment
    out of its group under its own id, to go alone, then stalls before the move; the
    customer opts back in, and B's re-drive claims the call and publishes it with the
    moment inside. A's move is refused: A publishes nothing, the moment stays merged in
    the call that went out. Before, the move was written (the moment still `M<call>`),
    and A's fence held the moment (pending under its own id, no re-drive's token on it):
    A published it a second time, alone."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, returns_a = worker(stores)
    b, produced_b, _ = worker(stores)
    await a.subscribers.record_facts([profile(["outbound_call"], now)])

    async def b_sends_it() -> None:
        await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
        assert await b.redrive(-1.0) == 1  # past the grace period

    stall_before_the_leave(a, b_sends_it)
    assert await a.release_due() == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert (out["task_id"], [r["task_id"] for r in out["related"] or []]) == (CALL, [SMS])
    assert produced_a.sent == []
    assert returns_a.take() == []
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["sent", "merged"]


async def test_a_leave_is_written_only_while_its_carrier_is_held(stores: DispatchStores) -> None:
    """The store's fence alone: A took the call (token A), B's re-drive claimed it since
    (token B). A's leave of the moment (dropped, moved out under its own id, or to another
    group) is refused, the moment left merged, and the return A owed for it forgotten; a
    return owed under another id is kept. B's leave is written. Before, A's leaves were
    written (the moment still `M<call>`): moved out under its own id, A's fence (no
    token on it) held it, and A published a moment B's call carried."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    ledger = stores.ledger
    assert [t.task_id for t in await stores.deferral.release(time.time(), 10, token="A")] == [CALL]
    await ledger.postpone([CALL], -3600.0)  # A stalled past the grace period
    assert [i for i, _ in await ledger.claim_stale(-1.0, token="B")] == [CALL]
    await ledger.owe_returns([(SMS, b"r-sms"), ("e" * 32, b"r-other")])
    a = Held("A", frozenset({CALL}))
    leaves = [
        Leave(CALL, SMS, b"", to=SMS),
        Leave(CALL, SMS, b"", dropped="opt_out", returns=(SMS,)),
        Leave(CALL, SMS, b"", to="f" * 32),
    ]
    for leave in leaves:
        assert await ledger.leave_many([leave], held=a) == [False]
        assert await ledger.state(SMS) == "merged"
    assert [i for i, _ in await ledger.owed_returns(-1.0)] == ["e" * 32]
    b = Held("B", frozenset({CALL}))
    assert await ledger.leave_many([Leave(CALL, SMS, b"", dropped="opt_out")], held=b) == [True]
    assert await ledger.state(SMS) == "dropped"


def suppressed(sink: TaskSink, moment_type: str, reason: str) -> float:
    """`moments_tasks_suppressed_total` of `sink`'s worker for this type and reason."""
    labels = {"moment_type": moment_type, "reason": reason}
    return sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) or 0.0


@pytest.mark.parametrize("opted_out", ["sms", "outbound_call"])
async def test_a_stalled_release_counts_nothing_its_fence_refused(
    stores: DispatchStores, opted_out: str
) -> None:
    """A's release decides to drop the SMS moment (the customer opted out of SMS: its
    leave of the group) or the call (opted out of calls: its entry's drop), then stalls;
    B's re-drive claims the call and publishes it with the moment inside. A's leave or
    drop is refused by its fence, and A counts no suppression for it: nothing of A's
    decision was written, and the moment went out. Before, `_gone` counted it as it was
    judged, before the write its fence refused: a moment sent counted suppressed too."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, _ = worker(stores)
    b, produced_b, _ = worker(stores)
    await a.subscribers.record_facts([profile([opted_out], now)])

    async def b_sends_it() -> None:
        await b.subscribers.record_facts([profile([], now + dt.timedelta(seconds=1))])
        assert await b.redrive(-1.0) == 1  # past the grace period

    stall_before_the_leave(a, b_sends_it)
    assert await a.release_due() == 1
    [out] = [orjson.loads(p.payload) for p in produced_b.sent]
    assert (out["task_id"], [r["task_id"] for r in out["related"] or []]) == (CALL, [SMS])
    assert produced_a.sent == []
    moment_type = "sms" if opted_out == "sms" else "call"
    assert suppressed(a, moment_type, "opt_out") == 0
    assert suppressed(b, moment_type, "opt_out") == 0


async def test_a_release_not_stalled_counts_its_drop(stores: DispatchStores) -> None:
    """The control: A's release drops the SMS moment (opted out of SMS) and sends the call
    without it, nobody racing it: the moment is counted suppressed once."""
    now = dt.datetime.now(dt.UTC)
    await a_call_waiting_with_an_sms_inside(stores, now)
    a, produced_a, _ = worker(stores)
    await a.subscribers.record_facts([profile(["sms"], now)])
    assert await a.release_due() == 1
    assert [orjson.loads(p.payload)["task_id"] for p in produced_a.sent] == [CALL]
    assert suppressed(a, "sms", "opt_out") == 1
