"""A task whose worker died after its produce and before its confirm may have reached its
consumer; the re-drive decides it again and, when the decision parks it (its channel's
hours closed meanwhile), it waits in the deferral queue. Dropped later for a profile
change (a tombstone taking it out of the queue, an opt-out read at its release), it was
withdrawn by no one: the release and the tombstone's decision withdraw nothing, and a
tombstone marked it `unsent:<id>`, "never published", so that even its re-drive after a
crash withdrew nothing. The re-drive of a task dropped at once withdraws it; one it
parked is marked `redriven:<id>` and withdrawn alike when dropped. On the memory stores
the backtest uses; tests/integration/dispatch/test_forget.py runs the tombstone on
Redis."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores
from sinks.withdrawals import WITHDRAWALS_TOPIC, profile_changes

from .fakes import Clock

PRODUCED = dt.datetime(2026, 12, 3, 11, 59, 50, tzinfo=dt.UTC)
SUB = "13300000002"
GRACE_S = 60.0


def call() -> ServiceTask:
    return ServiceTask(
        task_id="c1",
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type="m", rule_id="m", rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.OUTBOUND_CALL,
        action="act",
        triggered_at=PRODUCED,
        created_at=PRODUCED,
        deliver_after=PRODUCED,
        expires_at=PRODUCED + dt.timedelta(days=3),
        evidence=["e1"],
    )


def notices(producer: CollectingProducer) -> list[tuple[str, str]]:
    return [
        (str(n["task_id"]), str(n["reason"]))
        for n in (orjson.loads(p.payload) for p in producer.withdrawn)
    ]


async def parked_by_the_redrive() -> tuple[Clock, DispatchStores, TaskSink, CollectingProducer]:
    """Calls are worked 03:00-12:00 UTC. The call was produced at 11:59:50 and its worker
    died before the confirm (its entry claimed, pending); the re-drive, a minute later,
    parks it until 03:00."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    producer = CollectingProducer(clock)
    policy = DispatchPolicy.model_validate(
        {"timezone": "UTC", "hours": {"outbound_call": "03:00-12:00"}}
    )
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        policy,
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    await stores.ledger.claim([("c1", task_bytes(call()))])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state("c1") == "deferred"
    assert notices(producer) == []
    clock.now += 3600
    return clock, stores, sink, producer


async def test_a_tombstone_withdraws_the_task_a_redrive_parked() -> None:
    """The tombstone takes it out of the queue and drops it: withdrawn, as the re-drive
    withdraws one it drops. Before: dropped with no withdrawal."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    at = clock.now
    await sink.subscribers.forget([SUB], ["m"], {SUB: at})
    await sink.withdrawals.withdraw(profile_changes((), [SUB], {SUB: at}, at))
    assert await stores.ledger.state("c1") == "dropped"
    assert notices(producer) == [("c1", "forgotten")]


async def test_a_crash_before_the_tombstones_decision_leaves_its_redrive_to_withdraw() -> None:
    """The tombstone's worker took it out of the queue (back to pending) and died before
    deciding it: no `unsent:<id>` for it (it may have gone out), so the re-drive that drops
    it withdraws it. Before: marked unsent, dropped with no withdrawal."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    at = clock.now
    taken = await stores.deferral.forget([SUB], at)
    assert [t.task_id for t in taken] == ["c1"]
    await stores.facts.forget([SUB], at, {SUB: at})
    assert await stores.ledger.unsent(["c1"]) == set()
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state("c1") == "dropped"
    assert notices(producer) == [("c1", "forgotten")]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"opt_out": ["outbound_call"]}, "opt_out"), ({"status": "closed"}, "closed")],
)
async def test_a_change_read_at_the_release_withdraws_the_task_a_redrive_parked(
    fields: dict[str, object], reason: str
) -> None:
    """An opt-out of calls (a closed line) recorded while it waited: its release drops it,
    and withdraws it. Before: dropped at the release with no withdrawal."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    update = ProfileEvent.model_validate(
        {
            "event_id": "p1",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(clock.now, dt.UTC),
            **fields,
        }
    )
    await sink.subscribers.record_facts([update])
    await sink.withdrawals.withdraw(profile_changes([update]))
    assert notices(producer) == []  # in no published index: its confirm was never written
    clock.now = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC).timestamp()
    await sink.release_due()
    assert await stores.ledger.state("c1") == "dropped"
    assert notices(producer) == [("c1", reason)]


async def test_a_task_the_redrive_sent_keeps_no_mark() -> None:
    """A re-driven task published (sent) leaves no `redriven:<id>` behind: it is in its
    subscriber's published index, which withdraws it."""
    clock, stores, sink, _ = await parked_by_the_redrive()
    clock.now = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC).timestamp()
    await sink.release_due()
    assert await stores.ledger.state("c1") == "sent"
    assert await stores.ledger.redriven(["c1"]) == set()
