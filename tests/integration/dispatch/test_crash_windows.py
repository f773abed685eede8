"""A worker that dies between the steps of a decision: a fresh worker's re-drive sends
what the crashed one would have, once. On Redis and in memory alike (the crash is a
store call that raises)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest

from moments.ack import subscriber_of
from moments.cooldowns import CooldownReturn
from moments.models import Channel, OutcomeStatus, ProfileEvent, ServiceTask, TaskOutcome
from moments.outcomes import handle_outcomes
from moments.records import RawRecord
from sinks.base import Headers
from sinks.capacity import CapacityLimiter
from sinks.contact import merge_tasks
from sinks.cooldowns import CollectedCooldownReturns
from sinks.ledger import TaskLedger
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores
from tests.integration.kafka_io import read_written, values

from .conftest import HOUR, NOW, MakeWorker, Worker, published, task, tombstone_before_park

pytestmark = pytest.mark.integration

SUB = "13900000601"


class CrashError(Exception):
    """The worker dies here."""


class DiesOnSend:
    """A producer whose worker dies as it sends."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        raise CrashError(f"publishing to {topic}")


def crashing(stores: DispatchStores, store: str, method: str) -> DispatchStores:
    """`stores` whose `store.method` raises: the writes before it are made, none after."""
    real = getattr(stores, store)

    class Dies:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise CrashError(f"{store}.{method}")

    broken = Dies()
    broken.__dict__[method] = dies
    return dataclasses.replace(stores, **{store: broken})


async def published_then_died(make_worker: MakeWorker, task_id: str) -> None:
    """A worker publishes `task_id` (an SMS to SUB) and dies before recording it (its
    confirm): the entry stays pending for a re-drive."""
    dying = make_worker()
    dying.sink.ledger = crashing(dying.sink.stores, "ledger", "confirm").ledger
    dying.sink.add(task(task_id, sub=SUB))
    with pytest.raises(CrashError):
        await dying.sink.flush()


def sms_closed(make_worker: MakeWorker) -> Worker:
    """A worker whose policy closes SMS for the coming hour: its re-drive parks an SMS."""
    shut = "13:00-14:00" if dt.datetime.now(dt.UTC).hour < 12 else "02:00-03:00"
    return make_worker(DispatchPolicy.model_validate({"timezone": "UTC", "hours": {"sms": shut}}))


class TestSplitGroupAfterACrash:
    async def test_the_moment_that_goes_on_says_what_the_group_waited_for_after_a_crash(
        self, make_worker: MakeWorker
    ) -> None:
        """The waiting task lapses when its quiet hours end; the moment that joined it goes
        on under its own id. The worker dies after it left the group (pending, its own
        id), before the waiting task's drop was written: the re-drive published it with
        its payload as it joined (its own deferral, ten minutes shorter than the group's)."""
        w = make_worker()
        opens = NOW + HOUR
        waits = task("g1", sub=SUB, deliver_after=opens, deferred="quiet_hours")
        await w.send(waits.model_copy(update={"expires_at": opens + dt.timedelta(minutes=3)}))
        own = opens - dt.timedelta(minutes=10)
        await w.send(
            task(
                "g2", sub=SUB, moment_type="low_balance", deliver_after=own, deferred="quiet_hours"
            )
        )
        assert await w.ledger.state("g2") == "merged"
        dying = make_worker()
        dying.sink.stores = stores = crashing(dying.sink.stores, "ledger", "drop_many")
        dying.sink.ledger = stores.ledger
        with pytest.raises(CrashError):
            await dying.sink.release_due(now=opens.timestamp() + 1)
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["pending", "pending"]
        fresh = make_worker()
        fresh.sink.clock = lambda: opens.timestamp() + 2  # as the crashed release's
        # g2 pending since it left the group; g1 since the release, an hour ahead
        assert await fresh.sink.redrive(older_than=0) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["deferred"]["reason"]) == ("g2", "quiet_hours")
        assert dt.datetime.fromisoformat(out["deliver_after"]) == opens
        assert await w.ledger.state("g2") == "sent"


FULL = DispatchPolicy.model_validate(
    {"capacity": {"*": {"sms": 0}}, "reserved_share": 0, "overflow": {"*": {"policy": "drop"}}}
)
"""No SMS room: a task released is dropped, and its rule's cooldown returned."""
RULE = "first_international_roaming"


def waiting(task_id: str) -> ServiceTask:
    """A task made an hour ago that waited for quiet hours to end half an hour ago: its
    release (at NOW, the wall clock's) leaves it pending as of now, for a re-drive."""
    made = NOW - HOUR
    opens = NOW - HOUR / 2
    return task(task_id, sub=SUB, triggered=made, deliver_after=opens, deferred="quiet_hours")


class RefusedReturns(CollectedCooldownReturns):
    """The worker dies sending the returns."""

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        raise CrashError("returns.send")


class TestCooldownReturnsAfterACrash:
    """A task dropped when released returns its rule's cooldown only once the drop is
    durable; what the dying worker owed, another worker's timer sends
    (moments.cooldowns, `OwedReturns.resend`)."""

    async def test_died_before_the_drop_was_written_and_published_after_all(
        self, make_worker: MakeWorker
    ) -> None:
        """The return went out before the drop: the re-drive, finding room, published the
        task with its cooldown given back."""
        w = make_worker(FULL)
        w.sink.clock = lambda: (NOW - HOUR).timestamp()
        await w.send(waiting("r1"))
        returns = CollectedCooldownReturns(lambda: {RULE})
        dying = make_worker(FULL)
        dying.sink.returns = returns
        dying.sink.stores = stores = crashing(dying.sink.stores, "ledger", "drop_many")
        dying.sink.ledger = stores.ledger
        with pytest.raises(CrashError):
            await dying.sink.release_due(now=NOW.timestamp())
        assert returns.pending == []
        assert await w.ledger.state("r1") == "pending"
        fresh = make_worker()  # room now
        fresh.sink.returns = returns
        assert await fresh.sink.redrive(older_than=0) == 1
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "r1"
        assert await w.ledger.state("r1") == "sent"
        assert returns.pending == []
        assert await w.ledger.owed_returns(0) == []

    async def test_died_after_the_drop_the_next_worker_sends_it_once(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker(FULL)
        w.sink.clock = lambda: (NOW - HOUR).timestamp()
        await w.send(waiting("r2"))
        dying = make_worker(FULL)
        dying.sink.returns = RefusedReturns(lambda: {RULE})
        with pytest.raises(CrashError):
            await dying.sink.release_due(now=NOW.timestamp())
        assert await w.ledger.state("r2") == "dropped"
        returns = CollectedCooldownReturns(lambda: {RULE})
        fresh = make_worker(FULL)
        fresh.sink.returns = returns
        await fresh.sink.redrive(older_than=0)
        assert [(r.task_id, r.rule_id) for r in returns.take()] == [("r2", RULE)]
        await fresh.sink.redrive(older_than=0)
        assert returns.pending == []
        assert await w.ledger.owed_returns(0) == []

    async def test_a_merged_tasks_retry_owes_a_return_for_each_moment(
        self, make_worker: MakeWorker
    ) -> None:
        """The retry of an unanswered task that carried a second moment (`related`) is
        dropped (no room); the worker dies sending the returns. Both moments' returns are
        owed, each under its own key, and the next worker's timer sends both, once. Only
        the lead's was made, and one owed under the retry's id could hold no second."""
        lead = task("m1", sub=SUB, triggered=NOW - HOUR)
        other = task("m2", sub=SUB, moment_type="low_balance", triggered=NOW - HOUR / 2)
        merged = merge_tasks("m1", [lead, other])
        retry = merged.model_copy(update={"task_id": "m1r", "attempt": 1, "retry_of": "m1"})
        rules = {RULE, "low_balance"}
        dying = make_worker(FULL)
        dying.sink.returns = RefusedReturns(lambda: rules)
        with pytest.raises(CrashError):
            await dying.sink.dispatch([retry])
        assert await dying.ledger.state("m1r") == "dropped"
        assert len(await dying.ledger.owed_returns(0)) == 2
        returns = CollectedCooldownReturns(lambda: rules)
        fresh = make_worker(FULL)
        fresh.sink.returns = returns
        await fresh.sink.redrive(older_than=0)
        got = sorted((r.rule_id, r.mark, r.entry) for r in returns.take())
        assert got == [
            ("first_international_roaming", int(lead.triggered_at.timestamp()), "m1r"),
            ("low_balance", int(other.triggered_at.timestamp()), "m1r"),
        ]
        await fresh.sink.redrive(older_than=0)
        assert returns.pending == []
        assert await dying.ledger.owed_returns(0) == []


class TestCooldownKeptAfterAProduce:
    """A task that may have gone out (produced, its worker dead before the confirm) and is
    dropped when decided again keeps its rule's cooldown: given back, the rule fired again
    and the customer was contacted a second time, under a new id. Before, every such drop
    but an answered one returned it."""

    async def test_redriven_after_an_outage_past_its_last_send(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker()
        await published_then_died(make_worker, "k1")
        fresh = make_worker()
        returns = CollectedCooldownReturns(lambda: {RULE})
        fresh.sink.returns = returns
        late = fresh.sink.policy.last_send(task("k1", sub=SUB)) + 60
        fresh.sink.clock = lambda: late
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("k1") == "dropped"
        assert returns.pending == []
        assert await w.ledger.owed_returns(late) == []
        assert len(await published(w.settings, 1)) == 1  # not sent again

    async def test_its_batch_read_again_after_the_redrive_gives_nothing_back(
        self, make_worker: MakeWorker
    ) -> None:
        """The crash came before the batch's state was written too: read again after the
        re-drive dropped the task, the batch finds it dropped. Before: returned as dropped
        (`_dropped_before`), its cooldown given back in the state the batch writes."""
        w = make_worker()
        await published_then_died(make_worker, "k5")
        fresh = make_worker()
        late = fresh.sink.policy.last_send(task("k5", sub=SUB)) + 60
        fresh.sink.clock = lambda: late
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("k5") == "dropped"
        w.sink.add(task("k5", sub=SUB))  # the batch read again
        assert await w.sink.flush() == set()

    async def test_redriven_after_its_rule_was_declined(self, make_worker: MakeWorker) -> None:
        w = make_worker()
        await published_then_died(make_worker, "k2")
        await w.sink.declines.suppress(SUB, RULE, 86400)
        fresh = make_worker()
        returns = CollectedCooldownReturns(lambda: {RULE})
        fresh.sink.returns = returns
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("k2") == "dropped"
        assert returns.pending == []
        assert await w.ledger.owed_returns(time.time()) == []

    async def test_parked_by_its_redrive_and_dropped_at_the_release(
        self, make_worker: MakeWorker
    ) -> None:
        """A task of one moment on its only channel, parked by the re-drive: its release,
        its rule declined meanwhile, drops it. Before: the release did not look at its
        `redriven:<id>` mark (only a merged task's, or one whose rule falls back), and
        returned its cooldown."""
        w = make_worker()
        await published_then_died(make_worker, "k3")
        fresh = sms_closed(make_worker)
        returns = CollectedCooldownReturns(lambda: {RULE})
        fresh.sink.returns = returns
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("k3") == "deferred"
        await w.sink.declines.suppress(SUB, RULE, 86400 * 2)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        assert await fresh.sink.release_due(now=later.timestamp()) == 1
        assert await w.ledger.state("k3") == "dropped"
        assert returns.pending == []
        assert await w.ledger.owed_returns(later.timestamp()) == []


class TestCooldownReturnedAfterAClaim:
    async def test_its_batch_read_again_after_the_redrive_gives_it_back_too(
        self, make_worker: MakeWorker
    ) -> None:
        """The engine made the task with less than `min_time_left` to live, and its worker
        died after the claim, before the decision and the batch's state. The re-drive
        drops it `expired` and returns its cooldown: it went pending after its last send,
        so it never went out. The batch read again then gives the cooldown back too
        (whichever the engine applies first, the other finds the mark gone). Before: kept
        as a task that may have gone out (`_dropped_before` read the `redriven:<id>` mark
        alone), and a return read before the batch again found no mark to remove: the
        rule stayed in cooldown for a task never sent."""
        w = make_worker()
        short = task("k6", sub=SUB, expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
        assert w.sink.policy.last_send(short) < time.time()
        assert await w.ledger.claim([("k6", task_bytes(short))]) == [1]
        fresh = make_worker()
        returns = CollectedCooldownReturns(lambda: {RULE})
        fresh.sink.returns = returns
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("k6") == "dropped"
        assert await w.ledger.redriven(["k6"]) == {"k6"}
        assert [r.task_id for r in returns.pending] == ["k6"]
        w.sink.add(short)  # the batch read again
        assert await w.sink.flush() == {"k6"}
        assert len(await published(w.settings, 0)) == 0


class TestWithdrawnAtTheRedrive:
    async def test_a_task_sent_then_dropped_at_its_redrive_for_an_opt_out_is_withdrawn(
        self, make_worker: MakeWorker
    ) -> None:
        """The worker dies after publishing the SMS, before recording it (the one duplicate
        window): the task is in no published index. The customer then opts out of SMS; the
        re-drive drops the task (`opt_out`) rather than sending it again, and withdraws it,
        as the consumer may hold the copy that went out. Without it, the withdrawal
        looked only at tasks recorded as sent, and the copy stood."""
        w = make_worker()
        await published_then_died(make_worker, "w1")
        assert [t["task_id"] for t in await published(w.settings, 1)] == ["w1"]
        assert await w.ledger.state("w1") == "pending"
        opt_out = ProfileEvent(event_id="p-1", subscriber_id=SUB, occurred_at=NOW, opt_out=["sms"])
        await w.sink.subscribers.record_facts([opt_out])
        fresh = make_worker()
        fresh.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("w1") == "dropped"
        notices = values(await read_written(w.settings, "task_withdrawals", at_least=1))
        assert [(n["task_id"], n["reason"], n["channel"]) for n in notices] == [
            ("w1", "opt_out", "sms")
        ]
        assert len(await published(w.settings, 1)) == 1  # not sent again
        counted = {"moment_type": "first_international_roaming", "reason": "opt_out"}
        assert fresh.sample("moments_tasks_withdrawn_total", **counted) == 1

    async def test_a_redrive_that_dies_before_its_withdrawal_leaves_it_to_the_next_timer(
        self, make_worker: MakeWorker
    ) -> None:
        """As above, but the re-drive's worker dies after writing the drop, as it publishes
        the withdrawal (a publish refused past the Kafka retries does the same): the notice
        was owed before the drop (`withdrawals:<id>`), and the next worker's timer publishes
        it, once. Before: published after the drop with nothing held, it was lost, the
        entry `X` and never re-driven, and the copy that went out stood."""
        w = make_worker()
        await published_then_died(make_worker, "w3")
        opt_out = ProfileEvent(event_id="p-3", subscriber_id=SUB, occurred_at=NOW, opt_out=["sms"])
        await w.sink.subscribers.record_facts([opt_out])
        dying = make_worker()
        dying.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        dying.sink.withdrawals.producer = DiesOnSend()
        with pytest.raises(CrashError):
            await dying.sink.redrive(older_than=0)
        # The tick's later step, publishing the withdrawals owed (older than 0 s: this one),
        # runs all the same (`sinks.steps.TimerSteps`) and dies the same way: counted, and
        # not raised, the notice owed in the ledger.
        errors = {"step": "withdrawals"}
        assert dying.sample("moments_timer_errors_total", **errors) == 1
        assert await w.ledger.state("w3") == "dropped"

        fresh = make_worker()
        fresh.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        assert await fresh.sink.redrive(older_than=0) == 0
        await fresh.sink.redrive(older_than=0)
        notices = values(await read_written(w.settings, "task_withdrawals", at_least=1))
        assert [(n["task_id"], n["reason"]) for n in notices] == [("w3", "opt_out")]
        assert await w.ledger.owed_withdrawals(0) == []
        assert len(await published(w.settings, 1)) == 1  # not sent again

    async def test_a_redrive_stalled_before_its_drop_withdraws_no_task_another_sent(
        self, make_worker: MakeWorker
    ) -> None:
        """The re-drive owes the withdrawal of the SMS it drops `opt_out`, and stalls before
        writing the drop; the customer opts back in, and another worker's re-drive sends the
        task. The stalled drop writes nothing (the entry is `S`), and its notice is settled
        unpublished (`send_owed` reads the entry again, as the timer does). Before, it was
        published all the same, and the consumer dropped a task sent and standing."""
        w = make_worker()
        await published_then_died(make_worker, "w4")
        opt_out = ProfileEvent(event_id="p-4", subscriber_id=SUB, occurred_at=NOW, opt_out=["sms"])
        await w.sink.subscribers.record_facts([opt_out])
        stalled, other = make_worker(), make_worker()
        for sink in (stalled.sink, other.sink):
            sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        owe = stalled.sink.withdrawals.owe_dropped

        async def owes_then_stalls(dropped: Any) -> Any:
            made = await owe(dropped)
            later = NOW + dt.timedelta(seconds=1)
            opt_in = ProfileEvent(event_id="p-5", subscriber_id=SUB, occurred_at=later, opt_out=[])
            await w.sink.subscribers.record_facts([opt_in])
            assert await other.sink.redrive(older_than=0) == 1
            return made

        stalled.sink.withdrawals.owe_dropped = owes_then_stalls  # type: ignore[method-assign]
        assert await stalled.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("w4") == "sent"
        assert [t["task_id"] for t in await published(w.settings, 2)] == ["w4", "w4"]
        assert values(await read_written(w.settings, "task_withdrawals")) == []
        assert await w.ledger.owed_withdrawals(0) == []

    async def test_a_task_sent_then_parked_at_its_redrive_is_withdrawn_by_a_tombstone(
        self, make_worker: MakeWorker
    ) -> None:
        """The worker dies after publishing the SMS, before recording it; the re-drive,
        under hours for SMS that closed meanwhile, parks it (`redriven:<id>`). A tombstone
        then takes it out of the queue and drops it, and withdraws it: the consumer may hold
        the copy that went out, which no published index names. Before: dropped with no
        withdrawal, and marked `unsent:<id>` ("never published"), so that its re-drive
        after a crash withdrew nothing either."""
        w = make_worker()
        await published_then_died(make_worker, "w1")
        assert [t["task_id"] for t in await published(w.settings, 1)] == ["w1"]
        fresh = sms_closed(make_worker)
        fresh.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state("w1") == "deferred"
        assert await w.ledger.redriven(["w1"]) == {"w1"}

        await fresh.sink.subscribers.forget([SUB], ["first_international_roaming"])

        assert await w.ledger.state("w1") == "dropped"
        assert await w.ledger.unsent(["w1"]) == set()
        notices = values(await read_written(w.settings, "task_withdrawals", at_least=1))
        assert [(n["task_id"], n["reason"]) for n in notices] == [("w1", "forgotten")]
        assert len(await published(w.settings, 1)) == 1  # not sent again

    async def test_a_task_whose_redrive_parks_it_as_a_tombstone_is_applied_is_withdrawn_once(
        self, make_worker: MakeWorker
    ) -> None:
        """The worker dies after publishing the SMS, before recording it; the re-drive,
        under hours for SMS closed meanwhile, parks it just as a tombstone of its
        subscriber is applied (read the facts before the mark, parks after the take). The
        park refuses, leaving it pending, and it is dropped `forgotten` at once: withdrawn,
        once, as the re-drive withdraws what it drops. The refused park marked it
        `unsent:<id>` ("never published"), so that it was withdrawn by no one, neither then
        nor by its re-drive after a crash."""
        w = make_worker()
        await published_then_died(make_worker, "w2")
        fresh = sms_closed(make_worker)
        fresh.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        applied = tombstone_before_park(fresh.sink, w.sink, SUB)
        assert await fresh.sink.redrive(older_than=0) == 1
        assert applied == [SUB]

        assert await w.ledger.state("w2") == "dropped"
        assert await w.ledger.unsent(["w2"]) == set()
        notices = values(await read_written(w.settings, "task_withdrawals", at_least=1))
        assert [(n["task_id"], n["reason"]) for n in notices] == [("w2", "forgotten")]
        assert len(await published(w.settings, 1)) == 1  # not sent again

    async def test_a_decline_of_a_task_the_redrive_parked_acts_on_it_and_the_release_confirms_it(
        self, make_worker: MakeWorker
    ) -> None:
        """The worker dies after publishing the SMS, before recording it; the re-drive
        parks it (hours closed meanwhile), and the consumer declines the copy that went
        out. The outcome found no task (the entry `D`): counted `unknown`, no decline
        written (`moments tasks ack` called it expired), and the release published the
        task again. The outcome now acts on the task the queue holds, the command finds
        its subscriber, and the release confirms it as sent, not published again."""
        w = make_worker()
        task_id = "d1" * 16
        await published_then_died(make_worker, task_id)
        fresh = sms_closed(make_worker)
        assert await fresh.sink.redrive(older_than=0) == 1
        assert await w.ledger.state(task_id) == "deferred"

        if isinstance(w.ledger, TaskLedger):  # the command reads the Redis ledger
            assert await subscriber_of(w.settings, task_id, wait_s=0) == SUB
        declined = TaskOutcome(
            task_id=task_id, subscriber_id=SUB, status=OutcomeStatus.DECLINED, occurred_at=NOW
        )
        record = RawRecord("outcomes", 0, 0, SUB.encode(), declined.model_dump_json().encode())
        assert (await handle_outcomes([record], fresh.sink)).declined == 1
        assert await fresh.sink.declines.suppressed(SUB, "first_international_roaming")

        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        assert await fresh.sink.release_due(now=later.timestamp()) == 1
        assert await w.ledger.state(task_id) == "sent"
        assert len(await published(w.settings, 1)) == 1  # not sent again


class TestTakenOver:
    async def test_a_task_made_again_in_place_of_a_dropped_one_inherits_none_of_its_marks(
        self, make_worker: MakeWorker
    ) -> None:
        """A dropped entry keeps its `unsent:<id>` and `redriven:<id>` marks as long as it
        lives (a day past its task's expiry); a moment judged again within that day takes
        the entry over (`TAKEN_OVER`) with a task of its own. It inherited both: marked
        `redriven`, an outcome of the first task read late made the release confirm the new
        one as sent, never published; marked `unsent`, its re-drive after a crash withdrew
        nothing of a task that may have gone out."""
        w = make_worker()
        task_id = "e1" * 16
        later = dt.datetime.now(dt.UTC) + HOUR
        parked = task(task_id, sub=SUB, deliver_after=later, deferred="quiet_hours")
        await w.send(parked)
        assert await w.ledger.state(task_id) == "deferred"
        assert [r.task_id for r in await w.sink.deferral.forget([SUB])] == [task_id]
        assert [i for i, _ in await w.ledger.claim_stale(-1.0)] == [task_id]  # a re-drive's
        gone = time.time() - 60  # its task expired: the entry lives a day less a minute
        await w.ledger.drop_many([(task_id, "forgotten")], {task_id: gone})
        assert await w.ledger.unsent([task_id]) == {task_id}
        assert await w.ledger.redriven([task_id]) == {task_id}
        await w.ledger.mark_moved({task_id: {task_id: "sms"}})
        assert await w.ledger.moved([task_id]) == {task_id: {task_id: "sms"}}

        assert await w.ledger.claim([(task_id, task_bytes(parked))], again={task_id}) == [2]

        assert await w.ledger.unsent([task_id]) == set()
        assert await w.ledger.redriven([task_id]) == set()
        assert await w.ledger.moved([task_id]) == {}

    async def test_a_task_id_claimed_after_its_entry_lapsed_inherits_no_moved_mark(
        self, make_worker: MakeWorker
    ) -> None:
        """`moved:<id>` lives the ledger's TTL from the publish, past the entry it speaks
        of (a dropped one lives a day past its task's expiry). A moment judged again after
        that claims the id afresh (`_CLAIM`'s SET NX): the mark is not its own, and its
        re-drive after a crash sent it on the channel the first task had been moved to."""
        ledger = make_worker().ledger
        if not isinstance(ledger, TaskLedger):
            pytest.skip("the memory ledger's lapse: tests/unit/test_memory_stores.py")
        task_id = "e2" * 16
        made = task(task_id, sub=SUB)
        assert await ledger.claim([(task_id, task_bytes(made))]) == [1]
        await ledger.mark_moved({task_id: {task_id: "sms"}})
        await ledger.drop_many([(task_id, "expired")], {task_id: time.time() - 86_400 + 60})
        await ledger.redis.delete(ledger.key(task_id))  # lapsed, as its TTL ends it
        assert await ledger.moved([task_id]) == {task_id: {task_id: "sms"}}

        assert await ledger.claim([(task_id, task_bytes(made))]) == [1]

        assert await ledger.moved([task_id]) == {}


class TestRedrivenTwice:
    async def test_a_group_released_after_its_carrier_lapsed_keeps_its_live_moments(
        self, make_worker: MakeWorker
    ) -> None:
        """A call and an SMS moment that joined it in the merge window, released three
        hours on, the call lapsed at two, by a worker that died before deciding it; the
        re-drive that claims it dies too. The next re-drive finds the entry pending since
        that claim, but the mark it left holds the release's time, after the call lapsed:
        neither could have gone out, and the SMS moment goes alone under its own id.
        Before: the mark held '1', the group was sealed and dropped with the call, and the
        SMS moment was lost (tests/unit/test_redriven_groups.py has it in memory)."""
        w = make_worker()  # calls held for the merge window
        call, sms = "c7" * 16, "d7" * 16
        start = time.time()
        lapses = dt.datetime.fromtimestamp(start + 2 * 3600, dt.UTC)
        await w.send(task(call, sub=SUB, channel=Channel.OUTBOUND_CALL, expires_at=lapses))
        await w.send(task(sms, sub=SUB, moment_type="low_balance"))
        assert await w.ledger.state(sms) == "merged"
        later = start + 3 * 3600
        assert [r.task_id for r in await w.sink.deferral.release(later, 10)] == [call]

        dying = make_worker()
        dying.sink.ledger = crashing(dying.sink.stores, "ledger", "group_many").ledger
        dying.sink.clock = lambda: time.time() + 3 * 3600
        with pytest.raises(CrashError):
            await dying.sink.redrive(older_than=-3 * 3600.0 - 60)
        assert await w.ledger.redriven([call]) == {call}

        redriving = make_worker()
        redriving.sink.clock = lambda: time.time() + 3 * 3600
        assert await redriving.sink.redrive(older_than=-60.0) == 1
        assert [(t["task_id"], t.get("related")) for t in await published(w.settings, 1)] == [
            (sms, None)
        ]
        assert [await w.ledger.state(i) for i in (call, sms)] == ["dropped", "sent"]


class TestMergedMomentDroppedWithItsCarrier:
    async def test_its_batch_read_again_keeps_its_cooldown(self, make_worker: MakeWorker) -> None:
        """An SMS moment joined a waiting call; the call went out with it inside and its
        worker died before the confirm. The call's rule is declined before the re-drive:
        the call is dropped, the SMS moment with it, both cooldowns kept (it may have gone
        out inside the call). The SMS moment's batch was not written either: read again, it
        finds its task dropped and keeps the cooldown too. Before: its entry bore no
        `redriven:<id>` mark (the call's did), and `_dropped_before` gave its cooldown
        back: its rule could fire again inside the cooldown, a second contact."""
        w = make_worker()  # calls held for the merge window
        call, sms = "c8" * 16, "d8" * 16
        await w.send(task(call, sub=SUB, channel=Channel.OUTBOUND_CALL))
        sms_task = task(sms, sub=SUB, moment_type="low_balance")
        await w.send(sms_task)
        assert await w.ledger.state(sms) == "merged"

        dying = make_worker()
        dying.sink.ledger = crashing(dying.sink.stores, "ledger", "confirm").ledger
        dying.sink.clock = lambda: time.time() + 3600  # past the merge window
        with pytest.raises(CrashError):
            await dying.sink.release_due()
        assert [await w.ledger.state(i) for i in (call, sms)] == ["pending", "merged"]

        await w.sink.declines.suppress(SUB, RULE, 86400)
        fresh = make_worker()
        returns = CollectedCooldownReturns(lambda: {RULE, "low_balance"})
        fresh.sink.returns = returns
        fresh.sink.clock = lambda: time.time() + 3600
        # pending since the release, an hour ahead of the stores' clock
        assert await fresh.sink.redrive(older_than=-3600.0 - 60) == 1
        assert [await w.ledger.state(i) for i in (call, sms)] == ["dropped", "dropped"]
        assert returns.pending == []
        w.sink.add(sms_task)  # the SMS moment's batch read again
        assert await w.sink.flush() == set()
        assert [
            (t["task_id"], [r["task_id"] for r in t["related"]])
            for t in await published(w.settings, 1)
        ] == [(call, [sms])]


class TestPartSplitOffARehomedLead:
    async def test_its_drop_at_its_release_keeps_its_cooldown(
        self, make_worker: MakeWorker
    ) -> None:
        """Two SMS moments (rules `l`, leading them, and `o`) joined a waiting call; the
        call went out with them inside and its worker died before the confirm. The
        customer opts out of calls: the re-drive withdraws the call, and the SMS moments
        go on under `l`'s id, marked re-driven; no SMS goes out today, so the split sends
        `l` as its fallback app push and `o` (its rule defers) waits for the next day under
        its own id. Its rule declined meanwhile, its release drops it, keeping its cooldown:
        it may have gone out inside the withdrawn call. Before: the split moved it to its
        own id with no `redriven:<id>` mark, and its drop returned the cooldown (a second
        contact possible)."""
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"*": {"sms": 0}},
                "reserved_share": 0,
                "overflow": {
                    "l": {"policy": "fallback", "channel": "app_push"},
                    "o": {"policy": "defer"},
                },
            }
        )
        w = make_worker(policy)  # calls held for the merge window
        call, lead, other = "c9" * 16, "d9" * 16, "e9" * 16
        await w.send(task(call, sub=SUB, channel=Channel.OUTBOUND_CALL))
        await w.send(task(lead, sub=SUB, moment_type="l", priority=2))
        await w.send(task(other, sub=SUB, moment_type="o"))
        assert [await w.ledger.state(i) for i in (lead, other)] == ["merged", "merged"]

        dying = make_worker(policy)
        dying.sink.ledger = crashing(dying.sink.stores, "ledger", "confirm").ledger
        dying.sink.clock = lambda: time.time() + 3600  # past the merge window
        with pytest.raises(CrashError):
            await dying.sink.release_due()
        assert await w.ledger.state(call) == "pending"

        opt_out = ProfileEvent(
            event_id="p-9", subscriber_id=SUB, occurred_at=NOW, opt_out=["outbound_call"]
        )
        await w.sink.subscribers.record_facts([opt_out])
        fresh = make_worker(policy)
        returns = CollectedCooldownReturns(lambda: {RULE, "l", "o"})
        fresh.sink.returns = returns
        fresh.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
        fresh.sink.clock = lambda: time.time() + 3600
        # pending since the release, an hour ahead of the stores' clock
        assert await fresh.sink.redrive(older_than=-3600.0 - 60) == 1
        assert [await w.ledger.state(i) for i in (call, lead, other)] == [
            "dropped",
            "sent",
            "deferred",
        ]
        notices = values(await read_written(w.settings, "task_withdrawals", at_least=1))
        assert [(n["task_id"], n["reason"]) for n in notices] == [(call, "opt_out")]

        await w.sink.declines.suppress(SUB, "o", 3 * 86400)
        await fresh.sink.release_due(now=time.time() + 2 * 86400)
        assert await w.ledger.state(other) == "dropped"
        assert returns.pending == []
        assert [(t["task_id"], t["channel"]) for t in await published(w.settings, 2)] == [
            (call, "outbound_call"),
            (lead, "app_push"),
        ]


class TestPartALateRedriveSplitsOffASealedGroup:
    async def test_its_batch_read_again_keeps_its_cooldown(self, make_worker: MakeWorker) -> None:
        """An SMS of rule `o` (its last send five minutes past midnight) joined one of rule
        `l` held for the merge window; the release an hour on died taking capacity, so the
        group may have gone out whole under `l`'s id. Its re-drive comes past `o`'s last
        send (workers down overnight) and fits the group as of that release: no SMS goes
        out that day, so `l` goes as its fallback app push and `o` moves to its own id,
        waiting for midnight (then, before its last send); released, `o` is dropped
        `expired`, its cooldown kept, and its batch read again keeps it too. Before: the
        part's `redriven:<id>` mark was dated by the re-drive, past `o`'s last send, and
        the batch read again gave back the cooldown (`_dropped_before`)."""
        policy = DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "capacity": {"*": {"sms": 0}},
                "reserved_share": 0,
                "next_day_at": "00:00",
                "merge": {"hold_channels": ["sms"]},
                "overflow": {
                    "l": {"policy": "fallback", "channel": "app_push"},
                    "o": {"policy": "defer"},
                },
            }
        )
        released = time.time() + 3600  # past the merge window
        midnight = dt.datetime.combine(
            dt.datetime.fromtimestamp(released, dt.UTC).date() + dt.timedelta(days=1),
            dt.time(0, 0),
            tzinfo=dt.UTC,
        )
        lead, other = "ca" * 16, "cb" * 16
        member = task(
            other, sub=SUB, moment_type="o", expires_at=midnight + dt.timedelta(minutes=10)
        )
        w = make_worker(policy)
        await w.send(task(lead, sub=SUB, moment_type="l", priority=2), member)
        assert [await w.ledger.state(i) for i in (lead, other)] == ["deferred", "merged"]

        dying = make_worker(policy)
        slots = dying.sink.stores.slots
        dying.sink.clock = lambda: released

        async def dies(*args: Any, **kwargs: Any) -> Any:
            raise CrashError("slots.take_many")

        slots.take_many = dies  # type: ignore[method-assign]
        try:
            with pytest.raises(CrashError):
                await dying.sink.release_due()
        finally:
            del slots.take_many
        assert await w.ledger.state(lead) == "pending"

        fresh = make_worker(policy)
        returns = CollectedCooldownReturns(lambda: {"l", "o"})
        fresh.sink.returns = returns
        late = midnight.timestamp() + 3600
        fresh.sink.clock = lambda: late
        # pending since the release, an hour ahead of the stores' clock
        assert await fresh.sink.redrive(older_than=-3600.0 - 60) == 1
        assert [await w.ledger.state(i) for i in (lead, other)] == ["sent", "deferred"]
        await fresh.sink.release_due(now=late + 60)
        assert await w.ledger.state(other) == "dropped"
        assert returns.pending == []
        fresh.sink.add(member)  # its batch read again
        assert await fresh.sink.flush() == set()
        assert [(t["task_id"], t["channel"]) for t in await published(w.settings, 1)] == [
            (lead, "app_push")
        ]


class TestPartALateRedriveSendsOffASealedGroup:
    async def test_its_second_redrive_sends_nothing_again(self, make_worker: MakeWorker) -> None:
        """A call (rule `a`) held for the merge window, two SMS moments joined it (`o`,
        leading them, its last send five minutes past midnight, and `p`); the release an
        hour on died taking capacity. The re-drive, past `o`'s last send, fits the group as
        of that release: no call goes out that day, so the call waits and the SMS moments
        go now under `o`'s id; that re-drive dies before its confirm. The second re-drive
        judges the part by the decision the first repeated, when `o` was sendable: it may
        have gone out, so `o` is dropped `expired` and `p` with it. Before: the part's mark
        was dated by the first re-drive, past `o`'s last send, and `p` went out a second
        time under its own id."""
        policy = DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "capacity": {"*": {"outbound_call": 0}},
                "reserved_share": 0,
                "next_day_at": "00:00",
                "overflow": {RULE: {"policy": "defer"}},
            }
        )
        released = time.time() + 3600  # past the merge window
        midnight = dt.datetime.combine(
            dt.datetime.fromtimestamp(released, dt.UTC).date() + dt.timedelta(days=1),
            dt.time(0, 0),
            tzinfo=dt.UTC,
        )
        call, lead, other = "cc" * 16, "cd" * 16, "ce" * 16
        w = make_worker(policy)  # calls held for the merge window
        await w.send(task(call, sub=SUB, channel=Channel.OUTBOUND_CALL))
        ends = midnight + dt.timedelta(minutes=10)
        await w.send(task(lead, sub=SUB, moment_type="o", priority=2, expires_at=ends))
        await w.send(task(other, sub=SUB, moment_type="p"))
        assert [await w.ledger.state(i) for i in (lead, other)] == ["merged", "merged"]

        dying = make_worker(policy)
        slots = dying.sink.stores.slots
        dying.sink.clock = lambda: released

        async def dies(*args: Any, **kwargs: Any) -> Any:
            raise CrashError("slots.take_many")

        slots.take_many = dies  # type: ignore[method-assign]
        try:
            with pytest.raises(CrashError):
                await dying.sink.release_due()
        finally:
            del slots.take_many
        assert await w.ledger.state(call) == "pending"

        late = midnight.timestamp() + 3600
        first = make_worker(policy)
        first.sink.ledger = crashing(first.sink.stores, "ledger", "confirm").ledger
        first.sink.clock = lambda: late
        with pytest.raises(CrashError):
            # pending since the release, an hour ahead of the stores' clock
            await first.sink.redrive(older_than=-3600.0 - 60)
        assert [await w.ledger.state(i) for i in (call, lead)] == ["deferred", "pending"]

        second = make_worker(policy)
        second.sink.clock = lambda: late + 120
        # `o` pending since the first re-drive, at its clock
        assert await second.sink.redrive(older_than=time.time() - late - 60) == 1
        assert [await w.ledger.state(i) for i in (lead, other)] == ["dropped", "dropped"]
        sent = await published(w.settings, 2)
        assert [(t["task_id"], t["channel"]) for t in sent] == [
            (lead, "sms"),
            (call, "outbound_call"),
        ]


class TestPolicyReloadedBeforeTheRedrive:
    async def test_a_fallback_for_a_full_pool_goes_again_as_the_fallback_under_a_raised_limit(
        self, make_worker: MakeWorker
    ) -> None:
        """The day's one call slot was taken: the call went out as its rule's fallback SMS
        and its worker died before the confirm. The limit is raised to 2 the same day
        (another worker reloaded it); that worker's re-drive sends the SMS again
        (`moved:<id>`). Before: fitted as of its decision under the raised limit, it took
        a call slot and went out as a call under the id the SMS went out with."""

        def limit(calls: int) -> DispatchPolicy:
            return DispatchPolicy.model_validate(
                {
                    "capacity": {"*": {"outbound_call": calls}},
                    "reserved_share": 0,
                    "overflow": {RULE: {"policy": "fallback", "channel": "sms"}},
                    "merge": {"hold_channels": []},
                }
            )

        dying = make_worker(limit(1))
        limiter = CapacityLimiter(dying.sink.stores.slots, dying.sink.policy)
        now = dt.datetime.now(dt.UTC)
        assert (await limiter.take("other", "NJ", Channel.OUTBOUND_CALL, 3, now)).taken
        dying.sink.ledger = crashing(dying.sink.stores, "ledger", "confirm").ledger
        dying.sink.add(task("p1", sub=SUB, moment_type=RULE, channel=Channel.OUTBOUND_CALL))
        with pytest.raises(CrashError):
            await dying.sink.flush()
        [first] = await published(dying.settings, 1)
        assert first["channel"] == "sms"
        fresh = make_worker(limit(2))
        assert await fresh.sink.redrive(older_than=0) == 1
        again = await published(fresh.settings, 2)
        assert [(t["task_id"], t["channel"]) for t in again] == [("p1", "sms")] * 2
        assert await fresh.ledger.state("p1") == "sent"

    async def test_a_contact_cap_set_since_does_not_drop_a_task_that_may_have_gone_out(
        self, make_worker: MakeWorker
    ) -> None:
        """Published with no contact cap, its worker dying before the confirm; another
        worker, its policy capping one contact a day, sends an SMS to the same subscriber,
        then re-drives the call, which expires within the day: it goes out again as it
        went, its contact counted. Before: dropped `contact_cap`."""
        soon = dt.datetime.now(dt.UTC) + 2 * HOUR
        call = task("p2", sub=SUB, moment_type=RULE, channel=Channel.OUTBOUND_CALL)
        dying = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
        dying.sink.ledger = crashing(dying.sink.stores, "ledger", "confirm").ledger
        dying.sink.add(call.model_copy(update={"expires_at": soon}))
        with pytest.raises(CrashError):
            await dying.sink.flush()
        capped = {"merge": {"hold_channels": []}, "contact": {"max_contacts": 1, "period": "1d"}}
        fresh = make_worker(DispatchPolicy.model_validate(capped))
        await fresh.send(task("p3", sub=SUB, moment_type="low_balance"))
        assert await fresh.sink.redrive(older_than=0) == 1
        out = await published(fresh.settings, 3)
        assert [t["task_id"] for t in out] == ["p2", "p3", "p2"]
        assert await fresh.ledger.state("p2") == "sent"
        assert (
            fresh.sample("moments_tasks_suppressed_total", moment_type=RULE, reason="contact_cap")
            == 0
        )
