"""A merged task whose worker died after its publish and before its confirm, withdrawn by
its re-drive (the customer opted out of the channel it went out on): the moments merged
into it go on under their lead's new id (docs/architecture.md, "Cooldown returns"). They
may have gone out inside the carrier's copy, so that new task keeps their rules'
cooldowns when it is dropped later, as the carrier's own drop does: given back, a rule
fired again for the next event and the customer the first copy reached was contacted a
second time. On the memory stores the backtest uses; tests/integration/dispatch/
test_batch_stores.py (`TestLeave`) checks the mark on Redis."""

from __future__ import annotations

import datetime as dt
from typing import Any

from moments.models import Channel
from sinks.cooldowns import CollectedCooldownReturns
from sinks.dispatch import TaskSink
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores

from .fakes import Clock
from .test_redriven_content import (
    CALL,
    SMS,
    merged_then_dead,
    opt_out,
    producer_of,
    published,
    sink_of,
    withdrawn,
)
from .test_redriven_groups import GRACE_S, START, SUB, crashing, moment

SMS_CLOSES: dict[str, Any] = {"timezone": "UTC", "hours": {"sms": "03:00-11:32"}}
"""SMS goes out 03:00-11:32 UTC: open when the call is published at 11:31, closed at its
re-drive a minute later."""
OPENS = dt.datetime(2026, 12, 4, 3, 0, 1, tzinfo=dt.UTC)


Rehomed = tuple[Clock, DispatchStores, TaskSink, CollectedCooldownReturns]


async def withdrawn_and_rehomed() -> Rehomed:
    """The call (rule `a`) and the SMS moment (rule `b`) merged into it, published at 11:31
    under the call's id by a worker that died before its confirm; the customer opts out
    of calls; the re-drive at 11:32 withdraws the call, and the SMS moment goes on under
    its own id, waiting for the SMS hours' opening at 03:00."""
    member = moment(SMS, Channel.SMS, "b", START + dt.timedelta(minutes=5), 72)
    clock, stores, sink = await merged_then_dead(SMS_CLOSES, member)
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert await stores.ledger.state(CALL) == "dropped"
    assert await stores.ledger.state(SMS) == "deferred"
    assert returns.pending == []
    return clock, stores, sink, returns


async def test_a_moment_rehomed_after_a_withdrawn_carrier_keeps_its_cooldown() -> None:
    """Its rule declined while it waited: its release drops it `declined`, rule `b`'s
    cooldown kept. Before: its new id carried no mark, and the cooldown was returned."""
    clock, stores, sink, returns = await withdrawn_and_rehomed()
    await stores.declines.suppress(SUB, "b", 86400)
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "dropped"
    assert returns.pending == []
    assert await stores.ledger.owed_returns(clock.now) == []


async def test_a_moment_rehomed_after_a_withdrawn_carrier_is_sent_when_due() -> None:
    """The control: nothing happened while it waited, so it goes out at 03:00 under its
    own id, once."""
    clock, stores, sink, returns = await withdrawn_and_rehomed()
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "sent"
    assert [p for p in published(producer_of(sink)) if p[0] == SMS] == [(SMS, "sms", [])]
    assert returns.pending == []


async def test_a_second_redrive_after_the_first_died_at_its_claim_decides_once() -> None:
    """The first re-drive, at 11:32, dies after its claim (`claim_stale`), before deciding:
    nothing of its decision is written. The second, a grace period later, takes the
    decision the first would have: the call withdrawn once, the SMS moment on under its
    own id, marked, its cooldown kept when its release drops it."""
    member = moment(SMS, Channel.SMS, "b", START + dt.timedelta(minutes=5), 72)
    clock, stores, sink = await merged_then_dead(SMS_CLOSES, member)
    returns = CollectedCooldownReturns(lambda: {"a", "b"})
    sink.returns = returns
    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    with crashing(stores.ledger, "group_many"):
        await sink.redrive(GRACE_S)
    assert await stores.ledger.state(CALL) == "pending"
    assert withdrawn(producer_of(sink)) == []
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert [await stores.ledger.state(i) for i in (CALL, SMS)] == ["dropped", "deferred"]
    # The call's claim mark, the SMS moment's a leave's (its id never went out).
    assert await stores.ledger.redriven_carried([CALL, SMS]) == ({CALL}, {SMS})
    await stores.declines.suppress(SUB, "b", 86400)
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "dropped"
    assert [p for p in published(producer_of(sink)) if p[0] == SMS] == []
    assert returns.pending == []


LEAD, OTHER = "e4" * 16, "f5" * 16
FULL_SMS: dict[str, Any] = {
    "timezone": "UTC",
    "capacity": {"*": {"sms": 0}},
    "reserved_share": 0,
    "overflow": {
        "l": {"policy": "fallback", "channel": "app_push"},
        "o": {"policy": "defer"},
    },
}
"""No SMS goes out: an SMS of rule `l` falls back to an app push, one of rule `o` waits
for the next day (09:00)."""
NEXT_DAY = dt.datetime(2026, 12, 4, 9, 0, 1, tzinfo=dt.UTC)


async def withdrawn_with_two(policy: dict[str, Any]) -> Rehomed:
    """The call (rule `a`) and two SMS moments that joined it (rules `l` and `o`; `l`
    leads them, priority 2), published at 11:31 under the call's id by a worker that died
    before its confirm; the customer opts out of calls; the re-drive at 11:32 withdraws
    the call, and the SMS moments go on under `l`'s id (by `policy`)."""
    clock, stores, sink = sink_of(policy, START)
    returns = CollectedCooldownReturns(lambda: {"a", "l", "o"})
    sink.returns = returns
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
    await sink.flush()
    clock.now += 300
    made = START + dt.timedelta(minutes=5)
    lead = moment(LEAD, Channel.SMS, "l", made, 72).model_copy(update={"priority": 2})
    for member in (lead, moment(OTHER, Channel.SMS, "o", made, 72)):
        sink.add(member)
        await sink.flush()
    assert [await stores.ledger.state(i) for i in (LEAD, OTHER)] == ["merged", "merged"]
    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.ledger, "confirm"):
        await sink.release_due()
    assert [(t, c) for t, c, _ in published(producer_of(sink))] == [(CALL, "outbound_call")]

    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert returns.pending == []
    return clock, stores, sink, returns


async def withdrawn_and_split(overflow: str = "defer") -> Rehomed:
    """`withdrawn_with_two` where the full SMS pool splits the moments going on under
    `l`'s id: `l` goes now as its fallback app push, `o` waits for the next day under its
    own id (`overflow` `defer`) or is dropped (`drop`)."""
    policy = {**FULL_SMS, "overflow": {**FULL_SMS["overflow"], "o": {"policy": overflow}}}
    clock, stores, sink, returns = await withdrawn_with_two(policy)
    assert published(producer_of(sink))[1:] == [(LEAD, "app_push", [])]
    waits = "deferred" if overflow == "defer" else "dropped"
    assert [await stores.ledger.state(i) for i in (CALL, LEAD, OTHER)] == [
        "dropped",
        "sent",
        waits,
    ]
    return clock, stores, sink, returns


async def test_a_part_split_off_a_rehomed_lead_keeps_its_cooldown() -> None:
    """The part capacity split off the lead of a withdrawn call's moments (`o`, waiting
    for the next day under its own id) may have gone out inside the call as well: marked
    re-driven as the lead is, its drop at its release (its rule declined meanwhile) keeps
    rule `o`'s cooldown. Before: `CapacityFitting.split` moved it to its own id with no
    mark, and its drop returned the cooldown, so the rule could fire again for a customer
    the withdrawn call may have reached: a second contact."""
    clock, stores, sink, returns = await withdrawn_and_split()
    await stores.declines.suppress(SUB, "o", 3 * 86400)
    clock.now = NEXT_DAY.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(OTHER) == "dropped"
    assert returns.pending == []
    assert await stores.ledger.owed_returns(clock.now) == []
    made = START + dt.timedelta(minutes=5)
    sink.add(moment(OTHER, Channel.SMS, "o", made, 72))  # its batch read again
    assert await sink.flush() == set()


async def test_a_part_split_off_a_rehomed_lead_respects_the_pool() -> None:
    """The control: nothing happened while `o` waited, and its pool is full again at its
    release: it waits for another day, sent by no one, its cooldown neither returned nor
    spent. Its id never went out (the withdrawn call carried `o` under the call's id): its
    mark is a leave's (`L<time>`), which keeps its cooldown when it is dropped but does not
    seal it. Read as a re-drive's (before), it was sent whole past the full pool, as if
    its id had gone out already."""
    clock, stores, sink, returns = await withdrawn_and_split()
    assert await stores.ledger.redriven_carried([OTHER]) == (set(), {OTHER})
    clock.now = NEXT_DAY.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(OTHER) == "deferred"
    assert published(producer_of(sink))[2:] == []
    assert returns.pending == []


FOURTH = "b7" * 16
ROOM_SMS: dict[str, Any] = {**FULL_SMS, "capacity": {"*": {"sms": 5}}}
"""`FULL_SMS` reloaded with room for SMS."""


async def test_a_split_part_whose_lead_is_declined_sends_its_other_moment() -> None:
    """Three SMS moments joined the call (`l` leading them, priority 2, then `o`, priority
    3, and `q`, priority 4); the call went out with them inside, its worker died before
    the confirm, the customer opted out of calls, and the re-drive withdrew the call: the
    full SMS pool sends `l` as its fallback app push and splits `o` and `q` off to wait
    for the next day under `o`'s id. A reload gives SMS room; rule `o` is declined
    meanwhile: at its release `o` is dropped (its cooldown kept: it may have gone out
    inside the call) and `q`, whose only copy was withdrawn with the call, goes out under
    its own id. Before: the part's mark read as a re-drive's sealed it, and `q` was
    dropped with `o`: a lost moment."""
    policy = {**FULL_SMS, "overflow": {**FULL_SMS["overflow"], "q": {"policy": "defer"}}}
    clock, stores, sink = sink_of(policy, START)
    returns = CollectedCooldownReturns(lambda: {"a", "l", "o", "q"})
    sink.returns = returns
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
    await sink.flush()
    clock.now += 300
    made = START + dt.timedelta(minutes=5)
    members = [
        moment(LEAD, Channel.SMS, "l", made, 72).model_copy(update={"priority": 2}),
        moment(OTHER, Channel.SMS, "o", made, 72),
        moment(FOURTH, Channel.SMS, "q", made, 72).model_copy(update={"priority": 4}),
    ]
    for member in members:
        sink.add(member)
        await sink.flush()
    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.ledger, "confirm"):
        await sink.release_due()
    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert published(producer_of(sink))[1:] == [(LEAD, "app_push", [])]
    states = [await stores.ledger.state(i) for i in (OTHER, FOURTH)]
    assert states == ["deferred", "merged"]

    sink.use_policy(DispatchPolicy.model_validate(ROOM_SMS))
    await stores.declines.suppress(SUB, "o", 3 * 86400)
    clock.now = NEXT_DAY.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(OTHER) == "dropped"
    assert published(producer_of(sink))[2:] == [(FOURTH, "sms", [])]
    assert returns.pending == []


async def test_a_moment_a_full_pool_drops_off_a_rehomed_lead_keeps_its_cooldown() -> None:
    """`o` dropped by the split (its rule's overflow `drop`), its cooldown kept as it may
    have gone out inside the withdrawn call (`_gone`): its batch, read again after a crash
    before its state was written, finds it dropped and keeps the cooldown too (its `X`
    entry marked `redriven:<id>` `1` as it leaves the lead's group, the split's
    `Leave.went_out`). Unmarked, `_dropped_before` gave the cooldown back."""
    _, _, sink, returns = await withdrawn_and_split("drop")
    made = START + dt.timedelta(minutes=5)
    sink.add(moment(OTHER, Channel.SMS, "o", made, 72))  # its batch read again
    assert await sink.flush() == set()
    assert returns.pending == []
    labels = {"moment_type": "o", "reason": "capacity"}
    assert sink.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1


async def test_a_rehomed_lead_a_cap_drops_whole_keeps_its_moments_cooldowns() -> None:
    """The moments going on under `l`'s id dropped whole (`TaskSink._drop_route`): the
    contact cap (one a week) holds the call's contact, which may have been made, until
    after they must go, so they are dropped `contact_cap`, their cooldowns kept; their
    batches, read again after a crash before their state was written, keep them too (`l`
    by its mark's time, `o` by the `1` its leave out of `l`'s group wrote)."""
    capped = {"timezone": "UTC", "contact": {"max_contacts": 1, "period": "7d"}}
    _, stores, sink, returns = await withdrawn_with_two(capped)
    assert len(published(producer_of(sink))) == 1
    assert [await stores.ledger.state(i) for i in (LEAD, OTHER)] == ["dropped", "dropped"]
    registry = sink.metrics.registry
    for rule in ("l", "o"):
        labels = {"moment_type": rule, "reason": "contact_cap"}
        assert registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1
    made = START + dt.timedelta(minutes=5)
    lead = moment(LEAD, Channel.SMS, "l", made, 72).model_copy(update={"priority": 2})
    for again in (lead, moment(OTHER, Channel.SMS, "o", made, 72)):
        sink.add(again)
        assert await sink.flush() == set()
    assert returns.pending == []


HELD_SMS: dict[str, Any] = {**FULL_SMS, "merge": {"hold_channels": ["sms"]}}
"""`FULL_SMS`, SMS held for the merge window: the SMS of rule `o` joins the one of `l`."""
LATE = dt.datetime(2026, 12, 4, 10, 30, tzinfo=dt.UTC)


async def test_a_part_a_late_redrive_splits_off_a_sealed_group_keeps_its_cooldown() -> None:
    """`l` (11:00) held for the merge window, `o` (11:05, expiring the next day at 10:05)
    joined it; the release at 11:31 died taking capacity, so the group may have gone out
    whole under `l`'s id, as far as anyone can tell. Its re-drive comes the next day at
    10:30, past `o`'s last send (10:00), and fits the group as of the decision it repeats
    (11:31 the day before, `CapacityFitting.within`): the full SMS pool sends `l` as an
    app push and moves `o` to its own id, waiting for 09:00 (then, before its last send).
    That part is marked re-driven, so its release drops it `expired` keeping rule `o`'s
    cooldown; its batch read again keeps it too. Before: the mark was dated by the
    re-drive (10:30), past `o`'s last send, so the batch read again judged it never gone
    out (`_dropped_before`) and gave the cooldown back the release had kept: the rule
    could fire again for a customer the first copy may have reached."""
    clock, stores, sink = sink_of(HELD_SMS, START)
    returns = CollectedCooldownReturns(lambda: {"l", "o"})
    sink.returns = returns
    sink.add(moment(LEAD, Channel.SMS, "l", START, 72))
    await sink.flush()
    clock.now += 300
    member = moment(OTHER, Channel.SMS, "o", START + dt.timedelta(minutes=5), 23)
    sink.add(member)
    await sink.flush()
    assert await stores.ledger.state(OTHER) == "merged"
    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.slots, "take_many"):
        await sink.release_due()
    assert await stores.ledger.state(LEAD) == "pending"

    clock.now = LATE.timestamp()
    assert await sink.redrive(GRACE_S) == 1
    assert published(producer_of(sink)) == [(LEAD, "app_push", [])]
    assert await stores.ledger.state(OTHER) == "deferred"
    clock.now += 60
    await sink.release_due()
    assert await stores.ledger.state(OTHER) == "dropped"
    assert returns.pending == []
    sink.add(member)  # its batch read again
    assert await sink.flush() == set()


FULL_CALLS: dict[str, Any] = {
    "timezone": "UTC",
    "capacity": {"*": {"outbound_call": 0}},
    "reserved_share": 0,
    "overflow": {"a": {"policy": "defer"}},
}
"""No call goes out: a call of rule `a` waits for the next day (09:00)."""
THIRD = "a6" * 16


async def test_a_part_a_late_redrive_sends_off_a_sealed_group_goes_out_once() -> None:
    """The call (rule `a`, 11:00) held for the merge window, two SMS moments joined it
    (11:05: `o`, leading them, its last send the next day at 10:00, and `p`); the release
    at 11:31 died taking capacity, so the group may have gone out whole under the call's
    id. Its re-drive the next day at 10:30 fits it as of that release: no call goes out
    that day, so the call waits and the SMS moments go now under `o`'s id, as they were
    kept (sealed); that re-drive dies before its confirm. The second re-drive finds `o`
    past its last send and, the part dated by the decision it repeats (11:31, when `o`
    was sendable), judges it as one that may have gone out: `o` is dropped `expired` and
    `p` with it. Before: the part's mark was dated 10:30, past `o`'s last send, so the
    second re-drive judged it never gone out and sent `p` again under its own id, to a
    customer the part had reached: a second contact."""
    clock, stores, sink = sink_of(FULL_CALLS, START)
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
    await sink.flush()
    clock.now += 300
    made = START + dt.timedelta(minutes=5)
    lead = moment(LEAD, Channel.SMS, "o", made, 23).model_copy(update={"priority": 2})
    for member in (lead, moment(THIRD, Channel.SMS, "p", made, 72)):
        sink.add(member)
        await sink.flush()
    assert [await stores.ledger.state(i) for i in (LEAD, THIRD)] == ["merged", "merged"]
    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.slots, "take_many"):
        await sink.release_due()
    assert await stores.ledger.state(CALL) == "pending"

    clock.now = LATE.timestamp()
    with crashing(stores.ledger, "confirm"):
        await sink.redrive(GRACE_S)
    assert published(producer_of(sink)) == [(LEAD, "sms", [THIRD])]
    assert [await stores.ledger.state(i) for i in (CALL, LEAD)] == ["deferred", "pending"]

    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert [await stores.ledger.state(i) for i in (LEAD, THIRD)] == ["dropped", "dropped"]
    # The call, due since 09:00, goes out whole from the park the first re-drive made.
    assert published(producer_of(sink)) == [
        (LEAD, "sms", [THIRD]),
        (CALL, "outbound_call", []),
    ]


async def test_a_rehomed_lead_sent_under_its_own_id_is_withdrawn_when_dropped() -> None:
    """The SMS moment re-homed after the withdrawn call goes out under its own id at the
    SMS opening, and that release dies before its confirm; the customer then opts out of
    SMS: the re-drive drops it `opt_out` and withdraws it under its own id, which may have
    reached the consumer: the re-drive's claim made the leave's mark its own
    (`redriven:<id>`), unlike a lead never published under its id (below)."""
    clock, stores, sink, returns = await withdrawn_and_rehomed()
    clock.now = OPENS.timestamp()
    with crashing(stores.ledger, "confirm"):
        await sink.release_due()
    assert published(producer_of(sink))[1:] == [(SMS, "sms", [])]
    await opt_out(sink, clock.now + 5, ["sms"])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert await stores.ledger.state(SMS) == "dropped"
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out"), (SMS, "opt_out")]
    assert returns.pending == []


async def test_a_rehomed_lead_never_sent_under_its_id_is_not_withdrawn_when_dropped() -> None:
    """The SMS moment re-homed after the withdrawn call waits for the SMS opening; the
    customer then opts out of SMS: its release drops it `opt_out`, its cooldown kept (it
    may have gone out inside the call, which was withdrawn), and withdraws nothing: no
    consumer saw its id. Before: its leave's mark read as a re-drive's, and a notice went
    out for an id no consumer had seen."""
    clock, stores, sink, returns = await withdrawn_and_rehomed()
    await opt_out(sink, clock.now + 5, ["sms"])
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(SMS) == "dropped"
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert returns.pending == []


async def test_a_rehomed_group_whose_lead_is_declined_sends_its_other_moment() -> None:
    """Two SMS moments (rules `l`, leading them, and `o`) joined the call; the call went
    out with them inside, its worker died before the confirm, the customer opted out of
    calls, and the re-drive withdrew the call: `l` and `o` go on under `l`'s id, waiting
    for the SMS opening, `l`'s entry marked re-driven as it left the group (its moments'
    cooldowns kept). Rule `l` is declined meanwhile: at the opening `l` is dropped, and
    `o`, whose only copy was withdrawn, should go out under its own id (it did before
    c29bfa29). It is dropped with `l` instead: the release reads the leave's mark as a
    re-drive's and seals the group (`_parked_by_redrive`, `sealed_moment`), as if `l`'s
    id had gone out with `o` inside: a lost moment. Telling them apart needs a mark of
    the leave's own that a re-drive's claim turns into its own (`_LEAVE`,
    `_CLAIM_STALE`, and the memory ledger's twins), the same the withdrawal of a re-homed
    lead never published under its id needs (`_may_have_gone`)."""
    clock, stores, sink = sink_of(SMS_CLOSES, START)
    returns = CollectedCooldownReturns(lambda: {"a", "l", "o"})
    sink.returns = returns
    sink.add(moment(CALL, Channel.OUTBOUND_CALL, "a", START, 72))
    await sink.flush()
    clock.now += 300
    made = START + dt.timedelta(minutes=5)
    lead = moment(LEAD, Channel.SMS, "l", made, 72).model_copy(update={"priority": 2})
    for member in (lead, moment(OTHER, Channel.SMS, "o", made, 72)):
        sink.add(member)
        await sink.flush()
    clock.now = START.timestamp() + 31 * 60
    with crashing(stores.ledger, "confirm"):
        await sink.release_due()
    await opt_out(sink, clock.now + 5, ["outbound_call"])
    clock.now += GRACE_S + 10
    assert await sink.redrive(GRACE_S) == 1
    assert withdrawn(producer_of(sink)) == [(CALL, "opt_out")]
    assert [await stores.ledger.state(i) for i in (LEAD, OTHER)] == ["deferred", "merged"]
    await stores.declines.suppress(SUB, "l", 3 * 86400)
    clock.now = OPENS.timestamp()
    await sink.release_due()
    assert await stores.ledger.state(LEAD) == "dropped"
    assert published(producer_of(sink))[1:] == [(OTHER, "sms", [])]
