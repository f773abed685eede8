"""A merged task whose worker died after its publish and before its confirm may have gone
out under its id, the moments merged into it with it: its re-drive, and its release where
the re-drive parked it, send it again as it went or not at all (docs/consuming-tasks.md,
"Once, and only while it is worth it": a task id is published again only with the same
content). On the memory stores the backtest uses; tests/integration/dispatch/
test_unanswered.py runs the re-drive on Redis.

- Parked by the re-drive (its channel's hours closed meanwhile), a merged moment that
  expired while it waited was dropped at the release (only the re-drive kept one,
  `spares_expired`), and one whose rule was declined meanwhile, on the re-drive as at the
  release: the task went out again under its id without them.
- The carrier's own moment dropped (its rule declined), the moments merged into it went
  out again under the lead's id, though they had gone out inside the carrier."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import Channel, Family, Moment, ProfileEvent, ServiceTask
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Held, Leave

from .fakes import Clock

START = dt.datetime(2026, 12, 3, 11, 0, tzinfo=dt.UTC)
"""Calls are worked 03:00-12:00 UTC: the call made now waits for the merge window until
11:30, then goes out (and its worker dies); its re-drive after 12:00 parks it until 03:00."""
OPENS = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)
SUB = "13300000002"
CALL, SMS = "c1" * 16, "d2" * 16
GRACE_S = 60.0
POLICY = DispatchPolicy.model_validate(
    {"timezone": "UTC", "hours": {"outbound_call": "03:00-12:00"}}
)


class CrashError(Exception):
    """The worker dies here."""


@contextlib.contextmanager
def crashing(obj: object, name: str) -> Iterator[None]:
    """Inside the block `obj.<name>` dies (CrashError, which the block must raise), as a
    worker killed at that call; put back after."""
    kept = getattr(obj, name)

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise CrashError(name)

    setattr(obj, name, dies)
    try:
        with pytest.raises(CrashError):
            yield
    finally:
        setattr(obj, name, kept)


def moment(task_id: str, channel: Channel, rule: str, at: dt.datetime, lasts: float) -> ServiceTask:
    return ServiceTask(
        task_id=task_id,
        subscriber_id=SUB,
        moment=Moment(
            family=Family.ANOMALY, type=rule, rule_id=rule, rule_version=1, description="d"
        ),
        priority=3,
        channel=channel,
        action="act",
        triggered_at=at,
        created_at=at,
        deliver_after=at,
        expires_at=at + dt.timedelta(hours=lasts),
        evidence=[f"ev-{task_id}"],
    )


def published(producer: CollectingProducer) -> list[tuple[str, list[str]]]:
    """Each task published, in order: its id and the ids in its `related`."""
    out = []
    for p in producer.sent:
        task: dict[str, Any] = orjson.loads(p.payload)
        out.append((str(task["task_id"]), [str(r["task_id"]) for r in task.get("related") or []]))
    return out


async def merged(
    sms_lasts: float, call_lasts: float = 72
) -> tuple[Clock, DispatchStores, TaskSink, CollectingProducer]:
    """The call (rule `a`, lasting `call_lasts` hours) waiting for the merge window until
    11:30, and an SMS moment (rule `b`, lasting `sms_lasts` hours) that joined it."""
    clock = Clock(START.timestamp())
    stores = memory_stores(clock)
    producer = CollectingProducer(clock)
    sink = TaskSink(producer, "tasks", stores, Metrics(), POLICY, clock=clock)
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, call_lasts))
    await sink.flush()
    clock.now += 300
    made = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    sink.add(moment(SMS, Channel.SMS, "b", made, sms_lasts))
    await sink.flush()
    assert await stores.ledger.state(SMS) == "merged"
    return clock, stores, sink, producer


async def merged_then_dead(
    sms_lasts: float, call_lasts: float = 72
) -> tuple[Clock, DispatchStores, TaskSink, CollectingProducer]:
    """`merged`, published together at 11:31 by a worker that died before its confirm."""
    clock, stores, sink, producer = await merged(sms_lasts, call_lasts)
    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.ledger, "confirm"):
        await sink.release_due()
    assert published(producer) == [(CALL, [SMS])]
    assert await stores.ledger.state(CALL) == "pending"
    return clock, stores, sink, producer


async def redriven_and_parked(
    sms_lasts: float,
) -> tuple[Clock, DispatchStores, TaskSink, CollectingProducer]:
    """`merged_then_dead`, re-driven at 12:01: calls are no longer worked, it waits for
    03:00 as it went out."""
    clock, stores, sink, producer = await merged_then_dead(sms_lasts)
    clock.now = START.timestamp() + 61 * 60
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(CALL) == "deferred"
    assert await stores.ledger.state(SMS) == "merged"
    return clock, stores, sink, producer


async def test_a_moment_expired_while_the_redrive_parked_it_goes_out_again_with_it() -> None:
    """The SMS moment lapses at 13:00, while the call waits for 03:00: the call goes out
    again with it in `related` (its `expires_at` past tells the consumer to leave it out),
    as the re-drive sends one expired at once (`spares_expired`). Before: dropped at the
    release, the call went out again under its id without it."""
    clock, stores, sink, producer = await redriven_and_parked(sms_lasts=2)
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert published(producer) == [(CALL, [SMS]), (CALL, [SMS])]
    assert await stores.ledger.state(CALL) == "sent"
    suppressed = {"moment_type": "b", "reason": "expired"}
    assert not sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", suppressed)


@pytest.mark.parametrize("declined", ["before the re-drive", "while it waited"])
async def test_a_moment_whose_rule_was_declined_since_goes_out_again_with_it(
    declined: str,
) -> None:
    """The SMS moment's rule is declined (another task's outcome) before the re-drive, or
    while the call waits: the call goes out again as it went, the moment in `related`.
    Before: the moment left the group (dropped `declined`, its cooldown given back) and
    the call went out again under its id without it."""
    if declined == "before the re-drive":
        clock, stores, sink, producer = await merged_then_dead(sms_lasts=72)
        await stores.declines.suppress(SUB, "b", 86400)
        clock.now += GRACE_S + 10  # calls are worked
        assert await sink.redrive(GRACE_S) == 1
    else:
        clock, stores, sink, producer = await redriven_and_parked(sms_lasts=72)
        await stores.declines.suppress(SUB, "b", 30 * 86400)
        clock.now = OPENS.timestamp()
        await sink.release_due()
    assert published(producer) == [(CALL, [SMS]), (CALL, [SMS])]
    assert await stores.ledger.state(CALL) == "sent"
    suppressed = {"moment_type": "b", "reason": "declined"}
    assert not sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", suppressed)


@pytest.mark.parametrize("declined", ["before the re-drive", "while it waited"])
async def test_a_carrier_dropped_takes_the_moments_that_went_out_in_it(declined: str) -> None:
    """The call's own rule is declined (another task's outcome): the call is dropped, and
    the SMS moment with it, as it went out inside the call; not sent again under its own
    id. Before: the SMS moment went out again as a task of its own."""
    if declined == "before the re-drive":
        clock, stores, sink, producer = await merged_then_dead(sms_lasts=72)
        await stores.declines.suppress(SUB, "a", 86400)
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
    else:
        clock, stores, sink, producer = await redriven_and_parked(sms_lasts=72)
        await stores.declines.suppress(SUB, "a", 30 * 86400)
        clock.now = OPENS.timestamp()
        await sink.release_due()
    assert published(producer) == [(CALL, [SMS])]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "dropped"]
    registry = sink.metrics.registry
    for rule in ("a", "b"):
        labels = {"moment_type": rule, "reason": "declined"}
        assert registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1


@pytest.mark.parametrize("declined", ["before the re-drive", "while it waited"])
async def test_a_moment_dropped_with_its_carrier_keeps_its_cooldown_when_read_again(
    declined: str,
) -> None:
    """As above, and the SMS moment's batch was not written either (its worker died after
    the merge): read again, the engine makes the SMS task again and finds it dropped. Its
    cooldown stays taken, as the drop kept it: the moment may have gone out inside the
    call. Before: its entry `X` bore no `redriven:<id>` mark (only the carrier's did), so
    `_dropped_before` gave its cooldown back, and its rule could fire again inside the
    cooldown, a second contact."""
    if declined == "before the re-drive":
        clock, stores, sink, producer = await merged_then_dead(sms_lasts=72)
        await stores.declines.suppress(SUB, "a", 86400)
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
    else:
        clock, stores, sink, producer = await redriven_and_parked(sms_lasts=72)
        await stores.declines.suppress(SUB, "a", 30 * 86400)
        clock.now = OPENS.timestamp()
        await sink.release_due()
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "dropped"]
    made = START + dt.timedelta(minutes=5)
    sink.add(moment(SMS, Channel.SMS, "b", made, 72))  # the SMS moment's batch read again
    assert await sink.flush() == set()
    assert published(producer) == [(CALL, [SMS])]


async def test_a_moment_going_on_at_its_last_send_is_marked_as_its_decision_judged_it() -> None:
    """The call is withdrawn at its re-drive (the customer opted out of calls): the SMS
    moment goes on under its own id, judged sendable at its last send, and is published;
    its leave ran a second after that judgement (Redis retried) and the worker died
    before the confirm. The next re-drive finds it past its last send: it may have gone
    out, and is dropped keeping its cooldown. Before: its `redriven:<id>` mark held the
    leave's time, after its last send: judged never gone out, it was dropped `expired`
    with its cooldown returned, for a moment that went out."""
    clock, stores, sink, producer = await merged_then_dead(sms_lasts=1)
    opt_out = ProfileEvent.model_validate(
        {
            "event_id": "p1",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(clock.now, dt.UTC),
            "opt_out": ["outbound_call"],
        }
    )
    await sink.subscribers.record_facts([opt_out])
    made = START + dt.timedelta(minutes=5)
    clock.now = sink.policy.last_send(moment(SMS, Channel.SMS, "b", made, 1))
    leave_many = stores.ledger.leave_many

    async def late(
        items: Sequence[Leave], held: Held | None = None, again: bool = False
    ) -> list[bool]:
        clock.now += 1  # the leave a second after the decision's judgement
        return await leave_many(items, held, again)

    stores.ledger.leave_many = late  # type: ignore[method-assign]
    with crashing(stores.ledger, "confirm"):
        await sink.redrive(GRACE_S)
    stores.ledger.leave_many = leave_many  # type: ignore[method-assign]
    assert published(producer) == [(CALL, [SMS]), (SMS, [])]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "pending"]
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(SMS) == "dropped"
    assert returns.pending == []
    assert published(producer) == [(CALL, [SMS]), (SMS, [])]


CALL_LAPSES = 0.65
"""Hours the call lasts in the tests below: it expires at 11:39, and is sent no later
than 11:34 (`min_time_left`, 5 minutes)."""


async def test_a_group_released_after_its_carrier_lapsed_is_re_driven_without_it() -> None:
    """The group is released at 11:40, the call lapsed, and its worker dies before its
    decision: it could not have sent the call, nor the SMS moment inside it. The re-drive
    sends the SMS moment alone under its own id. Before: sealed as any re-driven task, it
    was dropped with the call, and never went out."""
    clock, stores, sink, producer = await merged(sms_lasts=72, call_lasts=CALL_LAPSES)
    clock.now = START.timestamp() + 40 * 60
    assert len(await stores.deferral.release(clock.now, 10)) == 1  # then the crash
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert published(producer) == [(SMS, [])]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "sent"]
    labels = {"moment_type": "a", "reason": "expired"}
    assert sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1


async def test_a_second_re_drive_keeps_the_group_sealed_after_its_carrier_lapsed() -> None:
    """Published at 11:31 with the SMS moment inside, the call is claimed by a re-drive
    at 11:40 that dies before its decision; the next, at 11:42, finds it pending since
    11:40, after the call lapsed. Its first publish was before: the SMS moment goes with
    the call (dropped), not out again under its own id (the earlier re-drive's mark,
    there before this claim, says when it went pending is not when it may have gone
    out)."""
    clock, stores, sink, producer = await merged_then_dead(sms_lasts=72, call_lasts=CALL_LAPSES)
    clock.now = START.timestamp() + 40 * 60
    with crashing(stores.ledger, "group_many"):
        await sink.redrive(GRACE_S)
    assert await stores.ledger.redriven([CALL]) == {CALL}
    clock.now += 120
    assert await sink.redrive(GRACE_S) == 1
    assert published(producer) == [(CALL, [SMS])]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "dropped"]
    registry = sink.metrics.registry
    for rule in ("a", "b"):
        labels = {"moment_type": rule, "reason": "expired"}
        assert registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1


async def test_a_second_re_drive_of_a_group_released_after_its_carrier_lapsed() -> None:
    """As `test_a_group_released_after_its_carrier_lapsed_is_re_driven_without_it`, the
    first re-drive dying too, after its claim: the next finds the task pending since that
    claim, but the mark it left says when the group first went pending (11:40, the call
    lapsed), so the SMS moment, which never went out, goes out alone under its own id.
    Before: the mark said only that a re-drive had claimed it, the group was sealed and
    dropped with the call, and the SMS moment was lost."""
    clock, stores, sink, producer = await merged(sms_lasts=72, call_lasts=CALL_LAPSES)
    clock.now = START.timestamp() + 40 * 60
    assert len(await stores.deferral.release(clock.now, 10)) == 1  # then the crash
    clock.now += GRACE_S + 10
    with crashing(stores.ledger, "group_many"):
        await sink.redrive(GRACE_S)
    assert await stores.ledger.redriven([CALL]) == {CALL}
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert published(producer) == [(SMS, [])]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "sent"]
    registry = sink.metrics.registry
    call = {"moment_type": "a", "reason": "expired"}
    assert registry.get_sample_value("moments_tasks_suppressed_total", call) == 1
    sms = {"moment_type": "b", "reason": "expired"}
    assert registry.get_sample_value("moments_tasks_suppressed_total", sms) is None


async def test_a_moment_dropped_whole_with_its_carrier_keeps_its_cooldown_when_read_again() -> None:
    """The group dropped whole (`TaskSink._drop_route`), not moment by moment: the line is
    suspended after the call went out with the SMS moment inside, and the re-drive comes
    within a minute of the group's last send (its last look, `SUSPENDED_LAST_LOOK_S`),
    so the group is dropped `suspended`, both cooldowns kept. The SMS moment's batch,
    read again, finds it dropped and keeps its cooldown too: its `X` entry is marked
    `redriven:<id>` `1` as it leaves the group (`Leave.went_out`); unmarked,
    `_dropped_before` gave the cooldown back, a second contact possible."""
    # Both expire at 11:38, sent no later than 11:33: the re-drive at 11:32:10 is inside
    # the group's last minute, the call still sendable.
    clock, stores, sink, producer = await merged_then_dead(sms_lasts=33 / 60, call_lasts=38 / 60)
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    suspended = ProfileEvent.model_validate(
        {
            "event_id": "p1",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(clock.now + 5, dt.UTC),
            "status": "suspended",
        }
    )
    await sink.subscribers.record_facts([suspended])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "dropped"]
    registry = sink.metrics.registry
    for rule in ("a", "b"):
        labels = {"moment_type": rule, "reason": "suspended"}
        assert registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1
    assert returns.pending == []
    made = START + dt.timedelta(minutes=5)
    sink.add(moment(SMS, Channel.SMS, "b", made, 33 / 60))  # the SMS moment's batch read again
    assert await sink.flush() == set()
    assert published(producer) == [(CALL, [SMS])]
