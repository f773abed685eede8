"""A task the re-drive decides again (`redriven:<id>`) may have gone out under its id before
its worker died: that id takes no other content, and the task is absorbed into no other
one (docs/consuming-tasks.md, "Once, and only while it is worth it": a task id is
published once, or again with the same content). On the memory stores the backtest uses;
tests/integration/dispatch/test_redriven_joins.py runs the same on Redis.

- Parked by the re-drive (its channel's hours closed meanwhile), it opened its
  subscriber's merge group, and a fresh moment joined it: at the release it went out
  again under its id with the new moment in `related`, which a consumer that had the
  first copy dropped as a repeat, so that moment was never acted on.
- A worker that stalled between its claim and its join (another worker's re-drive took
  the entry meanwhile and publishes it) merged it into the subscriber's waiting task:
  sent under its own id by the re-drive and again inside the other task, its
  `redriven:<id>` mark left on an `M` entry nothing withdraws."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ServiceTask
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Joining
from sinks.withdrawals import WITHDRAWALS_TOPIC

from .fakes import Clock

PRODUCED = dt.datetime(2026, 12, 3, 11, 59, 50, tzinfo=dt.UTC)
OPENS = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)
SUB = "13300000002"
REDRIVEN = "c1" * 16
FRESH = "d2" * 16
WAITING = "e3" * 16
GRACE_S = 60.0


def call(task_id: str, at: dt.datetime, rule: str) -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type=rule, rule_id=rule, rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.OUTBOUND_CALL,
        action="act",
        triggered_at=at,
        created_at=at,
        deliver_after=at,
        expires_at=at + dt.timedelta(days=3),
        evidence=[f"ev-{task_id}"],
    )


def sink_of(
    clock: Clock, policy: DispatchPolicy
) -> tuple[DispatchStores, TaskSink, CollectingProducer]:
    stores = memory_stores(clock)
    producer = CollectingProducer(clock)
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        policy,
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return stores, sink, producer


def published(producer: CollectingProducer) -> dict[str, list[str]]:
    """Each task published: its id -> the ids in its `related`."""
    out: dict[str, list[str]] = {}
    for p in producer.sent:
        task: dict[str, Any] = orjson.loads(p.payload)
        out[str(task["task_id"])] = [str(r["task_id"]) for r in task.get("related") or []]
    return out


async def test_a_fresh_moment_does_not_join_the_task_a_redrive_parked() -> None:
    """Calls are worked 03:00-12:00 UTC. A call produced at 11:59:50 whose worker died
    before its confirm is parked by its re-drive until 03:00; a minute later another call
    moment of the subscriber, which would wait for 03:00 too, waits on its own, and both
    go out at 03:00, the re-driven one as it may have gone out the first time. Before: the
    fresh moment joined it and went out only in `related` of the re-driven id."""
    clock = Clock(PRODUCED.timestamp())
    policy = DispatchPolicy.model_validate(
        {"timezone": "UTC", "hours": {"outbound_call": "03:00-12:00"}}
    )
    stores, sink, producer = sink_of(clock, policy)
    await stores.ledger.claim([(REDRIVEN, task_bytes(call(REDRIVEN, PRODUCED, "a")))])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(REDRIVEN) == "deferred"
    assert await stores.ledger.redriven([REDRIVEN]) == {REDRIVEN}

    clock.now += 60
    sink.add(call(FRESH, dt.datetime.fromtimestamp(clock.now, dt.UTC), "b"))
    await sink.flush()
    assert await stores.ledger.state(FRESH) == "deferred"

    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert published(producer) == {REDRIVEN: [], FRESH: []}


async def test_a_task_a_redrive_took_meanwhile_is_not_merged_by_its_stalled_worker() -> None:
    """The subscriber's call waits for the merge window. This worker claims a second call
    and stalls before its join; another worker's re-drive takes the entry and marks it
    (`claim_stale`, which writes `redriven:<id>` as it claims it). The join refuses
    it: it stays a task of its own, not a moment of the waiting call. Before: merged,
    `M<waiting>`, sent inside the waiting call as well."""
    clock = Clock(PRODUCED.timestamp() - 3 * 3600)
    stores, sink, producer = sink_of(clock, DispatchPolicy.model_validate({"timezone": "UTC"}))
    sink.add(call(WAITING, dt.datetime.fromtimestamp(clock.now, dt.UTC), "a"))
    await sink.flush()
    assert await stores.ledger.state(WAITING) == "deferred"

    join_many = stores.deferral.join_many

    async def redriven_meanwhile(items: Sequence[Joining]) -> list[str | None]:
        taken = await stores.ledger.claim_stale(-1.0)
        assert [i for i, _ in taken] == [i.task_id for i in items]
        return await join_many(items)

    stores.deferral.join_many = redriven_meanwhile  # type: ignore[method-assign]
    clock.now += 60
    sink.add(call(FRESH, dt.datetime.fromtimestamp(clock.now, dt.UTC), "b"))
    await sink.flush()
    assert await stores.ledger.state(FRESH) != "merged"
    assert await stores.ledger.group(WAITING) == []

    clock.now += 3600
    await sink.release_due()
    assert published(producer).get(WAITING) == []


async def test_a_stalled_join_landing_before_the_redrive_marks_the_task_does_not_merge_it() -> None:
    """As above, but the stalled worker's join lands after the other worker's re-drive
    claimed the entry (`claim_stale`) and before it marked it: the decision reads the
    declines, the facts and the outcomes first. The re-drive's claim marks the entry, so
    the join refuses it: the re-drive sends it, and the waiting call goes out without it.
    Before: merged, `M<waiting>`, it went out alone and again inside the waiting call."""
    clock = Clock(PRODUCED.timestamp() - 3 * 3600)
    stores, sink, producer = sink_of(clock, DispatchPolicy.model_validate({"timezone": "UTC"}))
    sink.add(call(WAITING, dt.datetime.fromtimestamp(clock.now, dt.UTC), "a"))
    await sink.flush()
    assert await stores.ledger.state(WAITING) == "deferred"

    fresh = call(FRESH, dt.datetime.fromtimestamp(clock.now + 60, dt.UTC), "b")
    await stores.ledger.claim([(FRESH, task_bytes(fresh))])  # the stalled worker's claim
    clock.now += GRACE_S + 70
    redriving = TaskSink(
        CollectingProducer(clock),
        "tasks",
        stores,
        Metrics(),
        DispatchPolicy.model_validate({"timezone": "UTC"}),
        clock=clock,
    )
    read_for = redriving._read_for

    async def joined_meanwhile(*args: Any, **kwargs: Any) -> Any:
        await stores.deferral.join_many([Joining(FRESH, SUB, task_bytes(fresh))])
        return await read_for(*args, **kwargs)

    redriving._read_for = joined_meanwhile  # type: ignore[method-assign]
    assert await redriving.redrive(GRACE_S) == 1
    assert await stores.ledger.state(FRESH) == "sent"
    assert await stores.ledger.group(WAITING) == []

    clock.now += 3600
    await sink.release_due()
    assert published(producer).get(WAITING) == []


async def test_the_fresh_moments_beside_the_task_a_redrive_parked_merge_with_each_other() -> None:
    """As the first test, with two fresh call moments a minute apart: the re-driven park
    takes no moment, so the first fresh one opens the subscriber's merge group and the
    second joins it (docs/consuming-tasks.md, "One contact for several moments"): two
    calls at 03:00, not three. Before: the re-driven park kept the group open for the
    window, refusing every join, and each fresh moment went as a call of its own."""
    clock = Clock(PRODUCED.timestamp())
    policy = DispatchPolicy.model_validate(
        {"timezone": "UTC", "hours": {"outbound_call": "03:00-12:00"}}
    )
    stores, sink, producer = sink_of(clock, policy)
    await stores.ledger.claim([(REDRIVEN, task_bytes(call(REDRIVEN, PRODUCED, "a")))])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(REDRIVEN) == "deferred"

    for task_id, rule in ((FRESH, "b"), (WAITING, "c")):
        clock.now += 60
        sink.add(call(task_id, dt.datetime.fromtimestamp(clock.now, dt.UTC), rule))
        await sink.flush()
    assert await stores.ledger.state(WAITING) == "merged"

    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert published(producer) == {REDRIVEN: [], FRESH: [WAITING]}
