"""A task released from waiting (or re-driven, or a retry) races a profile change of its
subscriber handled by a batch at the same moment: the release read the facts before the
change was recorded, and the batch looked the subscriber's published tasks up before the
release confirmed its publish. The task went out and neither path withdrew it. The
confirm now looks at the facts again, in the step that indexes the task: a task they make
void is withdrawn by its release, once, whichever path looks last. On the memory stores
the backtest uses; tests/integration/test_withdrawal_race.py runs it on Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import Channel, Deferral, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores
from sinks.withdrawals import WITHDRAWALS_TOPIC, profile_changes

from .fakes import ChangedMeanwhile, Clock, FakeProducer, Sent
from .test_redrive_withdrawals_owed import RefusingProducer

NOW = dt.datetime(2026, 12, 3, 2, tzinfo=dt.UTC)  # 10:00 in Shanghai
RELEASE = NOW + dt.timedelta(hours=1)
CHANGED = RELEASE - dt.timedelta(minutes=1)
SUB = "13300000002"
CHANGES = ["opt_out", "closed", "forgotten"]


def waiting() -> ServiceTask:
    """An SMS that waits an hour (quiet hours, as gating deferred it)."""
    return ServiceTask(
        task_id="w1",
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


class Worker:
    """One worker's sink on the shared stores, deciding at `clock`, with withdrawals
    published to `topic` (None: a sink configured with no withdrawals topic)."""

    def __init__(
        self, stores: DispatchStores, clock: Clock, topic: str | None = WITHDRAWALS_TOPIC
    ) -> None:
        self.producer = CollectingProducer(clock)
        self.metrics = Metrics()
        self.sink = TaskSink(
            self.producer,
            "tasks",
            stores,
            self.metrics,
            DispatchPolicy(),
            clock=clock,
            withdrawals_topic=topic,
        )

    def notices(self) -> list[dict[str, object]]:
        return [orjson.loads(p.payload) for p in self.producer.withdrawn]

    def withdrawn(self, reason: str) -> float:
        labels = {"moment_type": "m", "reason": reason}
        return self.metrics.registry.get_sample_value("moments_tasks_withdrawn_total", labels) or 0


def batch(
    w: Worker, change: str
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """A batch handling the change, as `Runtime._publish` does: its facts recorded (or the
    tombstone's erasure), then its withdrawals looked up and published."""
    at = CHANGED.timestamp()
    if change == "forgotten":

        async def record() -> None:
            await w.sink.subscribers.forget([SUB], ["m"], {SUB: at})

        changes = profile_changes((), [SUB], {SUB: at}, at)
    else:
        fields = {"opt_out": ["sms"]} if change == "opt_out" else {"status": "closed"}
        update = ProfileEvent.model_validate(
            {"event_id": "p1", "subscriber_id": SUB, "occurred_at": CHANGED, **fields}
        )

        async def record() -> None:
            await w.sink.subscribers.record_facts([update])

        changes = profile_changes([update])

    async def look_up() -> None:
        await w.sink.withdrawals.withdraw(changes)

    return record, look_up


async def parked(
    stores: DispatchStores, clock: Clock, topic: str | None = WITHDRAWALS_TOPIC
) -> Worker:
    w = Worker(stores, clock, topic)
    w.sink.add(waiting())
    await w.sink.flush()
    assert await stores.ledger.state("w1") == "deferred"
    clock.now = RELEASE.timestamp()
    return w


@pytest.mark.parametrize("change", CHANGES)
async def test_a_change_looked_up_while_the_release_publishes_withdraws_the_task(
    change: str,
) -> None:
    """Release read the facts; the batch recorded the change and looked up (nothing
    there); the release published and confirmed. Before: published, never withdrawn."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    other = Worker(stores, clock)  # the batch's worker
    record, look_up = batch(other, change)

    async def meanwhile() -> None:
        await record()
        await look_up()

    racing = ChangedMeanwhile(stores.facts, meanwhile)
    w.sink.facts = racing  # type: ignore[assignment]
    assert await w.sink.release_due() == 1
    assert racing.ran == 1
    assert len(w.producer.sent) == 1  # it went out: the release read the facts before
    assert other.notices() == []  # the batch looked before the task was indexed
    (notice,) = w.notices()
    assert (notice["task_id"], notice["reason"], notice["channel"]) == ("w1", change, "sms")
    assert dt.datetime.fromisoformat(str(notice["occurred_at"])) == CHANGED
    assert w.withdrawn(change) == 1
    assert await stores.ledger.state("w1") == "sent"
    assert await stores.ledger.published_of([SUB], clock()) == [[]]
    assert sum((await stores.ledger.unanswered()).values()) == 0  # no outcome expected
    assert await stores.ledger.pending_count() == 0


async def test_a_release_whose_withdrawal_is_refused_owes_it_to_the_timer() -> None:
    """The race above, the withdrawals topic refusing (an ACL): the release publishes the
    task and raises nothing (the refusal stopped the worker), the notice owed in the
    ledger; the re-drive timer publishes it once the topic takes it, counted once."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    refusing = RefusingProducer(clock)
    refusing.refusing = True
    w.sink.withdrawals.producer = refusing
    record, look_up = batch(Worker(stores, clock), "opt_out")

    async def meanwhile() -> None:
        await record()
        await look_up()

    w.sink.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    assert await w.sink.release_due() == 1
    assert len(w.producer.sent) == 1
    assert refusing.withdrawn == []
    assert [i for i, _ in await stores.ledger.owed_withdrawals(-1.0)] == ["standing:w1"]
    assert w.withdrawn("opt_out") == 0

    refusing.refusing = False
    clock.now += 60
    await w.sink.redrive(30)
    published = [orjson.loads(p.payload) for p in refusing.withdrawn]
    assert [(n["task_id"], n["reason"]) for n in published] == [("w1", "opt_out")]
    assert w.withdrawn("opt_out") == 1
    assert await stores.ledger.owed_withdrawals(-1.0) == []


@pytest.mark.parametrize("change", CHANGES)
async def test_the_payload_of_a_task_its_release_withdrew_goes_with_a_tombstone(
    change: str,
) -> None:
    """The race above: the release withdraws the task and confirms it. Its payload
    (`body:<id>`) was kept for an outcome in no index: after the tombstone that made the
    task void, and after one read later, the erased subscriber's payload stayed until a
    day past the task's expiry. Now it is not written for a task of an erased subscriber,
    and the task is indexed as withdrawn for a later tombstone to erase its payload."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    other = Worker(stores, clock)
    record, look_up = batch(other, change)

    async def meanwhile() -> None:
        await record()
        await look_up()

    w.sink.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    assert await w.sink.release_due() == 1
    assert [n["reason"] for n in w.notices()] == [change]
    kept = await stores.ledger.body("w1")
    assert (kept is None) == (change == "forgotten")  # else kept for an outcome
    assert await stores.ledger.published_of([SUB], clock()) == [[]]
    assert sum((await stores.ledger.unanswered()).values()) == 0

    clock.now += 60
    erase, erase_look_up = batch(other, "forgotten")
    await erase()
    await erase_look_up()
    assert await stores.ledger.body("w1") is None


@pytest.mark.parametrize("change", CHANGES)
async def test_a_change_recorded_during_the_release_and_looked_up_after_is_withdrawn_once(
    change: str,
) -> None:
    """The batch recorded the change while the release decided, and looked up after the
    release confirmed: one notice, the release's (the task never entered the index)."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    other = Worker(stores, clock)
    record, look_up = batch(other, change)
    w.sink.facts = ChangedMeanwhile(stores.facts, record)  # type: ignore[assignment]
    assert await w.sink.release_due() == 1
    await look_up()
    assert [n["task_id"] for n in w.notices() + other.notices()] == ["w1"]


async def test_a_change_looked_up_after_the_confirm_is_withdrawn_by_the_batch() -> None:
    """The ordinary case stays as it was: the batch finds the task in the index."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    assert await w.sink.release_due() == 1
    other = Worker(stores, clock)
    record, look_up = batch(other, "opt_out")
    await record()
    await look_up()
    assert w.notices() == []
    assert [n["task_id"] for n in other.notices()] == ["w1"]


async def test_a_suspension_meanwhile_withdraws_nothing() -> None:
    """A line suspended while the release publishes: the task stays published and indexed
    (docs/consuming-tasks.md, "A suspended line withdraws nothing"); a guard, no bug."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    other = Worker(stores, clock)
    update = ProfileEvent(event_id="p2", subscriber_id=SUB, occurred_at=CHANGED, status="suspended")

    async def meanwhile() -> None:
        await other.sink.subscribers.record_facts([update])
        await other.sink.withdrawals.withdraw(profile_changes([update]))

    w.sink.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    assert await w.sink.release_due() == 1
    assert len(w.producer.sent) == 1
    assert w.notices() + other.notices() == []
    assert await stores.ledger.published_of([SUB], clock()) == [["w1"]]


class ChangingProducer(FakeProducer, CollectingProducer):
    """A producer that runs `meanwhile` once, as it is handed the first task: another
    worker's batch, while this one publishes; then it collects the record, as the
    backtest's producer does."""

    def __init__(self, clock: Clock, meanwhile: Callable[[], Awaitable[None]]) -> None:
        CollectingProducer.__init__(self, clock)
        self.meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def take(self, record: Sent) -> Awaitable[Any]:
        if record.topic == "tasks" and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            await run()
        return await CollectingProducer.send(self, *record)


def fresh() -> ServiceTask:
    """The engine's task of a batch, sent at once."""
    return waiting().model_copy(update={"deliver_after": NOW, "deferred": None})


async def test_a_tombstone_read_while_a_batch_publishes_withdraws_its_fresh_task() -> None:
    """A worker revoked while its batch's task goes out; the partition's next owner reads
    the tombstone after it (its clock later) and looks the index up before the confirm.
    The engine's fresh tasks were not looked at against a tombstone at all (`inf`): the
    task went out, indexed after the lookup, and neither withdrew it. They are now, as
    made when their batch began dispatching (after its own tombstones)."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    other = Worker(stores, Clock(NOW.timestamp() + 1))
    record, look_up = batch(other, "forgotten")

    async def meanwhile() -> None:
        await record()
        await look_up()

    producer = ChangingProducer(clock, meanwhile)
    w.producer = w.sink.producer = w.sink.withdrawals.producer = producer
    w.sink.add(fresh())
    await w.sink.flush()
    assert producer.meanwhile is None
    assert len(producer.sent) == 1
    assert other.notices() == []
    assert [(n["task_id"], n["reason"]) for n in w.notices()] == [("w1", "forgotten")]
    assert await stores.ledger.published_of([SUB], clock()) == [[]]


async def test_a_fresh_task_made_after_its_batchs_tombstone_at_the_same_instant_stands() -> None:
    """The batch's own tombstone, recorded at the instant its tasks are dispatched (a
    backtest's clock does not move between them): a task of the number's new holder is
    not withdrawn."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    record, look_up = batch(w, "forgotten")
    await record()
    await look_up()
    w.sink.add(fresh())
    await w.sink.flush()
    assert len(w.producer.sent) == 1
    assert w.notices() == []
    assert await stores.ledger.published_of([SUB], clock()) == [["w1"]]


async def test_a_tombstone_between_the_withdrawal_and_its_confirm_leaves_no_payload() -> None:
    """The release's confirm found the task void (an opt-out), withdrew it, and confirmed
    it again to keep its body for an outcome. A tombstone applied between the two (its
    mark, then the erasure of the published index and the bodies it names: this one not
    there yet) was followed by that body written with no look at the mark: the erased
    subscriber's payload stayed until a day after the task expired."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    other = Worker(stores, clock)
    record, look_up = batch(other, "opt_out")

    async def meanwhile() -> None:
        await record()
        await look_up()

    w.sink.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
    withdraw_voided = w.sink.withdrawals.withdraw_voided
    erase, erase_look_up = batch(other, "forgotten")

    async def then_tombstone(voided: Any) -> None:
        await withdraw_voided(voided)
        clock.now += 1
        await erase()
        await erase_look_up()

    w.sink.withdrawals.withdraw_voided = then_tombstone  # type: ignore[method-assign]
    assert await w.sink.release_due() == 1
    assert [n["reason"] for n in w.notices()] == ["opt_out"]
    assert await stores.ledger.state("w1") == "sent"
    assert await stores.ledger.body("w1") is None


class TestWithNoWithdrawalsTopic:
    """A sink given no withdrawals topic (`TaskSink`'s default) publishes no notices, but
    a tombstone erases the subscriber's published tasks and a confirm looks at the facts
    as with one: the erasure is not a notice, and no consumer hears of a task either way.
    Before: `withdraw` returned at once, and the confirm did not look."""

    @pytest.mark.parametrize("topic", [None, WITHDRAWALS_TOPIC], ids=["no-topic", "topic"])
    async def test_a_tombstone_erases_the_published_tasks_payloads(self, topic: str | None) -> None:
        clock = Clock(NOW.timestamp())
        stores = memory_stores(clock)
        w = Worker(stores, clock, topic)
        w.sink.add(fresh())
        await w.sink.flush()
        assert await stores.ledger.published_of([SUB], clock()) == [["w1"]]
        clock.now += 60
        record, look_up = batch(w, "forgotten")
        await record()
        await look_up()
        assert await stores.ledger.body("w1") is None
        assert await stores.ledger.published_of([SUB], clock()) == [[]]
        assert len(w.notices()) == (0 if topic is None else 1)

    async def test_a_release_racing_a_tombstone_writes_no_payload_after_the_erasure(
        self,
    ) -> None:
        """The release read the facts before the tombstone's erasure ran, and confirmed
        after it: its confirm wrote the erased subscriber's payload and indexed the task
        again, after the erasure, for a day past its expiry."""
        clock = Clock(NOW.timestamp())
        stores = memory_stores(clock)
        w = await parked(stores, clock, None)
        other = Worker(stores, clock, None)
        record, look_up = batch(other, "forgotten")

        async def meanwhile() -> None:
            await record()
            await look_up()

        w.sink.facts = ChangedMeanwhile(stores.facts, meanwhile)  # type: ignore[assignment]
        assert await w.sink.release_due() == 1
        assert len(w.producer.sent) == 1  # it went out: the release read the facts before
        assert w.notices() + other.notices() == []
        assert await stores.ledger.state("w1") == "sent"
        assert await stores.ledger.body("w1") is None
        assert await stores.ledger.published_of([SUB], clock()) == [[]]
        assert sum((await stores.ledger.unanswered()).values()) == 0


async def test_the_unsent_mark_of_a_task_a_tombstone_dropped_expires_with_its_entry() -> None:
    """A tombstone takes the waiting task out of the queue and marks it `unsent` for as
    long as its entry then lives (the ledger's whole TTL); its drop (`forgotten`) cuts the
    entry to a day past the task's expiry. The mark outlived the entry by the rest of the
    TTL (400 days on the stream); it now expires with it, as on Redis
    (tests/integration/test_withdrawal_race.py)."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = await parked(stores, clock)
    record, _ = batch(w, "forgotten")
    await record()
    ledger = stores.ledger
    assert await ledger.state("w1") == "dropped"
    assert await ledger.unsent(["w1"]) == {"w1"}
    marks, entries = ledger.unsent_marks, ledger.entries  # type: ignore[attr-defined]
    assert entries["w1"].expires_at < NOW.timestamp() + 10 * 86400  # cut by the drop
    assert marks["w1"].expires_at <= entries["w1"].expires_at
