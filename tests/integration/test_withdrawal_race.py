"""The race of a release and a profile change (tests/unit/test_withdrawal_race.py) on the
Redis stores the stream uses: the confirm's script looks at the subscriber's facts in the
step that indexes the task, so a change the batch recorded and looked up for while the
release published is withdrawn by the release, once; and a worker dying between that
confirm and its withdrawal leaves the task pending, for its re-drive to drop and
withdraw."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import orjson
import pytest
from redis.asyncio import Redis

from moments.backtest import CollectingProducer
from moments.enums import WithdrawReason
from moments.models import Channel, Deferral, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger, Voided
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, redis_stores
from sinks.withdrawals import WITHDRAWALS_TOPIC, profile_changes
from tests.unit.fakes import ChangedMeanwhile, Clock

pytestmark = pytest.mark.integration

SUB = "13300000003"
NOW = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)
RELEASE = NOW + dt.timedelta(minutes=10)
CHANGED = RELEASE - dt.timedelta(minutes=1)


def waiting(task_id: str = "w1") -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type="m", rule_id="m", rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.SMS,
        action="act",
        triggered_at=NOW,
        created_at=NOW,
        deliver_after=RELEASE,
        expires_at=NOW + dt.timedelta(days=3),
        evidence=["e1"],
        deferred=Deferral(reason="quiet_hours", until=RELEASE),
    )


def opt_out() -> ProfileEvent:
    return ProfileEvent(
        event_id="p1", subscriber_id=SUB, occurred_at=CHANGED, opt_out=[Channel.SMS]
    )


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[DispatchStores]:
    client = Redis.from_url(redis_url)
    yield redis_stores(TaskLedger(client, f"test:{uuid4().hex[:8]}:", 864000))
    await client.aclose()


def sink(
    stores: DispatchStores, clock: Clock, topic: str | None = WITHDRAWALS_TOPIC
) -> tuple[TaskSink, CollectingProducer]:
    producer = CollectingProducer(clock)
    return TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        DispatchPolicy(),
        clock=clock,
        withdrawals_topic=topic,
    ), producer


async def due_at_release(
    stores: DispatchStores, clock: Clock, topic: str | None = WITHDRAWALS_TOPIC
) -> tuple[tuple[TaskSink, CollectingProducer], tuple[TaskSink, CollectingProducer]]:
    """A sink that parked `waiting()` and another, a batch's, both at `RELEASE`: the
    releasing one's release and the batch's profile change race in each test."""
    releasing, producer = sink(stores, clock, topic)
    releasing.add(waiting())
    await releasing.flush()
    clock.now = RELEASE.timestamp()
    return (releasing, producer), sink(stores, clock, topic)


def opting_out(batch: TaskSink) -> tuple[ProfileEvent, Callable[[], Awaitable[None]]]:
    """The opt-out and what `batch` does with it while the release reads the facts: it
    records the change, then looks up the tasks to withdraw."""
    update = opt_out()

    async def meanwhile() -> None:
        await batch.subscribers.record_facts([update])
        await batch.withdrawals.withdraw(profile_changes([update]))

    return update, meanwhile


async def tombstone_after_the_withdrawal(
    stores: DispatchStores, clock: Clock
) -> tuple[TaskSink, CollectingProducer]:
    """The opt-out race (`opting_out`), and a tombstone applied by the batch's sink between
    the release's withdrawal and the confirm after it; returns the releasing sink."""
    (releasing, producer), (batch, _) = await due_at_release(stores, clock)
    _, meanwhile = opting_out(batch)
    releasing.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    withdraw_voided = releasing.withdrawals.withdraw_voided

    async def then_tombstone(voided: Any) -> None:
        await withdraw_voided(voided)
        clock.now += 60
        await batch.subscribers.forget([SUB], [])
        await batch.withdrawals.withdraw(profile_changes([], forgotten=[SUB], now=clock()))

    releasing.withdrawals.withdraw_voided = then_tombstone  # type: ignore[method-assign]
    return releasing, producer


async def test_an_opt_out_looked_up_while_the_release_publishes_is_withdrawn_once(
    stores: DispatchStores,
) -> None:
    """Release read the facts; the batch recorded the opt-out and looked up (the index
    empty); the release published and confirmed. Before: never withdrawn."""
    clock = Clock(NOW.timestamp())
    (releasing, producer), (batch, batch_producer) = await due_at_release(stores, clock)
    update, meanwhile = opting_out(batch)
    racing = ChangedMeanwhile(stores.facts, meanwhile)
    releasing.facts = racing  # type: ignore[assignment]
    assert await releasing.release_due() == 1
    assert racing.ran == 1
    assert len(producer.sent) == 1
    assert batch_producer.withdrawn == []
    (notice,) = [orjson.loads(p.payload) for p in producer.withdrawn]
    assert (notice["task_id"], notice["reason"]) == ("w1", "opt_out")
    assert dt.datetime.fromisoformat(notice["occurred_at"]) == CHANGED
    ledger = stores.ledger
    assert await ledger.state("w1") == "sent"
    assert await ledger.published_of([SUB], clock()) == [[]]
    assert sum((await ledger.unanswered()).values()) == 0
    assert await ledger.pending_count() == 0
    # The batch read again (its offsets not committed) finds nothing more.
    await batch.withdrawals.withdraw(profile_changes([update]))
    assert batch_producer.withdrawn == []


async def test_with_no_withdrawals_topic_a_tombstone_during_the_release_leaves_no_payload(
    stores: DispatchStores,
) -> None:
    """Sinks given no withdrawals topic: the release read the facts before the tombstone's
    erasure and confirmed after it. Before, its confirm did not look at the mark and wrote
    the erased subscriber's payload and index entry after the erasure; and the erasure
    itself did not run without a topic."""
    clock = Clock(NOW.timestamp())
    (releasing, producer), (batch, batch_producer) = await due_at_release(stores, clock, None)
    at = CHANGED.timestamp()

    async def meanwhile() -> None:
        await batch.subscribers.forget([SUB], ["m"], {SUB: at})
        await batch.withdrawals.withdraw(profile_changes((), [SUB], {SUB: at}, at))

    releasing.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    assert await releasing.release_due() == 1
    assert len(producer.sent) == 1
    assert producer.withdrawn + batch_producer.withdrawn == []
    ledger = stores.ledger
    assert await ledger.state("w1") == "sent"
    assert await ledger.body("w1") is None
    assert await ledger.published_of([SUB], clock()) == [[]]
    assert sum((await ledger.unanswered()).values()) == 0


async def test_the_confirm_leaves_a_void_task_pending_and_its_redrive_withdraws_it(
    stores: DispatchStores,
) -> None:
    """The confirm's look, alone: a task the facts make void stays pending and out of the
    indexes (a worker dying before its withdrawal leaves it so); the re-drive drops it
    (`opt_out`) and withdraws it. A task whose `made` is `inf` is not looked at against
    a tombstone, a task made after the opt-in again is not void."""
    clock = Clock(RELEASE.timestamp())
    ledger = stores.ledger
    await stores.facts.record([opt_out()])
    await ledger.claim([("a", b"{}"), ("b", b"{}")])
    expiry = (NOW + dt.timedelta(days=3)).timestamp()
    void = await ledger.confirm(
        ["a", "b"],
        awaiting={"a": ("sms", expiry), "b": ("outbound_call", expiry)},
        subscribers={"a": SUB, "b": SUB},
        made={"a": NOW.timestamp(), "b": float("inf")},
    )
    assert void == {"a": (WithdrawReason.OPT_OUT, CHANGED.timestamp())}
    assert await ledger.state("a") == "pending"
    assert await ledger.state("b") == "sent"
    assert await ledger.published_of([SUB], clock()) == [["b"]]

    redriving, producer = sink(stores, clock)
    await ledger.claim([("w2", waiting("w2").model_dump_json().encode())])
    assert await redriving.redrive(older_than=0) == 1
    assert await ledger.state("w2") == "dropped"
    (notice,) = [orjson.loads(p.payload) for p in producer.withdrawn]
    assert (notice["task_id"], notice["reason"]) == ("w2", "opt_out")


async def test_a_closed_line_or_a_tombstone_is_read_by_the_confirm(
    stores: DispatchStores,
) -> None:
    """A line closed (not active nor suspended after), then a tombstone: each makes void a
    task made before it, dated by the change (the tombstone's own time)."""
    ledger = stores.ledger
    expiry = (NOW + dt.timedelta(days=3)).timestamp()

    async def confirm(made: float) -> Voided:
        return await ledger.confirm(
            ["a"], awaiting={"a": ("sms", expiry)}, subscribers={"a": SUB}, made={"a": made}
        )

    closed = ProfileEvent(event_id="p2", subscriber_id=SUB, occurred_at=CHANGED, status="closed")
    await stores.facts.record([closed])
    await ledger.claim([("a", b"{}")])
    assert await confirm(NOW.timestamp()) == {"a": (WithdrawReason.CLOSED, CHANGED.timestamp())}
    erased = CHANGED.timestamp() + 5
    await stores.facts.forget([SUB], CHANGED.timestamp() + 30, {SUB: erased})
    assert await confirm(NOW.timestamp()) == {"a": (WithdrawReason.FORGOTTEN, erased)}
    # Made after the erasure (events after a tombstone are new): confirmed.
    assert await confirm(CHANGED.timestamp() + 60) == {}
    assert await ledger.state("a") == "sent"


async def test_a_release_racing_a_tombstone_leaves_no_payload_of_the_erased(
    stores: DispatchStores,
) -> None:
    """Release read the facts; the batch erased the subscriber (its tombstone: the
    published index and the bodies it names, none yet); the release published, and its
    confirm found the task void, `forgotten`. Withdrawn by the release, it was then
    confirmed with its body for an outcome to come: the erased subscriber's payload
    (`body:<id>`) was written after their erasure, in no index a tombstone reads, and
    kept until a day after the task expired; an outcome of it acts on nothing anyway."""
    clock = Clock(NOW.timestamp())
    (releasing, producer), (batch, _) = await due_at_release(stores, clock)

    async def meanwhile() -> None:
        await batch.subscribers.forget([SUB], [])
        changes = profile_changes([], forgotten=[SUB], now=clock())
        await batch.withdrawals.withdraw(changes)

    racing = ChangedMeanwhile(stores.facts, meanwhile)
    releasing.facts = racing  # type: ignore[assignment]
    assert await releasing.release_due() == 1
    assert racing.ran == 1
    (notice,) = [orjson.loads(p.payload) for p in producer.withdrawn]
    assert (notice["task_id"], notice["reason"]) == ("w1", "forgotten")
    ledger = stores.ledger
    assert await ledger.state("w1") == "sent"
    assert await ledger.body("w1") is None


async def test_a_task_withdrawn_by_its_confirm_has_its_payload_erased_by_a_later_tombstone(
    stores: DispatchStores,
) -> None:
    """The opt-out race above: the release withdraws the task and confirms it, its body
    kept for an outcome, and indexed as no other withdrawn task is: a tombstone read later
    erased the bodies the subscriber's published index names, and this one it never named;
    the erased subscriber's payload stayed until a day after the task expired."""
    clock = Clock(NOW.timestamp())
    (releasing, producer), (batch, _) = await due_at_release(stores, clock)
    _, meanwhile = opting_out(batch)
    releasing.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    assert await releasing.release_due() == 1
    assert [orjson.loads(p.payload)["reason"] for p in producer.withdrawn] == ["opt_out"]
    ledger = stores.ledger
    assert await ledger.body("w1") is not None  # an outcome may still come
    assert await ledger.published_of([SUB], clock()) == [[]]
    assert sum((await ledger.unanswered()).values()) == 0

    clock.now += 60
    await batch.subscribers.forget([SUB], [])
    await batch.withdrawals.withdraw(profile_changes([], forgotten=[SUB], now=clock()))
    assert await ledger.body("w1") is None


async def test_a_tombstone_between_the_withdrawal_and_its_confirm_leaves_no_payload(
    stores: DispatchStores,
) -> None:
    """The opt-out race above, and a tombstone applied between the release's withdrawal
    and the confirm that keeps the body (its mark, then the erasure of the index and the
    bodies it names, this one not there yet): that confirm wrote the body with no look
    at the mark, and the erased subscriber's payload stayed."""
    clock = Clock(NOW.timestamp())
    releasing, producer = await tombstone_after_the_withdrawal(stores, clock)
    assert await releasing.release_due() == 1
    assert [orjson.loads(p.payload)["reason"] for p in producer.withdrawn] == ["opt_out"]
    ledger = stores.ledger
    assert await ledger.state("w1") == "sent"
    assert await ledger.body("w1") is None
    assert sum((await ledger.unanswered()).values()) == 0


@pytest.fixture(params=["redis", "memory"])
def either_stores(request: pytest.FixtureRequest, stores: DispatchStores) -> DispatchStores:
    """The Redis stores, or the backtest's in memory on the real clock (as the Redis
    ledger's `claim_stale` reads it)."""
    return stores if request.param == "redis" else memory_stores()


async def test_a_task_a_tombstone_took_out_of_the_queue_is_redriven_with_no_withdrawal(
    either_stores: DispatchStores,
) -> None:
    """A worker dies between the tombstone's `_FORGET` (its waiting task back to pending)
    and the decision that drops it: the re-drive drops it `forgotten`, and, as with no
    crash, withdraws nothing. It waited in the queue and was never published; before,
    the re-drive withdrew it as it withdraws any task dropped `forgotten`, which wrote
    the erased subscriber's id onto the withdrawals topic for a task no consumer saw.
    A task left pending by a worker that died publishing (`w2`) is still withdrawn."""
    clock = Clock(NOW.timestamp())
    forgetting, producer = sink(either_stores, clock)
    forgetting.add(waiting())
    await forgetting.flush()
    assert await either_stores.ledger.state("w1") == "deferred"
    await either_stores.ledger.claim([("w2", waiting("w2").model_dump_json().encode())])

    async def dies(taken: Any, at: float) -> None:
        raise RuntimeError("the worker died before deciding")

    forgetting.subscribers._decide = dies
    with pytest.raises(RuntimeError, match="died"):
        await forgetting.subscribers.forget([SUB], ["m"])
    assert await either_stores.ledger.state("w1") == "pending"

    redriving, redrove = sink(either_stores, clock)
    assert await redriving.redrive(older_than=0) == 2
    assert [await either_stores.ledger.state(i) for i in ("w1", "w2")] == ["dropped"] * 2
    assert (producer.sent, producer.withdrawn, redrove.sent) == ([], [], [])
    (notice,) = [orjson.loads(p.payload) for p in redrove.withdrawn]
    assert (notice["task_id"], notice["reason"]) == ("w2", "forgotten")


async def test_the_unsent_mark_of_a_task_a_tombstone_dropped_expires_with_its_entry(
    stores: DispatchStores, redis_url: str
) -> None:
    """The tombstone's script marks the waiting task `unsent` for its entry's PTTL then (the
    ledger's TTL, 10 days here); the drop cuts the entry to a day past the task's expiry
    (4 days). The mark lived on for the 10 days."""
    clock = Clock(NOW.timestamp())
    w, _ = sink(stores, clock)
    w.add(waiting())
    await w.flush()
    at = CHANGED.timestamp()
    await w.subscribers.forget([SUB], ["m"], {SUB: at})
    ledger = stores.ledger
    assert isinstance(ledger, TaskLedger)
    assert await ledger.state("w1") == "dropped"
    assert await ledger.unsent(["w1"]) == {"w1"}
    client = Redis.from_url(redis_url)
    try:
        entry = await client.pttl(ledger.key("w1"))
        mark = await client.pttl(ledger.unsent_key("w1"))
    finally:
        await client.aclose()
    assert 0 < entry < 5 * 86400 * 1000
    assert 0 < mark <= entry


async def test_a_crash_after_the_confirm_that_found_the_tombstone_sends_one_notice(
    either_stores: DispatchStores,
) -> None:
    """The tombstone race above, and the worker dying after the confirm that found the
    tombstone: that confirm left the task pending for one more (confirmed with no body, in
    no index), and the re-drive dropped it `forgotten` and withdrew it again: a second
    notice of one task, under another reason. The confirm that finds the tombstone
    confirms it so itself."""
    clock = Clock(NOW.timestamp())
    releasing, producer = await tombstone_after_the_withdrawal(either_stores, clock)
    real = either_stores.ledger

    class DiesAfterTheWithdrawnConfirm:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def confirm(self, *args: Any, **kwargs: Any) -> Voided:
            voided = await real.confirm(*args, **kwargs)
            if kwargs.get("withdrawn"):
                raise RuntimeError("the worker died after the confirm of its withdrawal")
            return voided

    releasing.ledger = DiesAfterTheWithdrawnConfirm()
    with pytest.raises(RuntimeError, match="died"):
        await releasing.release_due()

    redriving, redrove = sink(either_stores, clock)
    await redriving.redrive(older_than=-3600)  # pending since the release, ahead of now
    notices = [orjson.loads(p.payload) for p in producer.withdrawn + redrove.withdrawn]
    assert [(n["task_id"], n["reason"]) for n in notices] == [("w1", "opt_out")]
    assert await real.state("w1") == "sent"
    assert await real.body("w1") is None
    assert await real.pending_count() == 0


async def test_a_task_withdrawn_before_a_crash_is_not_published_again_by_its_redrive(
    either_stores: DispatchStores,
) -> None:
    """The opt-out race: the release's confirm finds the task void, it is withdrawn, and
    the worker dies before the confirm after the notice. The customer opts back in; the
    re-drive, deciding the task again, published it under the id it had withdrawn (a
    withdrawal is final: docs/consuming-tasks.md). It takes the void path up where the
    worker left it: the same notice again (same reason and `occurred_at`), then the
    confirm, nothing published."""
    clock = Clock(NOW.timestamp())
    (releasing, producer), (batch, _) = await due_at_release(either_stores, clock)
    _, meanwhile = opting_out(batch)
    releasing.facts = ChangedMeanwhile(either_stores.facts, meanwhile)  # type: ignore[assignment]
    withdraw_voided = releasing.withdrawals.withdraw_voided

    async def then_dies(voided: Any) -> None:
        await withdraw_voided(voided)
        raise RuntimeError("the worker died after the withdrawal")

    releasing.withdrawals.withdraw_voided = then_dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="died"):
        await releasing.release_due()
    assert len(producer.sent) == 1
    opt_in = ProfileEvent(
        event_id="p3", subscriber_id=SUB, occurred_at=RELEASE + dt.timedelta(minutes=1), opt_out=[]
    )
    await either_stores.facts.record([opt_in])

    redriving, redrove = sink(either_stores, clock)
    await redriving.redrive(older_than=-3600)  # pending since the release, ahead of now
    assert redrove.sent == []
    first, *again = [orjson.loads(p.payload) for p in producer.withdrawn + redrove.withdrawn]
    assert (first["task_id"], first["reason"]) == ("w1", "opt_out")
    assert [(n["task_id"], n["reason"], n["occurred_at"]) for n in again] == [
        ("w1", "opt_out", first["occurred_at"])
    ]
    ledger = either_stores.ledger
    assert await ledger.state("w1") == "sent"
    assert await ledger.pending_count() == 0
    assert await ledger.published_of([SUB], clock()) == [[]]
    assert sum((await ledger.unanswered()).values()) == 0


async def test_a_new_holders_task_resumed_void_is_not_taken_for_erased_by_its_batchs_tombstone(
    either_stores: DispatchStores,
) -> None:
    """A batch erases the number (a tombstone) and makes a task of its new holder after
    it; an opt-out recorded before the task's confirm makes it void, and the worker dies
    after the withdrawal. Its worker's confirm dated the task when its batch began
    dispatching; the re-drive's (`_resume_void`) dates it at its `created_at`, earlier.
    The tombstone's mark is put just before that (`made_after`), so the re-drive does not
    take the task for erased either: confirmed with its payload, indexed as withdrawn
    (a later tombstone finds it), as its worker would have."""
    clock = Clock(NOW.timestamp())
    batch, producer = sink(either_stores, clock)
    other, _ = sink(either_stores, clock)
    made = waiting("n1").model_copy(update={"deliver_after": NOW, "deferred": None})
    clock.now = NOW.timestamp() + 30  # the batch publishes a while after making it
    await batch.subscribers.forget([SUB], [], made={SUB: made.created_at.timestamp()})
    update = ProfileEvent(
        event_id="p1",
        subscriber_id=SUB,
        occurred_at=NOW + dt.timedelta(seconds=40),
        opt_out=[Channel.SMS],
    )
    real = either_stores.ledger

    class OptOutThenDies:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def confirm(self, *args: Any, **kwargs: Any) -> Voided:
            if kwargs.get("withdrawn") is not None:
                raise RuntimeError("the worker died before the confirm of its withdrawal")
            await other.subscribers.record_facts([update])
            return await real.confirm(*args, **kwargs)

    batch.ledger = OptOutThenDies()
    batch.add(made)
    with pytest.raises(RuntimeError, match="died"):
        await batch.flush()
    assert len(producer.sent) == 1
    assert await real.state("n1") == "pending"

    redriving, redrove = sink(either_stores, clock)
    await redriving.redrive(older_than=-3600)  # pending since the flush, ahead of now
    notices = [orjson.loads(p.payload) for p in producer.withdrawn + redrove.withdrawn]
    assert [(n["task_id"], n["reason"]) for n in notices] == [("n1", "opt_out")] * 2
    assert redrove.sent == []
    assert await real.state("n1") == "sent"
    assert await real.body("n1") is not None
    clock.now += 60  # a later tombstone finds it
    await other.subscribers.forget([SUB], [])
    await other.withdrawals.withdraw(profile_changes([], forgotten=[SUB], now=clock()))
    assert await real.body("n1") is None
