"""A task whose worker died after its produce and before its confirm may have reached its
customer: decided again (re-driven, or released where a re-drive parked it) and dropped
this time, it keeps its rule's cooldown. Given back, the rule fired again for the next
event and the customer was contacted a second time, under a new id. On the memory
stores the backtest uses; tests/integration/dispatch/test_crash_windows.py runs the
re-drive on Redis."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ServiceTask
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.memory import MemoryLedger, memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores

from .fakes import Clock
from .test_redriven_groups import CALL, merged_then_dead
from .test_redriven_groups import SMS as SMS_MOMENT
from .test_redriven_groups import SUB as GROUP_SUB

PRODUCED = dt.datetime(2026, 12, 3, 11, 59, 50, tzinfo=dt.UTC)
OPENS = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)
SUB = "13300000003"
TASK = "d2" * 16  # a task id as the engine makes them: 32 hex digits
RULE = "m"
GRACE_S = 60.0
CALLS: dict[str, object] = {"timezone": "UTC", "hours": {"outbound_call": "03:00-12:00"}}
"""Calls are worked 03:00-12:00 UTC."""
FALLBACK = {"policy": "fallback", "channel": "sms"}
FALLS_BACK: dict[str, object] = {**CALLS, "overflow": {RULE: FALLBACK}}
"""As `CALLS`, the rule falling back to SMS."""


def call(expires_at: dt.datetime = PRODUCED + dt.timedelta(days=3)) -> ServiceTask:
    return ServiceTask(
        task_id=TASK,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.FIRST_TIME, type=RULE, rule_id=RULE, rule_version=1, description="d"
        ),
        priority=3,
        channel=Channel.OUTBOUND_CALL,
        action="act",
        triggered_at=PRODUCED,
        created_at=PRODUCED,
        deliver_after=PRODUCED,
        expires_at=expires_at,
        evidence=["e1"],
    )


def published(producer: CollectingProducer) -> list[str]:
    return [str(orjson.loads(m.payload)["task_id"]) for m in producer.sent]


class Published:
    """The call published at 11:59:50 by a worker that died before its confirm (its entry
    claimed, pending), with a second worker whose returns are collected."""

    def __init__(
        self, policy: Mapping[str, object] = CALLS, task: ServiceTask | None = None
    ) -> None:
        self.clock = Clock(PRODUCED.timestamp())
        self.stores: DispatchStores = memory_stores(self.clock)
        self.producer = CollectingProducer(self.clock)
        self.returns = CollectedCooldownReturns(lambda: {RULE})
        self.task = task or call()
        self.sink = TaskSink(
            self.producer,
            "tasks",
            self.stores,
            Metrics(),
            DispatchPolicy.model_validate(policy),
            clock=self.clock,
            returns=self.returns,
        )

    async def claimed(self) -> None:
        await self.stores.ledger.claim([(TASK, task_bytes(self.task))])

    async def state(self) -> str | None:
        return await self.stores.ledger.state(TASK)


async def test_a_task_redriven_after_it_must_go_keeps_its_cooldown() -> None:
    """The re-drive comes after an outage, past the task's last send: dropped `expired`,
    its cooldown kept, as its copy may have reached the customer. Before: returned."""
    w = Published()
    await w.claimed()
    w.clock.now = w.sink.policy.last_send(w.task) + 60
    assert await w.sink.redrive(GRACE_S) == 1
    assert await w.state() == "dropped"
    assert w.returns.pending == []
    assert await w.stores.ledger.owed_returns(w.clock.now) == []


async def test_a_task_redriven_after_its_rule_was_declined_keeps_its_cooldown() -> None:
    """Another task of the rule declined meanwhile: dropped `declined`, its cooldown kept.
    Before: returned."""
    w = Published()
    await w.claimed()
    await w.stores.declines.suppress(SUB, RULE, 86400)
    w.clock.now += GRACE_S + 10
    assert await w.sink.redrive(GRACE_S) == 1
    assert await w.state() == "dropped"
    assert w.returns.pending == []


async def test_a_task_that_never_went_pending_before_its_expiry_is_not_the_case() -> None:
    """The control: a waiting task (never produced) released after it must go is dropped
    `expired` and gives its cooldown back, as before."""
    w = Published()
    parked = w.task.model_copy(update={"deliver_after": OPENS})
    w.sink.add(parked)
    await w.sink.flush()
    assert await w.state() == "deferred"
    w.clock.now = w.sink.policy.last_send(w.task) + 60
    await w.sink.release_due()
    assert await w.state() == "dropped"
    assert [r.task_id for r in w.returns.take()] == [TASK]


async def parked_by_the_redrive(w: Published) -> None:
    """A minute after the produce, the centre closed, the re-drive parks the call until
    03:00 (`redriven:<id>`)."""
    await w.claimed()
    w.clock.now += GRACE_S + 10
    assert await w.sink.redrive(GRACE_S) == 1
    assert await w.state() == "deferred"
    assert await w.stores.ledger.redriven([TASK]) == {TASK}


async def test_a_task_a_redrive_parked_and_dropped_at_its_release_keeps_its_cooldown() -> None:
    """Its rule declined while it waited: its release drops it `declined`, its cooldown
    kept. Before: a task of one moment on its only channel was not looked at
    (`_parked_by_redrive`), and its cooldown was returned."""
    w = Published()
    await parked_by_the_redrive(w)
    await w.stores.declines.suppress(SUB, RULE, 86400)
    w.clock.now = OPENS.timestamp()
    await w.sink.release_due()
    assert await w.state() == "dropped"
    assert w.returns.pending == []


async def test_a_reload_that_removes_the_fallback_leaves_a_parked_task_sealed() -> None:
    """Parked by the re-drive under a policy whose rule falls back to SMS; a reload then
    removes the fallback and opens calls only at 05:00, after the task must go. Its
    release sends it now as it went (the call), as any task a re-drive parked. Before:
    the release looked at it only while its rule fell back, and, unsealed, dropped it
    `expired` with its cooldown returned."""
    w = Published(FALLS_BACK, call(expires_at=dt.datetime(2026, 12, 4, 4, 30, tzinfo=dt.UTC)))
    await parked_by_the_redrive(w)
    later: dict[str, object] = {**CALLS, "hours": {"outbound_call": "05:00-12:00"}}
    w.sink.use_policy(DispatchPolicy.model_validate(later))
    w.clock.now = OPENS.timestamp()
    await w.sink.release_due()
    assert await w.state() == "sent"
    assert published(w.producer) == [TASK]
    assert w.returns.pending == []


async def test_a_merged_task_redriven_and_dropped_keeps_every_moments_cooldown() -> None:
    """A call and the SMS moment merged into it, published together by a worker that died
    before its confirm; the call's rule declined meanwhile: the re-drive drops the call,
    and the SMS moment with it (it went out inside the call, `sealed_moment`). Neither
    rule's cooldown is returned. Before: both were."""
    clock, stores, sink, _ = await merged_then_dead(sms_lasts=72)
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    await stores.declines.suppress(GROUP_SUB, "a", 86400)
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert [await stores.ledger.state(i) for i in (CALL, SMS_MOMENT)] == ["dropped", "dropped"]
    assert returns.pending == []


async def test_a_batch_read_again_after_the_redrive_dropped_its_task_keeps_the_cooldown() -> None:
    """The worker died after the produce, before the confirm and before its batch's state
    was written; the re-drive, after an outage past the task's last send, drops it
    `expired`, and the batch read again then finds its task dropped. Before: returned as
    dropped (`_dropped_before`), its cooldown given back in the state the batch writes."""
    w = Published({**CALLS, "merge": {"hold_channels": []}})
    confirm = w.stores.ledger.confirm

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the worker dies here")

    w.stores.ledger.confirm = dies  # type: ignore[method-assign]
    w.sink.add(w.task)
    with pytest.raises(RuntimeError):
        await w.sink.flush()
    w.stores.ledger.confirm = confirm  # type: ignore[method-assign]
    assert published(w.producer) == [TASK]
    w.clock.now = w.sink.policy.last_send(w.task) + 60
    assert await w.sink.redrive(GRACE_S) == 1
    assert await w.state() == "dropped"
    w.sink.add(w.task)  # the batch read again
    assert await w.sink.flush() == set()
    assert w.returns.pending == []


async def test_a_task_a_redrive_parked_goes_whole_to_a_full_pool() -> None:
    """Released to a call pool a reload emptied (overflow `drop`): it goes out as it went,
    on its channel, as a merged task a re-drive parked does (`CapacityFitting.within`).
    Before: not looked at (one moment, no fallback), dropped `capacity`, its cooldown
    returned for a copy that may have reached the customer."""
    w = Published()
    await parked_by_the_redrive(w)
    full: dict[str, object] = {
        **CALLS,
        "capacity": {"*": {"outbound_call": 0}},
        "reserved_share": 0,
        "overflow": {"*": {"policy": "drop"}},
    }
    w.sink.use_policy(DispatchPolicy.model_validate(full))
    w.clock.now = OPENS.timestamp()
    await w.sink.release_due()
    assert await w.state() == "sent"
    assert published(w.producer) == [TASK]
    assert w.returns.pending == []


async def test_a_batch_read_again_after_a_redrive_returned_its_cooldown_gives_it_back() -> None:
    """The engine made the call with less than `min_time_left` to live, and the worker died
    after its claim, before its decision and its batch's state. The re-drive drops it
    `expired`, unsealed (it first went pending after its last send: it never went out), and
    returns its cooldown. The batch read again after that finds it dropped and gives the
    cooldown back too, in the state it writes: whichever of the two the engine applies
    first, the other finds the mark gone. Before: kept, as a task that may have gone out
    (`_dropped_before` read the `redriven:<id>` mark alone); the return, read before the
    batch again (the returns topic caught up ahead of the input partition's backlog), had
    found no mark to remove in the state before the batch, so the rule stayed in
    cooldown for a call never made, and its next moment made no task."""
    w = Published(task=call(expires_at=PRODUCED + dt.timedelta(minutes=2)))
    await w.claimed()
    assert w.sink.policy.last_send(w.task) < PRODUCED.timestamp()
    w.clock.now += GRACE_S + 10
    assert await w.sink.redrive(GRACE_S) == 1
    assert await w.state() == "dropped"
    assert await w.stores.ledger.redriven([TASK]) == {TASK}
    assert [r.task_id for r in w.returns.take()] == [TASK]
    w.sink.add(w.task)  # the batch read again
    assert await w.sink.flush() == {TASK}
    assert published(w.producer) == []


async def test_a_task_redriven_under_an_older_builds_mark_keeps_its_cooldown_when_read_again() -> (
    None
):
    """As above, its `redriven:<id>` mark written by an older build (`1`, which does not say
    when the task first went pending): judged sealed, as the re-drive judges such a mark
    (`sealed_by_redrive`), so the batch read again keeps its cooldown."""
    w = Published(task=call(expires_at=PRODUCED + dt.timedelta(minutes=2)))
    await w.claimed()
    w.clock.now += GRACE_S + 10
    assert await w.sink.redrive(GRACE_S) == 1
    ledger = cast(MemoryLedger, w.stores.ledger)
    ledger.redriven_marks[TASK] = dataclasses.replace(ledger.redriven_marks[TASK], value=b"1")
    assert await w.stores.ledger.first_pending([TASK]) == {TASK: None}
    w.sink.add(w.task)  # the batch read again
    assert await w.sink.flush() == set()
