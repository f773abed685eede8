"""A profile tombstone erases what the dispatch stores keep of the subscriber, and a task
of theirs made before it, still waiting, is dropped when its time comes instead of
reaching them; a task made after it (the subscriber came back) goes as usual."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Any

import pytest

from moments.ack import AckError, subscriber_of
from moments.enums import WithdrawReason
from moments.models import Channel, OutcomeStatus, RoamingEvent, TaskOutcome
from moments.outcomes import handle_outcomes
from moments.records import RawRecord
from rules.gating import FrequencyCap
from sinks import deferral as deferral_module
from sinks.deferral import DeferralQueue
from sinks.ledger import TaskLedger, as_bytes
from sinks.memory import MemoryDeferrals
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import Parking, Released
from sinks.withdrawals import ProfileChange

from .conftest import HOUR, NOW, MakeWorker, published, task, tombstone_before_park

pytestmark = pytest.mark.integration

SUB, OTHER = "13800138001", "13900139002"
CAP = {"contact": {"max_contacts": 1, "period": "7d"}, "merge": {"hold_channels": []}}


async def test_a_forgotten_subscribers_waiting_task_is_dropped_and_its_traces_erased(
    make_worker: MakeWorker,
) -> None:
    # Both caps of one a week: the dispatch policy's and the rule set's.
    week = FrequencyCap(max_contacts=1, period="7d", channels=(Channel.SMS,))
    w = make_worker(DispatchPolicy.model_validate(CAP), frequency_cap=week)
    later = NOW + HOUR
    await w.send(
        task("sent", SUB, deliver_after=NOW),  # takes SUB's one contact of the week
        # app_push: not under the rule set's cap (full until after it expires, it would
        # be dropped at once, not wait)
        task("waits", SUB, deliver_after=later, deferred="quiet_hours", channel=Channel.APP_PUSH),
        task("other", OTHER, deliver_after=later, deferred="quiet_hours"),
    )
    await w.sink.subscribers.record_facts(
        [
            RoamingEvent(
                event_id="r",
                subscriber_id=SUB,
                occurred_at=NOW,
                country="JP",
                roaming_type="international",
            )
        ]
    )
    await w.sink.declines.suppress(SUB, "first_international_roaming", 3600)
    assert (await w.sink.facts.get(SUB)).abroad_at is not None
    assert await w.ledger.state("waits") == "deferred"

    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])

    facts = await w.sink.facts.get(SUB)
    assert facts.abroad_at is None
    assert facts.forgotten_at is not None
    assert not await w.sink.declines.suppressed(SUB, "first_international_roaming")
    assert await w.ledger.state("waits") == "dropped"  # at the tombstone, not its release
    assert await w.sink.release_due(now=later.timestamp() + 1) == 1
    out = await published(w.settings, 2)
    assert sorted(t["task_id"] for t in out) == ["other", "sent"]
    forgotten = {"moment_type": "first_international_roaming", "reason": "forgotten"}
    assert w.sample("moments_tasks_suppressed_total", **forgotten) == 1

    # The subscriber comes back: a task made now goes out, its contact history empty
    # (with the old one, either cap of one a week would hold it back).
    back = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    await w.send(task("back", SUB, triggered=back, deliver_after=back - dt.timedelta(seconds=1)))
    assert await w.ledger.state("back") == "sent"
    assert w.sample("moments_tasks_suppressed_total", **forgotten) == 1


async def test_a_fresh_merge_after_a_forget_opens_its_own_task(make_worker: MakeWorker) -> None:
    """A held call of the forgotten subscriber kept `open` pointing at it; a moment after
    the forget must not join a task that will be dropped."""
    w = make_worker()  # calls are held for the merge window by default
    await w.send(task("held", SUB, channel=Channel.OUTBOUND_CALL))
    assert await w.ledger.state("held") == "deferred"
    await w.sink.subscribers.forget([SUB], [])
    back = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    await w.send(task("new", SUB, channel=Channel.OUTBOUND_CALL, triggered=back))
    assert await w.ledger.state("new") == "deferred"  # waits on its own, not merged
    window = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert await w.sink.release_due(now=window.timestamp()) == 1  # "held" went at the forget
    [out] = await published(w.settings, 1)
    assert out["task_id"] == "new"
    assert await w.ledger.state("held") == "dropped"


async def test_an_outcome_of_a_task_made_before_the_forget_acts_on_nothing(
    make_worker: MakeWorker,
) -> None:
    """A decline or an unanswered call reported after the tombstone, for a task sent
    before it: a decline wrote the erased number into Redis again for 30 days (and held
    the rule from the number's next holder), an unreachable queued a retry with their
    payload. Both are counted and act on nothing."""
    w = make_worker(
        DispatchPolicy.model_validate(
            {"merge": {"hold_channels": []}, "outcomes": {"unreachable_retry_after": "1h"}}
        )
    )
    sms = hashlib.blake2b(b"sms", digest_size=16).hexdigest()
    call = hashlib.blake2b(b"call", digest_size=16).hexdigest()
    soon = dt.datetime.now(dt.UTC)
    await w.send(
        task(sms, SUB, triggered=soon, deliver_after=soon),
        task(call, SUB, channel=Channel.OUTBOUND_CALL, triggered=soon, deliver_after=soon),
    )
    assert [await w.ledger.state(i) for i in (sms, call)] == ["sent", "sent"]
    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])

    records = [
        RawRecord(
            "outcomes",
            0,
            n,
            SUB.encode(),
            TaskOutcome(task_id=task_id, subscriber_id=SUB, status=status, occurred_at=soon)
            .model_dump_json()
            .encode(),
        )
        for n, (task_id, status) in enumerate(
            [(sms, OutcomeStatus.DECLINED), (call, OutcomeStatus.UNREACHABLE)]
        )
    ]
    result = await handle_outcomes(records, w.sink)
    assert not await w.sink.declines.suppressed(SUB, "first_international_roaming")
    assert await w.sink.deferral.waiting() == 0
    assert (result.handled, result.forgotten, result.declined, result.retries) == (2, 2, 0, [])


async def test_a_tombstone_erases_the_sent_payloads_of_the_subscribers_tasks(
    make_worker: MakeWorker,
) -> None:
    """The ledger kept a sent task's payload (`body:<id>`: the subscriber id, their tier,
    manager and the moment's params) until a day after the task expired, for outcomes to
    act on; after a tombstone, an outcome of it acts on nothing, yet the payload stayed,
    for a task withdrawn by it and for one already expired (out of the subscriber's index
    at the next confirm, kept a day longer). Both are erased with the index; another
    subscriber's stays, and an outcome read later is counted and acts on nothing."""
    # No time left asked of a task: one sent with two seconds to live.
    policy = {"merge": {"hold_channels": []}, "min_time_left": "0s"}
    w = make_worker(DispatchPolicy.model_validate(policy))
    w.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
    live = hashlib.blake2b(b"live", digest_size=16).hexdigest()
    gone = hashlib.blake2b(b"gone", digest_size=16).hexdigest()
    other = hashlib.blake2b(b"other", digest_size=16).hexdigest()
    soon = dt.datetime.now(dt.UTC)
    expiring = soon + dt.timedelta(seconds=2)
    await w.send(task(gone, SUB, triggered=soon, deliver_after=soon, expires_at=expiring))
    await asyncio.sleep((expiring - dt.datetime.now(dt.UTC)).total_seconds() + 0.1)
    now = dt.datetime.now(dt.UTC)
    await w.send(
        task(live, SUB, triggered=now, deliver_after=now, moment_type="birthday"),
        task(other, OTHER, triggered=now, deliver_after=now),
    )
    assert [await w.ledger.state(i) for i in (gone, live, other)] == ["sent"] * 3
    assert await w.ledger.body(gone) is not None

    await w.sink.subscribers.forget([SUB], ["birthday"])
    made = await w.sink.withdrawals.withdraw([ProfileChange(SUB, WithdrawReason.FORGOTTEN, now)])
    assert [m.task_id for m in made] == [live]
    assert await w.ledger.body(live) is None
    assert await w.ledger.body(gone) is None
    assert await w.ledger.body(other) is not None

    outcome = TaskOutcome(
        task_id=live, subscriber_id=SUB, status=OutcomeStatus.DECLINED, occurred_at=now
    )
    record = RawRecord("outcomes", 0, 0, SUB.encode(), outcome.model_dump_json().encode())
    result = await handle_outcomes([record], w.sink)
    assert (result.handled, result.declined, result.dead_letters) == (1, 0, [])
    assert not await w.sink.declines.suppressed(SUB, "birthday")
    assert w.sample("moments_task_outcomes_total", moment_type="birthday", status="declined") == 1


@pytest.mark.redis_only
async def test_acking_a_task_of_an_erased_subscriber_says_why_its_subscriber_is_unknown(
    make_worker: MakeWorker,
) -> None:
    """`moments tasks ack` looks the subscriber up in the task's payload; a tombstone
    erases it, and the refusal said only that the payload goes a day after the task
    expires, of a task that had not."""
    w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
    w.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
    sms = hashlib.blake2b(b"acked", digest_size=16).hexdigest()
    now = dt.datetime.now(dt.UTC)
    await w.send(task(sms, SUB, triggered=now, deliver_after=now))
    assert await subscriber_of(w.settings, sms) == SUB
    await w.sink.subscribers.forget([SUB], [])
    await w.sink.withdrawals.withdraw([ProfileChange(SUB, WithdrawReason.FORGOTTEN, now)])
    with pytest.raises(AckError, match="profile tombstone erased its subscriber") as refused:
        await subscriber_of(w.settings, sms, wait_s=0)
    assert "pass --subscriber MSISDN" in str(refused.value)


async def test_a_tombstone_erases_declines_of_rules_no_longer_loaded(
    make_worker: MakeWorker,
) -> None:
    """The declines erased were those of the rules loaded when the tombstone was read: a
    decline of a rule removed or renamed since kept `declined:<subscriber>:<rule>`, the
    erased number in its name, for the rest of its 30 days."""
    w = make_worker()
    await w.sink.declines.suppress(SUB, "loaded_rule", 3600)
    await w.sink.declines.suppress(SUB, "retired_rule", 3600)
    await w.sink.declines.suppress(OTHER, "retired_rule", 3600)
    await w.sink.subscribers.forget([SUB], ["loaded_rule"])
    assert not await w.sink.declines.suppressed(SUB, "loaded_rule")
    assert not await w.sink.declines.suppressed(SUB, "retired_rule")
    assert await w.sink.declines.suppressed(OTHER, "retired_rule")
    if isinstance(w.ledger, TaskLedger):  # named by the number: only the erasure's mark
        ledger = w.ledger
        left = [k async for k in ledger.redis.scan_iter(match=f"{ledger.prefix}*{SUB}*")]
        assert left == [ledger.facts_key(SUB).encode()]


async def test_a_tombstone_erases_the_payload_of_a_task_an_earlier_opt_out_withdrew(
    make_worker: MakeWorker,
) -> None:
    """An opt-out withdraws the subscriber's SMS task: it leaves their published index, its
    payload kept (`body:<id>`, a day past its expiry) for an outcome still to come. A
    tombstone read later erased the bodies the index names, and this one it no longer
    named: the erased subscriber's payload stayed until it expired."""
    w = make_worker(DispatchPolicy.model_validate({"merge": {"hold_channels": []}}))
    w.sink.withdrawals.topic = w.settings.topic("task_withdrawals")
    sms = hashlib.blake2b(b"opted-out", digest_size=16).hexdigest()
    now = dt.datetime.now(dt.UTC)
    await w.send(task(sms, SUB, triggered=now, deliver_after=now))
    opt_out = ProfileChange(SUB, WithdrawReason.OPT_OUT, now, frozenset({"sms"}))
    made = await w.sink.withdrawals.withdraw([opt_out])
    assert [m.task_id for m in made] == [sms]
    assert await w.ledger.body(sms) is not None  # an outcome may still come

    await w.sink.subscribers.forget([SUB], [])
    later = now + dt.timedelta(seconds=1)
    await w.sink.withdrawals.withdraw([ProfileChange(SUB, WithdrawReason.FORGOTTEN, later)])
    assert await w.ledger.body(sms) is None


async def test_a_shorter_decline_after_a_longer_one_keeps_the_longer_one_listed(
    make_worker: MakeWorker,
) -> None:
    """`outcomes.declined_suppress` shortened (a policy change, or two policies during its
    rollout): the list of the rules a subscriber declined (`declined-rules:<subscriber>`)
    took the TTL of the latest decline, and went while an earlier, longer one still held;
    a tombstone then found that one only were its rule still loaded, and a removed rule's
    decline kept the erased number in its key for the rest of its time."""
    w = make_worker()
    await w.sink.declines.suppress(SUB, "retired_rule", 3600)
    await w.sink.declines.suppress(SUB, "loaded_rule", 1)
    await asyncio.sleep(1.5)  # the shorter decline's time passes (on the Redis clock)
    assert not await w.sink.declines.suppressed(SUB, "loaded_rule")
    assert await w.sink.declines.suppressed(SUB, "retired_rule")
    await w.sink.subscribers.forget([SUB], ["loaded_rule"])
    assert not await w.sink.declines.suppressed(SUB, "retired_rule")


async def holding(ledger: TaskLedger, text: str) -> list[str]:
    """The keys under the ledger's prefix whose name or value holds `text` (the members
    and fields of lists, sets, sorted sets and hashes read whole)."""
    redis, needle, found = ledger.redis, text.encode(), []
    async for raw in redis.scan_iter(match=f"{ledger.prefix}*"):
        key = as_bytes(raw).decode()
        kind = as_bytes(await redis.type(key)).decode()
        values: list[Any]
        if kind == "string":
            values = [await redis.get(key)]
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "zset":
            values = await redis.zrange(key, 0, -1)
        else:  # hash
            values = [b for pair in (await redis.hgetall(key)).items() for b in pair]
        if text in key or any(needle in (v or b"") for v in values):
            found.append(key.removeprefix(ledger.prefix))
    return sorted(found)


async def test_a_tombstone_takes_the_subscribers_waiting_tasks_out_of_the_queue_at_once(
    make_worker: MakeWorker,
) -> None:
    """A task of theirs waiting in the deferral queue (quiet hours, the merge window, a
    cap, capacity) kept its whole payload (subscriber id, the moment's params), and the
    moments merged into it theirs, until its release time, hours or days after the
    tombstone: the queue had no index by subscriber. Each park now indexes it
    (`waiting:<subscriber>`), and the tombstone takes it out at once and drops it, its
    merged moment too: no copy is left, and its release time publishes nothing of
    theirs. Another subscriber's waiting task is untouched."""
    w = make_worker()  # calls are held for the merge window by default
    later = dt.datetime.now(dt.UTC) + 2 * dt.timedelta(days=1)  # past the window: not merged
    await w.send(
        task("held", SUB, channel=Channel.OUTBOUND_CALL),
        task("quiet", SUB, deliver_after=later, deferred="quiet_hours", channel=Channel.APP_PUSH),
        task("other", OTHER, deliver_after=later, deferred="quiet_hours"),
    )
    joins = dt.datetime.now(dt.UTC)
    await w.send(task("joins", SUB, channel=Channel.OUTBOUND_CALL, triggered=joins))
    states = [await w.ledger.state(i) for i in ("held", "joins", "quiet", "other")]
    assert states == ["deferred", "merged", "deferred", "deferred"]
    if isinstance(w.ledger, TaskLedger):  # the copies the queue held
        copies = {"group:held", "task:held", "task:quiet"}
        assert copies <= set(await holding(w.ledger, SUB))

    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])

    assert [await w.ledger.state(i) for i in ("held", "joins", "quiet")] == ["dropped"] * 3
    assert await w.ledger.group("held") == []
    assert await w.sink.deferral.waiting() == 1
    assert w.sample("moments_tasks_waiting") == 1
    forgotten = {"moment_type": "first_international_roaming", "reason": "forgotten"}
    assert w.sample("moments_tasks_suppressed_total", **forgotten) == 3
    if isinstance(w.ledger, TaskLedger):  # named by the number: only the erasure's mark
        assert await holding(w.ledger, SUB) == [f"facts:{SUB}"]
        assert await w.ledger.redis.zcard(w.ledger.pending_key) == 0

    far = later + HOUR
    assert await w.sink.release_due(now=far.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert out["task_id"] == "other"
    assert w.sample("moments_tasks_suppressed_total", **forgotten) == 3


async def test_a_tombstone_takes_the_waiting_tasks_its_line_and_merge_group_name(
    make_worker: MakeWorker,
) -> None:
    """Tasks no `waiting:` index names (parked by a version before it, or kept there no
    longer): one waiting for the subscriber's suspended line (`line:<subscriber>`, which
    every version kept) and the one leading their open merge group (`open:<subscriber>`)
    are taken out by the tombstone as the indexed ones are, and dropped at once. The
    tombstone deleted both keys and left the tasks, their payloads with them, to their
    release: a suspended line's task waits until the line is active again or it
    expires."""
    w = make_worker()
    later = (dt.datetime.now(dt.UTC) + 2 * dt.timedelta(days=1)).timestamp()
    line, held = task("line", SUB), task("held", SUB, channel=Channel.OUTBOUND_CALL)
    other = task("other", OTHER)
    assert all(await w.ledger.claim([(t.task_id, task_bytes(t)) for t in (line, held, other)]))
    parks = [
        Parking("held", SUB, b"", later, 3600.0),  # opens their merge group
        Parking("line", SUB, b"", later, 0.0, waits_for_line=True),
        Parking("other", OTHER, b"", later, 0.0, waits_for_line=True),
    ]
    assert await w.sink.deferral.park_many(parks) == [True, True, True]
    deferral = w.sink.deferral
    if isinstance(deferral, DeferralQueue):  # as an earlier version parked them
        await deferral.redis.delete(deferral.waiting_key(SUB))
    else:
        assert isinstance(deferral, MemoryDeferrals)
        for task_id in deferral.waiting_of.pop(SUB):
            del deferral._owner[task_id]

    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])

    assert [await w.ledger.state(i) for i in ("line", "held", "other")] == [
        "dropped",
        "dropped",
        "deferred",
    ]
    assert await deferral.waiting() == 1
    if isinstance(w.ledger, TaskLedger):
        assert await holding(w.ledger, SUB) == [f"facts:{SUB}"]


async def test_a_tombstone_takes_the_subscribers_tasks_waiting_past_the_index(
    make_worker: MakeWorker,
) -> None:
    """The waiting index keeps an id until a day past the time it was parked until: a
    task still queued after that (no worker ran the release timer, or a backlog of due
    tasks held it; one due and ranked, not released yet, alike), or parked until a time
    already that far past, is in no index. The tombstone looks at those too (a bounded
    part of the queue, normally empty: `_OVERDUE_LOOK`) and takes the subscriber's; they
    waited for the release with their payloads."""
    w = make_worker()
    now = dt.datetime.now(dt.UTC).timestamp()
    day = 86400.0
    tasks = [task("o1", OTHER), task("ranked", SUB), task("o2", OTHER), task("late", SUB)]
    assert all(await w.ledger.claim([(t.task_id, task_bytes(t)) for t in tasks]))
    deferral = w.sink.deferral
    parks = [
        Parking("o1", OTHER, b"", now - 4 * day, 0.0),
        Parking("ranked", SUB, b"", now - 3 * day, 0.0),
        Parking("o2", OTHER, b"", now - 2 * day, 0.0),
    ]
    assert await deferral.park_many(parks) == [True] * 3
    [released] = await deferral.release(now=now, limit=1)  # the others ranked, still waiting
    assert released.task_id == "o1"
    assert await deferral.park_many([Parking("late", SUB, b"", now - 2 * day, 0.0)]) == [True]
    if isinstance(deferral, DeferralQueue):
        assert await deferral.redis.exists(deferral.waiting_key(SUB)) == 0

    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])

    states = [await w.ledger.state(i) for i in ("ranked", "late", "o2")]
    assert states == ["dropped", "dropped", "deferred"]
    assert await deferral.waiting() == 1


async def test_a_release_parking_again_after_a_tombstone_it_raced_drops_the_task(
    make_worker: MakeWorker,
) -> None:
    """A task released and parked again (here for the contact cap) while the
    subscriber's tombstone is applied: the decision read the facts before the mark, the
    tombstone's take ran before the park. The park reads the mark in the same step and
    parks nothing; the task is decided again at once, dropped `forgotten`, its merged
    moment with it, and marked unsent (a re-drive after a crash withdraws nothing). It
    waited again, with the erased subscriber's payload, until its next release."""
    w = make_worker(DispatchPolicy.model_validate({"contact": {"max_contacts": 1, "period": "1d"}}))
    await w.send(task("sent", SUB))  # takes SUB's one contact of the day
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    await w.send(task("held", SUB, channel=Channel.OUTBOUND_CALL, deliver_after=soon))
    await w.send(task("joins", SUB, channel=Channel.OUTBOUND_CALL, deliver_after=soon))
    assert [await w.ledger.state(i) for i in ("held", "joins")] == ["deferred", "merged"]
    applied = tombstone_before_park(w.sink, w.sink, SUB)
    # released with the day's contact taken: parked again until it frees
    assert await w.sink.release_due(now=(soon + dt.timedelta(seconds=1)).timestamp()) == 1
    assert applied == [SUB]
    assert [await w.ledger.state(i) for i in ("held", "joins")] == ["dropped", "dropped"]
    assert await w.sink.deferral.waiting() == 0
    assert await w.ledger.unsent(["held"]) == {"held"}
    if isinstance(w.ledger, TaskLedger):  # the queue names the number nowhere
        sent = {"body:sent", f"published:{SUB}"}  # erased once their withdrawals are out
        assert set(await holding(w.ledger, SUB)) - sent == {f"facts:{SUB}"}


async def test_a_waiting_task_parked_again_after_the_tombstones_take_is_dropped(
    make_worker: MakeWorker,
) -> None:
    """A task waiting (`D`) that the tombstone's take did not find (parked by an earlier
    version: in no waiting index, its merge group closed) and parked again after the take
    by a decision that read the facts before the mark (a re-drive's stalled first worker,
    say). A park of a pending entry compared the mark; one of a waiting entry did not, and
    the task waited on with the erased subscriber's payload until its release time. The
    park now takes it out of the queue, back to pending and marked unsent (as the take
    leaves what it takes), and the decision drops it `forgotten` at once."""
    w = make_worker()
    later = dt.datetime.now(dt.UTC) + 2 * dt.timedelta(days=1)
    waiting = task("waits", SUB, deliver_after=later, deferred="quiet_hours")
    await w.send(waiting, task("other", OTHER, deliver_after=later, deferred="quiet_hours"))
    assert await w.ledger.state("waits") == "deferred"
    deferral = w.sink.deferral
    if isinstance(deferral, DeferralQueue):  # as an earlier version parked it
        await deferral.redis.delete(deferral.waiting_key(SUB), deferral.open_key(SUB))
    else:
        assert isinstance(deferral, MemoryDeferrals)
        for task_id in deferral.waiting_of.pop(SUB):
            del deferral._owner[task_id]
        deferral.open.pop(SUB, None)
    applied = tombstone_before_park(w.sink, w.sink, SUB)
    stored = await w.ledger.get("waits")
    assert stored is not None

    await w.sink.decide_taken([Released("waits", stored[1:], [])], NOW.timestamp())

    assert applied == [SUB]
    assert await w.ledger.state("waits") == "dropped"
    assert await deferral.waiting() == 1  # OTHER's
    assert await w.ledger.unsent(["waits"]) == {"waits"}
    forgotten = {"moment_type": "first_international_roaming", "reason": "forgotten"}
    assert w.sample("moments_tasks_suppressed_total", **forgotten) == 1
    if isinstance(w.ledger, TaskLedger):  # the queue names the number nowhere
        assert await holding(w.ledger, SUB) == [f"facts:{SUB}"]


@pytest.mark.redis_only
async def test_the_look_at_the_overdue_reads_a_bounded_part_the_longest_overdue_first(
    make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of tasks overdue past the waiting index is read `_OVERDUE_LOOK` at a time
    a tombstone at most, the longest overdue first (a GET each): one past it is left to
    its release."""
    monkeypatch.setattr(deferral_module, "_OVERDUE_LOOK", 1)
    w = make_worker()
    now = dt.datetime.now(dt.UTC).timestamp()
    tasks = [task("o", OTHER), task("s1", SUB), task("s2", SUB)]
    assert all(await w.ledger.claim([(t.task_id, task_bytes(t)) for t in tasks]))
    parks = [
        Parking("o", OTHER, b"", now - 5 * 86400, 0.0),
        Parking("s1", SUB, b"", now - 4 * 86400, 0.0),
        Parking("s2", SUB, b"", now - 3 * 86400, 0.0),
    ]
    assert await w.sink.deferral.park_many(parks) == [True] * 3
    # The parks opened SUB's merge group under s1 for a millisecond (no window: 1 ms),
    # which the tombstone reads too: within it, s1 was taken whatever the look (a flake).
    queue = w.sink.deferral
    assert isinstance(w.ledger, TaskLedger)
    assert isinstance(queue, DeferralQueue)
    await w.ledger.redis.delete(queue.open_key(SUB))
    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])
    assert [await w.ledger.state(i) for i in ("o", "s1", "s2")] == ["deferred"] * 3
    monkeypatch.setattr(deferral_module, "_OVERDUE_LOOK", 2)
    await w.sink.subscribers.forget([SUB], ["first_international_roaming"])
    assert [await w.ledger.state(i) for i in ("o", "s1", "s2")] == [
        "deferred",
        "dropped",
        "deferred",
    ]


@pytest.mark.redis_only
async def test_a_batch_of_tombstones_reads_the_overdue_payloads_once(
    make_worker: MakeWorker,
) -> None:
    """The look at the overdue is the queue's, not a subscriber's: one script call takes
    up to a chunk of 1,000 tombstones, and each read the same (up to 2 x `_OVERDUE_LOOK`)
    payloads again (a backlog of 2,000 such tasks and 100 tombstones held Redis ~1.7 s on
    a loaded 2-core machine; 1,000 timed the client out). Each is read once a call: the
    GETs are the tombstones' open-group looks, the overdue payloads, and the tasks
    taken."""
    w = make_worker()
    assert isinstance(w.ledger, TaskLedger)
    client = w.ledger.redis
    now = dt.datetime.now(dt.UTC).timestamp()
    overdue = [task(f"o{i}", OTHER) for i in range(4)] + [task("mine", SUB)]
    assert all(await w.ledger.claim([(t.task_id, task_bytes(t)) for t in overdue]))
    parks = [
        Parking(t.task_id, t.subscriber_id, b"", now - (2 + i) * 86400, 0.0)
        for i, t in enumerate(overdue)
    ]
    assert await w.sink.deferral.park_many(parks) == [True] * len(parks)
    erased = [SUB, *(f"1370000{i:04d}" for i in range(9))]

    async def gets() -> int:
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))

    before = await gets()
    taken = await w.sink.deferral.forget(erased, now=now)
    assert [r.task_id for r in taken] == ["mine"]
    assert await gets() - before == len(erased) + len(overdue) + len(taken)
