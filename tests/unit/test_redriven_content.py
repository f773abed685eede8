"""A task that may have gone out (re-driven after its worker died between publish and
confirm, or released where its re-drive parked it) goes out again as it went or not at
all: the same id never carries another channel or another set of moments
(docs/consuming-tasks.md, "Once, and only while it is worth it"). Where it did, on the
memory stores the backtest uses:

- channel hours: a re-driven call whose centre had closed since, expiring before it
  opens again, went out as its rule's fallback SMS under the call's id;
- capacity: a merged group re-driven on a later day into a full call pool was moved to
  its fallback channel, or split (the call waiting for the next day, the SMS moment sent
  under its own id);
- opt-outs: a merged task led by a moment other than its carrier was judged by its
  carrier's channel, not the channel it went out on."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from moments.backtest import CollectingProducer
from moments.models import Channel, ProfileEvent, ServiceTask
from rules.gating import FrequencyCap
from sinks.capacity import CapacityLimiter
from sinks.contact import ContactLimiter
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.payloads import task_bytes
from sinks.policy import ContactPolicy, DispatchPolicy
from sinks.stores import DispatchStores
from sinks.withdrawals import WITHDRAWALS_TOPIC, profile_changes

from .fakes import Clock
from .test_redriven_groups import GRACE_S, START, SUB, crashing, moment

CALL, SMS, MGR = "c1" * 16, "d2" * 16, "e3" * 16
HOURS = {"timezone": "UTC", "hours": {"outbound_call": "03:00-12:00"}}
"""Calls are worked 03:00-12:00 UTC."""
TO_SMS = {"a": {"policy": "fallback", "channel": "sms"}}
NO_HOLD: dict[str, Any] = {"merge": {"hold_channels": []}, "overflow": TO_SMS}
"""Calls go at once (not held for the merge window), to their rule's fallback SMS."""
RULES: dict[str, dict[str, Any]] = {"fallback": TO_SMS["a"], "defer": {"policy": "defer"}}


def published(producer: CollectingProducer) -> list[tuple[str, str, list[str]]]:
    """Each task published, in order: its id, channel and the ids in its `related`."""
    out = []
    for p in producer.sent:
        task: dict[str, Any] = orjson.loads(p.payload)
        related = [str(r["task_id"]) for r in task.get("related") or []]
        out.append((str(task["task_id"]), str(task["channel"]), related))
    return out


def withdrawn(producer: CollectingProducer) -> list[tuple[str, str]]:
    return [
        (str(n["task_id"]), str(n["reason"]))
        for n in (orjson.loads(p.payload) for p in producer.withdrawn)
    ]


def sink_of(policy: dict[str, Any], now: dt.datetime) -> tuple[Clock, DispatchStores, TaskSink]:
    clock = Clock(now.timestamp())
    stores = memory_stores(clock)
    producer = CollectingProducer(clock)
    sink = TaskSink(
        producer,
        "tasks",
        stores,
        Metrics(),
        DispatchPolicy.model_validate(policy),
        clock=clock,
        withdrawals_topic=WITHDRAWALS_TOPIC,
    )
    return clock, stores, sink


ONE_CALL: dict[str, Any] = {
    "timezone": "UTC",
    "capacity": {"*": {"outbound_call": 1}},
    "reserved_share": 0,
    **NO_HOLD,
}
"""One call a day, taken by another task first: a call goes as its rule's fallback SMS."""


async def fell_back_for_a_full_pool_then_died() -> tuple[Clock, TaskSink]:
    """The 3rd's one call slot taken (`ONE_CALL`), a call sent as its fallback SMS, and
    its worker dead before the confirm: the sink, the task pending."""
    clock, stores, sink = sink_of(ONE_CALL, START)
    limiter = CapacityLimiter(stores.slots, sink.policy)
    assert (await limiter.take("other", None, Channel.OUTBOUND_CALL, 3, START)).taken
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
    with crashing(stores.ledger, "confirm"):
        await sink.flush()
    assert published(producer_of(sink)) == [(CALL, "sms", [])]
    return clock, sink


def producer_of(sink: TaskSink) -> CollectingProducer:
    producer = sink.producer
    assert isinstance(producer, CollectingProducer)
    return producer


async def opt_out(sink: TaskSink, at: float, channels: list[str]) -> None:
    update = ProfileEvent.model_validate(
        {
            "event_id": f"p{at}",
            "subscriber_id": SUB,
            "occurred_at": dt.datetime.fromtimestamp(at, dt.UTC),
            "opt_out": channels,
        }
    )
    await sink.subscribers.record_facts([update])
    await sink.withdrawals.withdraw(profile_changes([update]))


async def merged_then_dead(
    policy: dict[str, Any], member: ServiceTask
) -> tuple[Clock, DispatchStores, TaskSink]:
    """The call (rule `a`, made at 11:00) and `member` (made at 11:05) that joined it while
    it was held for the merge window, published together at 11:31 by a worker that died
    before its confirm."""
    clock, stores, sink = sink_of(policy, START)
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
    await sink.flush()
    clock.now += 300
    sink.add(member)
    await sink.flush()
    assert await stores.ledger.state(member.task_id) == "merged"

    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.ledger, "confirm"):
        await sink.release_due()
    assert len(producer_of(sink).sent) == 1
    assert await stores.ledger.state(CALL) == "pending"
    return clock, stores, sink


class TestChannelHours:
    """A re-driven task keeps the channel its decision sent it on (the one the hours gave
    it when its entry first went pending): it waits for that channel's opening, or goes
    now on it, as that decision sent it, when the opening comes after it must go."""

    async def test_a_call_the_centre_closed_on_since_goes_again_as_the_call(self) -> None:
        """Claimed at 11:59:50 (calls worked), its worker died, before or after the
        publish; re-driven at 12:01, the centre closed until 03:00, after the call expires
        (14:00): it goes out now as the call, as its decision sent it (a repeat, or the
        task that decision published, late by the grace period). Before: it went out
        again as an SMS (its rule's fallback) under the call's id; then it was dropped
        `expired`, and lost where the worker had died before the publish."""
        claimed = START + dt.timedelta(minutes=59, seconds=50)
        clock, stores, sink = sink_of({**HOURS, "overflow": TO_SMS}, claimed)
        call = moment(CALL, Channel.OUTBOUND_CALL, "a", claimed, 2)
        await stores.ledger.claim([(CALL, task_bytes(call))])
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])]
        assert await stores.ledger.state(CALL) == "sent"
        labels = {"moment_type": "a", "reason": "expired"}
        registry = sink.metrics.registry
        assert registry.get_sample_value("moments_tasks_suppressed_total", labels) is None

    async def test_a_second_re_drive_keeps_the_channel_of_the_first_decision(self) -> None:
        """As above, the first re-drive, at 12:01, dying after its claim: the second, at
        12:02, finds the call pending since 12:01, the centre closed then. It judges the
        hours as of 11:59:50, when the call first went pending (the first re-drive's
        mark), as the first re-drive did, and the call goes out now as it went. Before:
        judged as of 12:01, it went out as an SMS under the call's id."""
        claimed = START + dt.timedelta(minutes=59, seconds=50)
        clock, stores, sink = sink_of({**HOURS, "overflow": TO_SMS}, claimed)
        call = moment(CALL, Channel.OUTBOUND_CALL, "a", claimed, 2)
        await stores.ledger.claim([(CALL, task_bytes(call))])
        clock.now += GRACE_S + 10
        with crashing(stores.ledger, "group_many"):
            await sink.redrive(GRACE_S)
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])]

    async def test_a_call_sent_as_its_fallback_goes_again_as_the_fallback(self) -> None:
        """Decided at 12:30 (the centre closed until after it expires), it went out as an
        SMS; its re-drive sends the SMS again, the centre still closed (`moved:<id>`)."""
        claimed = START + dt.timedelta(minutes=90)
        policy = {**HOURS, "overflow": TO_SMS, "merge": {"hold_channels": []}}
        clock, sink = await sent_then_dead(policy, claimed)
        assert published(producer_of(sink)) == [(CALL, "sms", [])]
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])] * 2

    async def test_a_call_no_decision_moved_goes_on_its_own_channel(self) -> None:
        """Claimed at 12:30, its worker died before a decision moved it (no `moved:<id>`):
        it went out as the call, if at all, and its re-drive sends the call now (the centre
        opens after it expires), never the SMS a decision now would have made of it: the
        re-drive cannot tell this from a call published before a reload shortened the
        hours."""
        claimed = START + dt.timedelta(minutes=90)
        clock, stores, sink = sink_of({**HOURS, "overflow": TO_SMS}, claimed)
        call = moment(CALL, Channel.OUTBOUND_CALL, "a", claimed, 2)
        await stores.ledger.claim([(CALL, task_bytes(call))])
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])]

    async def test_a_call_the_redrive_parked_is_not_sent_as_an_sms_after_new_hours(self) -> None:
        """Re-driven at 12:01 and parked for 03:00 (it expires at 11:00 the next day); the
        centre's hours change to 11:00-11:30 meanwhile, their next opening after the call's
        expiry: its release sends it now as the call, as it went. Before: it went out as
        an SMS under the call's id; then it was dropped, and lost where the worker had
        died before the publish."""
        claimed = START + dt.timedelta(minutes=59, seconds=50)
        clock, stores, sink = sink_of({**HOURS, "overflow": TO_SMS}, claimed)
        call = moment(CALL, Channel.OUTBOUND_CALL, "a", claimed, 23)
        await stores.ledger.claim([(CALL, task_bytes(call))])
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert await stores.ledger.state(CALL) == "deferred"
        later = {**HOURS, "hours": {"outbound_call": "11:00-11:30"}, "overflow": TO_SMS}
        sink.use_policy(DispatchPolicy.model_validate(later))
        clock.now += 600
        await sink.release_due()
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])]
        assert await stores.ledger.state(CALL) == "sent"


class TestCapacity:
    """A merged task re-driven on a later day, whose pool is full, goes out whole on its
    channel: the slot it holds is the one the decision it repeats took."""

    @pytest.mark.parametrize("overflow", ["fallback", "defer"])
    async def test_a_group_redriven_the_next_day_is_neither_moved_nor_split(
        self, overflow: str
    ) -> None:
        """Published at 11:31 on the 3rd (one call a day), its worker died; another call
        took the 4th's slot; re-driven on the 4th. Before: `fallback` sent it again as an
        SMS under the call's id, `defer` kept the call for the 5th and sent the SMS moment
        alone under its own id."""
        rule = RULES[overflow]
        policy = {
            "timezone": "UTC",
            "capacity": {"*": {"outbound_call": 1}},
            "reserved_share": 0,
            "overflow": {"a": rule},
        }
        member = moment(SMS, Channel.SMS, "b", START + dt.timedelta(minutes=5), 72)
        clock, stores, sink = await merged_then_dead(policy, member)
        next_day = dt.datetime(2026, 12, 4, 0, 1, tzinfo=dt.UTC)
        limiter = CapacityLimiter(stores.slots, sink.policy)
        assert (await limiter.take("other", None, Channel.OUTBOUND_CALL, 3, next_day)).taken
        clock.now = next_day.timestamp()
        assert await sink.redrive(GRACE_S) == 1
        went = (CALL, "outbound_call", [SMS])
        assert published(producer_of(sink)) == [went, went]
        assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["sent", "merged"]

    async def test_a_call_sent_as_its_fallback_for_a_full_pool_goes_again_as_it(self) -> None:
        """The 3rd's one slot was taken: the call went out as an SMS, its rule's fallback,
        and its worker died. Re-driven on the 4th, whose pool has room, it is fitted as of
        its first decision and goes out as the SMS again. Judged on the 4th, it went out
        as a call under the SMS's id."""
        clock, sink = await fell_back_for_a_full_pool_then_died()
        clock.now = dt.datetime(2026, 12, 4, 0, 1, tzinfo=dt.UTC).timestamp()
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])] * 2

    @pytest.mark.parametrize("overflow", ["fallback", "defer"])
    async def test_a_group_the_redrive_parked_is_released_whole_into_a_full_pool(
        self, overflow: str
    ) -> None:
        """Published at 11:31 on the 3rd, its worker died; re-driven at 12:01, the centre
        closed, it waits for 03:00 on the 4th, when another call has taken the day's one
        slot: it goes out whole on its channel. Before: moved to SMS, or split."""
        rule = RULES[overflow]
        policy = {
            **HOURS,
            "capacity": {"*": {"outbound_call": 1}},
            "reserved_share": 0,
            "overflow": {"a": rule},
        }
        member = moment(SMS, Channel.SMS, "b", START + dt.timedelta(minutes=5), 72)
        clock, stores, sink = await merged_then_dead(policy, member)
        clock.now = START.timestamp() + 61 * 60
        assert await sink.redrive(GRACE_S) == 1
        assert await stores.ledger.state(CALL) == "deferred"
        opens = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)
        limiter = CapacityLimiter(stores.slots, sink.policy)
        assert (await limiter.take("other", None, Channel.OUTBOUND_CALL, 3, opens)).taken
        clock.now = opens.timestamp()
        await sink.release_due()
        went = (CALL, "outbound_call", [SMS])
        assert published(producer_of(sink)) == [went, went]
        assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["sent", "merged"]


class TestOptOut:
    """A re-driven merged task is judged by the channel it went out on (its lead's), not
    by its carrier's own when the carrier does not lead it."""

    async def test_an_opt_out_of_the_tasks_channel_withdraws_it(self) -> None:
        """A manager moment joined the call and leads it (the task went out on `manager`
        under the call's id); the customer opts out of `manager`: the re-drive withdraws
        the task and sends nothing. Before: judged by `outbound_call`, it went out again
        on `manager`."""
        member = moment(MGR, Channel.MANAGER, "m", START + dt.timedelta(minutes=5), 72)
        clock, _, sink = await merged_then_dead({"timezone": "UTC"}, member)
        assert published(producer_of(sink)) == [(CALL, "manager", [CALL])]
        await opt_out(sink, clock.now + 5, ["manager"])
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "manager", [CALL])]
        assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
        [notice] = [orjson.loads(p.payload) for p in producer_of(sink).withdrawn]
        # As the task went out (its lead's): it named the call's own channel and type.
        assert (notice["channel"], notice["moment_type"]) == ("manager", member.moment.type)

    async def test_an_opt_out_of_the_carriers_channel_only_leaves_it(self) -> None:
        """The customer opts out of `outbound_call`, the carrier's own channel, not the
        one the task went out on: it goes out again as it went, nothing withdrawn (an
        opt-out of a related moment's channel withdraws nothing). Before: withdrawn, and
        the manager moment sent again under its own id."""
        member = moment(MGR, Channel.MANAGER, "m", START + dt.timedelta(minutes=5), 72)
        clock, stores, sink = await merged_then_dead({"timezone": "UTC"}, member)
        await opt_out(sink, clock.now + 5, ["outbound_call"])
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        went = (CALL, "manager", [CALL])
        assert published(producer_of(sink)) == [went, went]
        assert withdrawn(producer_of(sink)) == []
        assert await stores.ledger.state(CALL) == "sent"

    async def test_a_fallback_opted_out_of_is_withdrawn_as_the_fallback(self) -> None:
        """The call went out as its rule's fallback SMS (the day's one call slot taken),
        and its worker died; the customer opts out of SMS: the re-drive withdraws the task
        naming `sms`, the channel it went out on (docs/consuming-tasks.md, "Withdrawn
        tasks"). Before: the notice named `outbound_call`, the payload's channel, for a
        task no call centre got."""
        clock, sink = await fell_back_for_a_full_pool_then_died()
        await opt_out(sink, clock.now + 5, ["sms"])
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])]
        [notice] = [orjson.loads(p.payload) for p in producer_of(sink).withdrawn]
        assert (notice["task_id"], notice["reason"], notice["channel"]) == (
            CALL,
            "opt_out",
            "sms",
        )

    async def test_a_fallback_its_confirm_found_void_is_withdrawn_as_the_fallback(
        self,
    ) -> None:
        """The call went out as its fallback SMS; an opt-out of SMS landed before its
        confirm, which found it void, and the worker died before withdrawing it. The
        re-drive withdraws it as that worker would have: naming `sms`. Before: naming
        `outbound_call`, the payload's channel."""
        clock, stores, sink = sink_of(ONE_CALL, START)
        limiter = CapacityLimiter(stores.slots, sink.policy)
        assert (await limiter.take("other", None, Channel.OUTBOUND_CALL, 3, START)).taken
        sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
        confirm = stores.ledger.confirm

        async def opted_out_first(*args: Any, **kwargs: Any) -> Any:
            await opt_out(sink, clock.now, ["sms"])
            return await confirm(*args, **kwargs)

        stores.ledger.confirm = opted_out_first  # type: ignore[method-assign]
        with crashing(sink.withdrawals, "withdraw_voided"):
            await sink.flush()
        stores.ledger.confirm = confirm  # type: ignore[method-assign]
        assert published(producer_of(sink)) == [(CALL, "sms", [])]
        assert withdrawn(producer_of(sink)) == []
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        [notice] = [orjson.loads(p.payload) for p in producer_of(sink).withdrawn]
        assert (notice["task_id"], notice["reason"], notice["channel"]) == (
            CALL,
            "opt_out",
            "sms",
        )
        assert await stores.ledger.state(CALL) == "sent"

    async def test_a_fallback_answered_before_its_redrive_is_confirmed_as_it_went(
        self,
    ) -> None:
        """The call went out as its fallback SMS, its worker died, and the SMS gateway's
        outcome came back: the re-drive confirms it as sent, as the SMS. A later opt-out
        of SMS withdraws it, naming `sms`. Before: confirmed as the call (its body and
        published index), the opt-out of SMS withdrew nothing and one of calls withdrew
        the task no call centre got."""
        clock, sink = await fell_back_for_a_full_pool_then_died()
        assert await sink.ledger.first_outcome(CALL, "accepted")
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])]
        assert await sink.ledger.state(CALL) == "sent"
        await opt_out(sink, clock.now + 5, ["outbound_call"])
        assert withdrawn(producer_of(sink)) == []
        await opt_out(sink, clock.now + 6, ["sms"])
        [notice] = [orjson.loads(p.payload) for p in producer_of(sink).withdrawn]
        assert (notice["task_id"], notice["reason"], notice["channel"]) == (
            CALL,
            "opt_out",
            "sms",
        )


async def sent_then_dead(
    policy: dict[str, Any], at: dt.datetime, frequency: FrequencyCap | None = None
) -> tuple[Clock, TaskSink]:
    """The call (rule `a`, lasting 2 hours), decided at `at` (under the rule set's
    `frequency` cap) and published by a worker that died before its confirm (its entry
    pending)."""
    clock, stores, sink = sink_of(policy, at)
    sink.frequency_cap = lambda: frequency
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", at, 2))
    with crashing(stores.ledger, "confirm"):
        await sink.flush()
    assert await stores.ledger.state(CALL) == "pending"
    return clock, sink


class TestPolicyReloaded:
    """The dispatch policy reloaded between the decision that published a task and its
    re-drive: the re-drive sends it on the channel that decision gave it, whatever the
    policy in force now would give it then."""

    async def test_hours_shortened_since_do_not_move_a_call_to_its_fallback(self) -> None:
        """Published as a call at 11:59:50 (calls worked 03:00-12:00); the centre's hours
        become 03:00-11:00; re-driven at 12:01, it goes as the call (now: the centre opens
        after it expires). Before: judged as of 11:59:50 by the new hours, it went out
        again as an SMS under the call's id."""
        at = START + dt.timedelta(minutes=59, seconds=50)
        clock, sink = await sent_then_dead({**HOURS, **NO_HOLD}, at)
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])]
        later = {**HOURS, **NO_HOLD, "hours": {"outbound_call": "03:00-11:00"}}
        sink.use_policy(DispatchPolicy.model_validate(later))
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])] * 2

    async def test_hours_lengthened_since_do_not_move_a_fallback_back_to_a_call(self) -> None:
        """Published as its fallback SMS at 11:30 (calls worked 03:00-11:00, the call
        expiring before they open again); the centre's hours become 03:00-12:00;
        re-driven at 11:32, it goes as the SMS again. Before: judged as of 11:30 by the new
        hours, it went out as a call under the id the SMS went out with."""
        at = START + dt.timedelta(minutes=30)
        short = {**HOURS, **NO_HOLD, "hours": {"outbound_call": "03:00-11:00"}}
        clock, sink = await sent_then_dead(short, at)
        assert published(producer_of(sink)) == [(CALL, "sms", [])]
        sink.use_policy(DispatchPolicy.model_validate({**HOURS, **NO_HOLD}))
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])] * 2

    async def test_a_fallback_changed_since_does_not_move_the_task(self) -> None:
        """Published as its fallback SMS at 12:30 (the centre closed); the rule's fallback
        becomes `app_push`; re-driven, it goes as the SMS again. Before: as a push under
        the SMS's id."""
        at = START + dt.timedelta(minutes=90)
        clock, sink = await sent_then_dead({**HOURS, **NO_HOLD}, at)
        assert published(producer_of(sink)) == [(CALL, "sms", [])]
        push = {"a": {"policy": "fallback", "channel": "app_push"}}
        sink.use_policy(DispatchPolicy.model_validate({**HOURS, **NO_HOLD, "overflow": push}))
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])] * 2

    async def test_capacity_raised_since_does_not_move_a_fallback_back_to_a_call(self) -> None:
        """The day's one call slot was taken: the call went out as its fallback SMS. The
        limit is raised to 2 the same day; re-driven, it goes as the SMS again. Before:
        fitted as of its decision under the new limit, it took a call slot and went out
        as a call under the SMS's id."""
        clock, sink = await fell_back_for_a_full_pool_then_died()
        raised = {**ONE_CALL, "capacity": {"*": {"outbound_call": 2}}}
        sink.use_policy(DispatchPolicy.model_validate(raised))
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "sms", [])] * 2


class TestContactCaps:
    """The contact books count a contact once per task id: a re-drive finds the one its
    first decision took, counts it taken and adds none."""

    async def test_a_redriven_task_is_not_refused_for_its_own_contact(self) -> None:
        """One contact a day (the policy's cap and the rule set's frequency cap): the call
        took the day's one at 11:00 and went out, its worker dying before the confirm. Its
        re-drive sends it again, neither refused for the contact it took itself nor
        counting a second: another task is refused until 11:00 the next day."""
        cap = {"contact": {"max_contacts": 1, "period": "1d"}}
        frequency = FrequencyCap(max_contacts=1, period="1d")
        clock, sink = await sent_then_dead({"timezone": "UTC", **NO_HOLD, **cap}, START, frequency)
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        assert published(producer_of(sink)) == [(CALL, "outbound_call", [])] * 2
        registry = sink.metrics.registry
        for reason in ("contact_cap", "frequency_cap"):
            labels = {"moment_type": "a", "reason": reason}
            assert registry.get_sample_value("moments_tasks_suppressed_total", labels) is None
        day = dt.timedelta(days=1)
        for book in (sink.stores.contacts, sink.stores.frequency):
            limiter = ContactLimiter(book, ContactPolicy(max_contacts=1, period=day))
            [other] = await limiter.take_many([("other", SUB, clock.now)], look=True)
            assert (other.taken, other.free_at) == (False, (START + day).timestamp())

    async def test_a_cap_set_since_does_not_drop_a_task_that_may_have_gone_out(self) -> None:
        """Published at 11:00 with no contact cap, its worker dying before the confirm; a
        reload sets one contact a day, and an SMS takes it at 11:00:05. The call's re-drive
        is refused until 11:00:05 the next day, after it expires: it goes out again as it
        went, its contact counted now. Before: dropped `contact_cap` (its rule's cooldown
        given back) though the first decision met no cap and may have reached the
        customer."""
        clock, sink = await sent_then_dead({"timezone": "UTC", **NO_HOLD}, START)
        cap = {"contact": {"max_contacts": 1, "period": "1d"}}
        sink.use_policy(DispatchPolicy.model_validate({"timezone": "UTC", **NO_HOLD, **cap}))
        frequency = FrequencyCap(max_contacts=3, period="1d")  # and a rules reload
        sink.frequency_cap = lambda: frequency
        clock.now += 5
        made = dt.datetime.fromtimestamp(clock.now, dt.UTC)
        sink.add(moment(SMS, Channel.SMS, "b", made, 2))
        await sink.flush()
        clock.now += GRACE_S + 10
        assert await sink.redrive(GRACE_S) == 1
        call: tuple[str, str, list[str]] = (CALL, "outbound_call", [])
        assert published(producer_of(sink)) == [call, (SMS, "sms", []), call]
        assert await sink.stores.ledger.state(CALL) == "sent"
        labels = {"moment_type": "a", "reason": "contact_cap"}
        assert (
            sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) is None
        )
        # The SMS's and the call's, counted now in both books (the frequency contact the
        # contact cap had the call give back, counted again).
        for book in (sink.stores.contacts, sink.stores.frequency):
            two = ContactLimiter(book, ContactPolicy(max_contacts=2, period="1d"))
            [third] = await two.take_many([("third", SUB, clock.now)], look=True)
            assert not third.taken
