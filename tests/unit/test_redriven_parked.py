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
from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import (
    Channel,
    Family,
    Moment,
    OutcomeStatus,
    ProfileEvent,
    ServiceTask,
    TaskOutcome,
)
from moments.outcomes import handle_outcomes, retry_id
from moments.records import RawRecord
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import Declines, DispatchStores
from sinks.withdrawals import WITHDRAWALS_TOPIC, profile_changes

from .fakes import Clock

PRODUCED = dt.datetime(2026, 12, 3, 11, 59, 50, tzinfo=dt.UTC)
OPENS = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)
SUB = "13300000002"
TASK = "c1" * 16  # a task id as the engine makes them: 32 hex digits
GRACE_S = 60.0


def call() -> ServiceTask:
    return ServiceTask(
        task_id=TASK,
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
    await stores.ledger.claim([(TASK, task_bytes(call()))])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(TASK) == "deferred"
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
    assert await stores.ledger.state(TASK) == "dropped"
    assert notices(producer) == [(TASK, "forgotten")]


async def test_a_crash_before_the_tombstones_decision_leaves_its_redrive_to_withdraw() -> None:
    """The tombstone's worker took it out of the queue (back to pending) and died before
    deciding it: no `unsent:<id>` for it (it may have gone out), so the re-drive that drops
    it withdraws it. Before: marked unsent, dropped with no withdrawal."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    at = clock.now
    taken = await stores.deferral.forget([SUB], at)
    assert [t.task_id for t in taken] == [TASK]
    await stores.facts.forget([SUB], at, {SUB: at})
    assert await stores.ledger.unsent([TASK]) == set()
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(TASK) == "dropped"
    assert notices(producer) == [(TASK, "forgotten")]


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
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "dropped"
    assert notices(producer) == [(TASK, reason)]


async def test_a_task_the_redrive_sent_keeps_no_mark() -> None:
    """A re-driven task published (sent) leaves no `redriven:<id>` behind: it is in its
    subscriber's published index, which withdraws it."""
    clock, stores, sink, _ = await parked_by_the_redrive()
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "sent"
    assert await stores.ledger.redriven([TASK]) == set()


def outcome(status: OutcomeStatus, at: float) -> RawRecord:
    value = TaskOutcome(
        task_id=TASK,
        subscriber_id=SUB,
        status=status,
        occurred_at=dt.datetime.fromtimestamp(at, dt.UTC),
    )
    return RawRecord("moments.task-outcomes", 0, 0, SUB.encode(), value.model_dump_json().encode())


def published_tasks(producer: CollectingProducer) -> list[str]:
    return [str(orjson.loads(m.payload)["task_id"]) for m in producer.sent]


async def test_a_decline_of_the_task_a_redrive_parked_acts_on_it_and_it_goes_out_no_more() -> None:
    """The consumer declines the copy that went out while the re-drive's copy waits. The
    outcome found no task (no body, the entry `D`): counted `moment_type="unknown"`, no
    decline written, and the release published the task again. It acts on the task as
    the queue holds it, and the release confirms it as sent, not published again."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    now = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    result = await handle_outcomes([outcome(OutcomeStatus.DECLINED, clock.now)], sink, now=now)
    assert result.declined == 1
    assert await stores.declines.suppressed(SUB, "m")
    labels = {"moment_type": "m", "status": "declined"}
    assert sink.metrics.registry.get_sample_value("moments_task_outcomes_total", labels) == 1

    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "sent"
    assert published_tasks(producer) == []
    suppressed = {"moment_type": "m", "reason": "declined"}
    registry = sink.metrics.registry
    assert (registry.get_sample_value("moments_tasks_suppressed_total", suppressed) or 0) == 0


async def test_a_decline_read_as_the_release_decides_still_finds_the_task_sent() -> None:
    """The decline is handled just as the release reads the declines: after a look at the
    answered marks made before that read, the task was dropped as `declined` (counted
    suppressed, its cooldown given back) though it had reached the customer. The release
    looks at the marks after the declines' read, as the re-drive does: confirmed sent."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    now = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    real = sink.declines
    handled: list[int] = []

    class Answering:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def suppressed_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
            if not handled:
                record = outcome(OutcomeStatus.DECLINED, now.timestamp())
                handled.append((await handle_outcomes([record], sink, now=now)).declined)
            return await real.suppressed_many(pairs)

    sink.declines = cast(Declines, Answering())
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert handled == [1]
    assert await stores.ledger.state(TASK) == "sent"
    assert published_tasks(producer) == []
    suppressed = {"moment_type": "m", "reason": "declined"}
    registry = sink.metrics.registry
    assert (registry.get_sample_value("moments_tasks_suppressed_total", suppressed) or 0) == 0


async def test_an_unreachable_of_the_task_a_redrive_parked_queues_its_retry() -> None:
    """Before: no retry, and the release published the task again."""
    clock, stores, sink, producer = await parked_by_the_redrive()
    now = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    result = await handle_outcomes([outcome(OutcomeStatus.UNREACHABLE, clock.now)], sink, now=now)
    assert result.retries == [retry_id(TASK, 1)]
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(TASK) == "sent"
    assert TASK not in published_tasks(producer)


async def test_an_outcome_of_a_task_waiting_never_published_acts_on_nothing() -> None:
    """A task parked by its first decision (no re-drive) never went out: an outcome of
    its id (a wrong id) acts on nothing, and the task goes out at its release."""
    clock = Clock(PRODUCED.timestamp())
    stores = memory_stores(clock)
    producer = CollectingProducer(clock)
    policy = DispatchPolicy.model_validate(
        {"timezone": "UTC", "hours": {"outbound_call": "03:00-11:00"}}
    )
    sink = TaskSink(producer, "tasks", stores, Metrics(), policy, clock=clock)
    await sink.dispatch([call()])
    assert await stores.ledger.state(TASK) == "deferred"
    now = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    result = await handle_outcomes([outcome(OutcomeStatus.DECLINED, clock.now)], sink, now=now)
    assert result.declined == 0
    assert not await stores.declines.suppressed(SUB, "m")
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert published_tasks(producer) == [TASK]
