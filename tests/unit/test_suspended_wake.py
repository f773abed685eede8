"""A task waiting for its suspended line goes when the profile update reactivating the
line comes, not at its next look (`SUSPENDED_POLL_S`, a safety net), even when that update
lands while a release decides the task: the decision read the facts before it and parks
the task again after the update's wake ran. On the memory stores the backtest uses;
tests/integration/dispatch/test_policy.py runs the race on Redis too."""

from __future__ import annotations

import datetime as dt

from moments.backtest import CollectingProducer
from moments.models import Channel, Deferral, Family, Moment, ProfileEvent, ServiceTask
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores
from sinks.timegates import SUSPENDED_LAST_LOOK_S, SUSPENDED_POLL_S

from .fakes import Clock, ReactivatedMeanwhile

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)
SUB = "13300000001"


def held(expires_in: dt.timedelta = dt.timedelta(days=3)) -> ServiceTask:
    """A service task gating deferred for the subscriber's suspended line."""
    return ServiceTask(
        task_id="r1",
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type="m", rule_id="m", rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.SMS,
        action="act",
        triggered_at=NOW,
        created_at=NOW,
        deliver_after=NOW,
        expires_at=NOW + expires_in,
        evidence=["e1"],
        deferred=Deferral(reason="suspended", until=NOW + expires_in),
    )


def active(at: float) -> ProfileEvent:
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    return ProfileEvent(event_id=f"p-{at}", subscriber_id=SUB, occurred_at=when, status="active")


class Worker:
    """One worker's sink on the shared stores, deciding at `clock`."""

    def __init__(self, stores: DispatchStores, clock: Clock) -> None:
        self.producer = CollectingProducer(clock)
        self.metrics = Metrics()
        self.sink = TaskSink(
            self.producer, "tasks", stores, self.metrics, DispatchPolicy(), clock=clock
        )

    def sent(self) -> list[bytes]:
        return [p.payload for p in self.producer.sent]

    def suppressed(self, reason: str) -> float:
        labels = {"moment_type": "m", "reason": reason}
        return self.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) or 0


async def test_a_reactivation_during_the_release_that_parks_the_task_again_wakes_it() -> None:
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w, other = Worker(stores, clock), Worker(stores, clock)
    w.sink.add(held())
    await w.sink.flush()  # the line is suspended: parked until its next look
    look = await stores.deferral.due_at("r1")
    assert look == NOW.timestamp() + SUSPENDED_POLL_S
    clock.now = look
    meanwhile = ReactivatedMeanwhile(stores.facts, other.sink, active(look))
    w.sink.facts = meanwhile  # type: ignore[assignment]
    assert await w.sink.release_due() == 1  # read "suspended", parked again after the wake
    assert meanwhile.woken == [1]
    assert await stores.ledger.state("r1") == "deferred"
    # Before: parked until the look after (15 minutes, or an hour, late); now due at once.
    assert await stores.deferral.due_at("r1") == look
    assert await w.sink.release_due() == 1
    assert len(w.sent()) == 1
    assert await stores.ledger.state("r1") == "sent"


async def test_a_reactivation_after_the_last_hourly_look_still_sends_the_task() -> None:
    """Looked at hourly, a task was dropped at the last look an hour before it had to
    go, and a reactivation in that hour found nothing; its last look is a minute before."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    w.sink.add(held(expires_in=dt.timedelta(minutes=90)))
    await w.sink.flush()
    clock.now = NOW.timestamp() + SUSPENDED_POLL_S
    assert await w.sink.release_due() == 1  # still suspended
    last = (NOW + dt.timedelta(minutes=85)).timestamp() - SUSPENDED_LAST_LOOK_S
    assert await stores.deferral.due_at("r1") == last
    clock.now = (NOW + dt.timedelta(minutes=80)).timestamp()
    await w.sink.subscribers.record_facts([active(clock.now)])
    assert await w.sink.release_due() == 1
    assert len(w.sent()) == 1


async def test_a_line_that_stays_suspended_drops_its_task_at_the_last_look_counted() -> None:
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    w.sink.add(held(expires_in=dt.timedelta(hours=3)))
    await w.sink.flush()
    looks = []
    while (due := await stores.deferral.due_at("r1")) is not None:
        clock.now = due + 5  # a timer tick late
        looks.append(due - NOW.timestamp())
        assert await w.sink.release_due() == 1
    last = 3 * 3600 - 300 - SUSPENDED_LAST_LOOK_S  # `min_time_left` (5 min) before expiry
    assert looks == [SUSPENDED_POLL_S, 2 * SUSPENDED_POLL_S + 5, last]  # each from the last
    assert await stores.ledger.state("r1") == "dropped"
    assert w.suppressed("suspended") == 1
    assert w.suppressed("expired") == 0
    assert w.sent() == []


def fresh_after(at: float, priority: int = 1) -> ServiceTask:
    """A moment the engine made at `at` for the line it knows active again: not held."""
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    return held().model_copy(
        update={
            "task_id": "f1",
            "moment": held().moment.model_copy(update={"type": "f", "rule_id": "f"}),
            "priority": priority,
            "triggered_at": when,
            "created_at": when,
            "deliver_after": when,
            "expires_at": when + dt.timedelta(days=1),
            "deferred": None,
        }
    )


async def held_then_sent_on_reactivation(
    w: Worker, stores: DispatchStores, clock: Clock, task_id: str
) -> None:
    """The release now keeps `task_id` waiting for the line, and the next reactivation,
    a minute later, sends it."""
    assert await w.sink.release_due() == 1
    assert w.sent() == []
    assert await stores.ledger.state(task_id) == "deferred"
    clock.now += 60
    await w.sink.subscribers.record_facts([active(clock.now)])
    assert await w.sink.release_due() == 1
    assert len(w.sent()) == 1


async def test_a_moment_made_after_the_reactivation_joining_the_woken_task_lets_it_go() -> None:
    """The stream records a batch's facts (the reactivation wakes the held task: due now,
    still waiting) before it dispatches the batch's tasks: a moment the same batch made
    (a top-up's) joins the woken task. Led by that moment (a higher priority), the group
    was judged by the lead's trigger, after the reactivation: not reactivated, both
    waited for the next look, and were dropped as suspended at the last one."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    w.sink.add(held())
    await w.sink.flush()
    clock.now = NOW.timestamp() + 600
    await w.sink.subscribers.record_facts([active(clock.now)])  # the batch's facts: r1 due now
    clock.now += 1
    w.sink.add(fresh_after(clock.now))
    await w.sink.flush()  # the batch's tasks
    assert await stores.ledger.state("f1") == "merged"
    assert await w.sink.release_due() == 1
    assert len(w.sent()) == 1
    assert await stores.ledger.state("r1") == "sent"


async def test_a_moment_held_for_the_line_suspended_again_keeps_the_woken_task_waiting() -> None:
    """The reverse: woken, the task is joined by a moment gating held because the line
    was suspended again after the reactivation. Judged by its lead (the older task), the
    group went out to the line suspended again; judged by the latest held moment, it
    waits for the next reactivation."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    w.sink.add(held())
    await w.sink.flush()
    clock.now = NOW.timestamp() + 600
    await w.sink.subscribers.record_facts([active(clock.now)])
    clock.now += 2  # suspended again (no fact), then a moment the line holds
    again = fresh_after(clock.now, priority=3)
    w.sink.add(again.model_copy(update={"deferred": held().deferred}))
    await w.sink.flush()
    assert await stores.ledger.state("f1") == "merged"
    await held_then_sent_on_reactivation(w, stores, clock, "r1")


async def test_a_reactivation_read_late_dated_before_the_held_moment_sends_it() -> None:
    """Topics are read side by side: a moment made from an event of another topic read
    ahead of the profile topic is held for the line the engine still knows suspended,
    though the update reactivating it, read next, is dated before the moment. Compared
    with the moment's trigger only, that update was never after it: the task waited
    for its looks and was dropped as suspended at the last. The line's last status
    (active after its suspension) says it is active."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    suspended = ProfileEvent(
        event_id="p-s",
        subscriber_id=SUB,
        occurred_at=NOW - dt.timedelta(hours=2),
        status="suspended",
    )
    await w.sink.subscribers.record_facts([suspended])
    w.sink.add(held())
    await w.sink.flush()
    clock.now = NOW.timestamp() + 600
    await w.sink.subscribers.record_facts([active(NOW.timestamp() - 60)])  # read now, dated before
    assert await w.sink.release_due() == 1
    assert len(w.sent()) == 1
    assert await stores.ledger.state("r1") == "sent"


async def test_a_line_suspended_again_after_an_old_reactivation_keeps_the_task() -> None:
    """Its last status decides: reactivated, then suspended again before the moment,
    the line holds the task."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    await w.sink.subscribers.record_facts([active(NOW.timestamp() - 7200)])
    again = ProfileEvent(
        event_id="p-s2",
        subscriber_id=SUB,
        occurred_at=NOW - dt.timedelta(hours=1),
        status="suspended",
    )
    await w.sink.subscribers.record_facts([again])
    w.sink.add(held())
    await w.sink.flush()
    clock.now = NOW.timestamp() + SUSPENDED_POLL_S
    assert await w.sink.release_due() == 1
    assert w.sent() == []
    assert await stores.ledger.state("r1") == "deferred"


async def test_a_moment_held_for_the_line_joined_to_another_waiting_task_keeps_it() -> None:
    """A call held for the merge window (its line active) is joined by a moment gating
    held for the line suspended since: led by the call, the group carried the call's
    deferral and went out to the suspended line when the window ended."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    call = fresh_after(clock.now, priority=3).model_copy(
        update={"task_id": "c1", "channel": Channel.OUTBOUND_CALL}
    )
    w.sink.add(call)
    await w.sink.flush()  # held for the merge window
    assert await stores.ledger.state("c1") == "deferred"
    clock.now += 60
    suspended = ProfileEvent(
        event_id="p-s",
        subscriber_id=SUB,
        occurred_at=NOW + dt.timedelta(seconds=30),
        status="suspended",
    )
    await w.sink.subscribers.record_facts([suspended])
    w.sink.add(held().model_copy(update={"triggered_at": NOW + dt.timedelta(seconds=60)}))
    await w.sink.flush()
    assert await stores.ledger.state("r1") == "merged"
    clock.now = await stores.deferral.due_at("c1") or 0
    await held_then_sent_on_reactivation(w, stores, clock, "c1")


async def test_a_moment_held_for_the_line_a_tick_after_the_look_joins_the_waiting_task() -> None:
    """A look opened the merge group until the next look exactly, and the release that
    parks the task again comes a timer tick or more after it: a moment held for the
    line in between found no group open and waited alone, and the reactivation sent
    the subscriber two tasks (the 15-minute looks opened it for 30 minutes)."""
    clock = Clock(NOW.timestamp())
    stores = memory_stores(clock)
    w = Worker(stores, clock)
    w.sink.add(held())
    await w.sink.flush()
    look = await stores.deferral.due_at("r1") or 0
    clock.now = look + 5  # the release timer's tick, late by 5 s
    w.sink.add(
        held().model_copy(update={"task_id": "r2", "triggered_at": NOW + dt.timedelta(hours=1)})
    )
    await w.sink.flush()
    assert await stores.ledger.state("r2") == "merged"
    assert await w.sink.release_due() == 1
    clock.now += 600  # still in the group the look opened again
    w.sink.add(
        held().model_copy(
            update={"task_id": "r3", "triggered_at": NOW + dt.timedelta(seconds=4200)}
        )
    )
    await w.sink.flush()
    assert await stores.ledger.state("r3") == "merged"
    await w.sink.subscribers.record_facts([active(clock.now)])
    assert await w.sink.release_due() == 1
    assert len(w.sent()) == 1
