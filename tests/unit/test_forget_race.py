"""A `declined` outcome of a task made before its subscriber's profile tombstone, read
while the tombstone is applied (the outcomes and the profile topic are read by their own
agents, on any worker): the outcome looked the erasure mark up before the tombstone
recorded it, and wrote the decline after the tombstone erased the declines. The decline
(`declined:<subscriber>:<rule>`, the erased number in its name) stayed for its 30 days
and held the rule from the number's next holder. On the in-memory stores; the order of
the tombstone's own writes is what makes the outcome's second look enough on Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from moments.models import Channel, OutcomeStatus, ServiceTask, retry_id
from moments.outcomes import handle_outcomes
from sinks.memory import MemoryContactBook, MemoryLedger
from sinks.stores import Declines, Facts, Parking

from .test_unanswered import CALL, HOUR, SMS_1, START, SUB, Scenario, outcome_record, task

if TYPE_CHECKING:  # annotations only: the tests also run against an older src
    from sinks.stores import Held

RULE = "low_balance"


def tombstone_after_the_look(s: Scenario) -> list[str]:
    """The race: the outcome's look at the erasure marks, then, once, the subscriber's
    tombstone applied before the outcome writes anything. The list names the subscribers
    tombstoned, for the test to check the race ran."""
    subscribers = s.sink.subscribers
    looked = subscribers.forgotten_tasks
    applied: list[str] = []

    async def look_then_tombstone(tasks: Sequence[ServiceTask]) -> set[str]:
        found = await looked(tasks)
        if not applied:
            applied.append(SUB)
            await subscribers.forget([SUB], [RULE])
        return found

    subscribers.forgotten_tasks = look_then_tombstone  # type: ignore[method-assign]
    return applied


async def test_a_decline_written_after_a_tombstone_it_raced_is_erased() -> None:
    s = Scenario()
    await s.sink.dispatch([task(SMS_1, Channel.SMS, RULE, expires_h=2)])
    s.clock.advance(START.timestamp() + HOUR / 2)
    tombstones = tombstone_after_the_look(s)  # before the decline is written
    declined = outcome_record(SMS_1, OutcomeStatus.DECLINED, START + dt.timedelta(minutes=20))
    await handle_outcomes([declined], s.sink, now=s.at())
    assert tombstones == [SUB]
    assert not await s.sink.declines.suppressed(SUB, RULE)


class _SlowMark:
    """The facts store, its erasure mark done a step later than asked (as a pipeline on
    another connection may reach Redis after one sent beside it)."""

    def __init__(self, facts: Facts, done: list[str]) -> None:
        self.facts = facts
        self.done = done

    async def forget(
        self, subscriber_ids: Sequence[str], at: float, erased: dict[str, float] | None = None
    ) -> None:
        await asyncio.sleep(0)
        await self.facts.forget(subscriber_ids, at, erased)
        self.done.append("mark")

    def __getattr__(self, name: str) -> object:
        return getattr(self.facts, name)


class _Erase:
    def __init__(self, declines: Declines, done: list[str]) -> None:
        self.declines = declines
        self.done = done

    async def forget(self, subscriber_ids: Sequence[str], rule_ids: Sequence[str]) -> None:
        await self.declines.forget(subscriber_ids, rule_ids)
        self.done.append("declines erased")

    def __getattr__(self, name: str) -> object:
        return getattr(self.declines, name)


async def test_a_tombstone_records_its_mark_before_it_erases_the_declines() -> None:
    """An outcome that wrote its decline after the erasure looks the mark up again and
    erases it: enough only when the mark was recorded before the erasure. The two went in
    one `gather`, in no order: the erasure first, the outcome's second look before the
    mark, and the decline stayed."""
    s = Scenario()
    done: list[str] = []
    subscribers = s.sink.subscribers
    subscribers.facts = _SlowMark(subscribers.facts, done)  # type: ignore[assignment]
    subscribers.declines = _Erase(subscribers.declines, done)  # type: ignore[assignment]
    await subscribers.forget([SUB], [RULE])
    assert done == ["mark", "declines erased"]


async def test_a_contact_counted_again_after_a_tombstone_it_raced_is_given_back() -> None:
    """`failed` gave the call's contact back; `done_no_change` read while the tombstone is
    applied counts it again (`_take_back`): it looked at the mark before the tombstone
    recorded it, and wrote the contact after the tombstone erased both caps' books. The
    contact (the erased number in the book's key) stayed for the cap's period. Looked at
    again once written, it is given back, as the decline is erased."""
    s = Scenario()
    s.capped()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=2)])
    s.clock.advance(START.timestamp() + HOUR / 2)
    failed = outcome_record(CALL, OutcomeStatus.FAILED, START + dt.timedelta(minutes=10))
    await handle_outcomes([failed], s.sink, now=s.at())
    tombstones = tombstone_after_the_look(s)  # before the contact is counted
    reached = outcome_record(CALL, OutcomeStatus.DONE_NO_CHANGE, START + dt.timedelta(minutes=20))
    result = await handle_outcomes([reached], s.sink, now=s.at())
    assert tombstones == [SUB]
    frequency, contacts = s.sink.stores.frequency, s.sink.stores.contacts
    assert isinstance(frequency, MemoryContactBook)
    assert isinstance(contacts, MemoryContactBook)
    assert (frequency.contacts.get(SUB, {}), contacts.contacts.get(SUB, {})) == ({}, {})
    assert result.forgotten == 1


async def test_a_retry_dropped_for_a_tombstone_it_raced_is_counted_forgotten() -> None:
    """`unreachable` read while the tombstone is applied: the outcome looked at the mark
    before the tombstone recorded it, and its retry, dispatched after, is dropped as
    `forgotten` (made before the tombstone). It was listed in `OutcomeResult.retries` as
    queued, and the task was not counted as of an erased subscriber."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=12)])
    s.clock.advance(START.timestamp() + HOUR / 2)
    tombstones = tombstone_after_the_look(s)  # before the retry is dispatched
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + dt.timedelta(minutes=20))
    result = await handle_outcomes([unreachable], s.sink, now=s.at())
    assert tombstones == [SUB]
    labels = {"moment_type": RULE, "reason": "forgotten"}
    assert s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1
    assert (result.retries, result.forgotten) == ([], 1)


async def test_a_retry_of_a_newer_versions_task_racing_a_tombstone_is_not_parked() -> None:
    """`unreachable` of a task a newer version wrote (a channel this version does not
    know), read while the tombstone is applied: its retry is not dispatched here but
    parked as that version wrote it (`_park_newer`), with no look at the mark. Parked
    after the tombstone took the subscriber's waiting tasks out of the queue, it waited
    with the erased subscriber's payload (and a new `waiting:` index of them) until its
    release time. The park finds the mark (in the same step on Redis) and the retry is
    dropped `forgotten` at once, its task counted as of an erased subscriber."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=12)])
    ledger = s.sink.stores.ledger
    assert isinstance(ledger, MemoryLedger)
    body = orjson.loads(ledger.bodies[CALL].value)
    ledger.bodies[CALL].value = orjson.dumps({**body, "channel": "wechat"})  # as a newer one
    s.clock.advance(START.timestamp() + HOUR / 2)
    tombstones = tombstone_after_the_look(s)  # before the retry is parked
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + dt.timedelta(minutes=20))
    result = await handle_outcomes([unreachable], s.sink, now=s.at())
    assert tombstones == [SUB]
    retry = retry_id(CALL, 1)
    assert await s.sink.deferral.waiting() == 0
    assert await ledger.state(retry) == "dropped"
    assert (await ledger.body(retry), retry in ledger.pending) == (None, False)
    labels = {"moment_type": RULE, "reason": "forgotten"}
    assert s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1
    deferred = {"reason": "unreachable_retry"}
    assert s.metrics.registry.get_sample_value("moments_tasks_deferred_total", deferred) == 0
    assert (result.retries, result.forgotten) == ([], 1)


async def test_a_task_parked_after_its_decision_raced_a_tombstone_is_dropped_at_once() -> None:
    """The tombstone applied between dispatch's look at the subscriber's facts and the
    park it decided (here an `unreachable`'s retry, parked until due): the tombstone's
    take of their waiting tasks ran before the park, and the retry waited with the erased
    subscriber's payload, in a `waiting:` index written after the erasure, until its
    release time. The park reads the mark in the same step and parks nothing; the task
    is decided again at once and dropped `forgotten`, its task counted as of an erased
    subscriber."""
    s = Scenario()
    await s.sink.dispatch([task(CALL, Channel.OUTBOUND_CALL, RULE, expires_h=12)])
    s.clock.advance(START.timestamp() + HOUR / 2)
    deferral, applied = s.sink.stores.deferral, list[str]()
    park_many = deferral.park_many

    async def tombstone_then_park(
        items: Sequence[Parking], timetable: str = "", held: Held | None = None
    ) -> list[bool]:
        if not applied:
            applied.append(SUB)
            await s.sink.subscribers.forget([SUB], [RULE])
        return await park_many(items, timetable, held)

    deferral.park_many = tombstone_then_park  # type: ignore[method-assign]
    unreachable = outcome_record(CALL, OutcomeStatus.UNREACHABLE, START + dt.timedelta(minutes=20))
    result = await handle_outcomes([unreachable], s.sink, now=s.at())
    assert applied == [SUB]
    retry = retry_id(CALL, 1)
    assert (await deferral.waiting(), await s.sink.ledger.state(retry)) == (0, "dropped")
    labels = {"moment_type": RULE, "reason": "forgotten"}
    assert s.metrics.registry.get_sample_value("moments_tasks_suppressed_total", labels) == 1
    assert (result.retries, result.forgotten) == ([], 1)
