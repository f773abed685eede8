"""What the in-memory dispatch stores add to the shared scenario tests
(tests/integration/dispatch run them against Redis and memory alike): keys expire on the
injected clock, as Redis keys do on Redis's, and the release queue's bookkeeping."""

from __future__ import annotations

import asyncio
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from moments.models import TopUpEvent
from sinks.memory import MemoryDeferrals, MemoryLedger, memory_stores
from sinks.stores import Joining, Parking

from .fakes import Clock


async def test_ledger_entry_expires_on_the_clock_and_the_id_can_be_claimed_again() -> None:
    clock = Clock(1_000_000.0)
    ledger = MemoryLedger(clock, ttl_seconds=60)
    assert await ledger.claim([("t1", b"{}")]) == [True]
    assert await ledger.claim([("t1", b"{}")]) == [False]
    await ledger.confirm(["t1"], {"t1": b"meta"})
    assert await ledger.sent_meta("t1") == b"meta"
    clock.now += 59
    assert await ledger.state("t1") == "sent"
    clock.now += 1
    assert await ledger.state("t1") is None
    assert await ledger.claim([("t1", b"{}")]) == [True]


async def test_open_merge_group_closes_after_the_window() -> None:
    clock = Clock(1_000_000.0)
    stores = memory_stores(clock)
    ledger, deferral = stores.ledger, stores.deferral
    await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C")])
    assert await deferral.park("a", "s1", b"A", clock.now + 3600, merge_window_s=1800)
    assert await deferral.join_many([Joining("b", "s1", b"B")]) == ["a"]
    # repeated: the same answer, no second copy
    assert await deferral.join_many([Joining("b", "s1", b"B")]) == ["a"]
    clock.now += 1800
    assert await deferral.join_many([Joining("c", "s1", b"C")]) == [None]
    assert await ledger.group("a") == [b"B"]


async def test_release_takes_due_tasks_in_time_order_and_honours_a_repark() -> None:
    clock = Clock(1_000_000.0)
    ledger = MemoryLedger(clock, ttl_seconds=86400)
    deferral = MemoryDeferrals(ledger)
    await ledger.claim([("x", b"X"), ("y", b"Y"), ("z", b"Z")])
    await deferral.park("x", "s1", b"X", clock.now + 30, 1)
    await deferral.park("y", "s2", b"Y", clock.now + 10, 1)
    await deferral.park("z", "s3", b"Z", clock.now + 20, 1)
    await deferral.park("z", "s3", b"Z2", clock.now + 100, 1)  # parked again, later
    assert deferral.next_due() == clock.now + 10
    released = await deferral.release(clock.now + 50, limit=10)
    assert [(r.task_id, r.payload) for r in released] == [("y", b"Y"), ("x", b"X")]
    assert await ledger.state("y") == "pending"  # a crash now would be re-driven
    assert await deferral.waiting() == 1
    assert deferral.next_due() == clock.now + 100
    assert await deferral.waiting_and_due() == (1, clock.now + 100)


_STEPS = st.lists(
    st.tuples(
        st.booleans(),  # a park (of the task, at the offset, with the rank), else a release
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.integers(-5, 60),
        st.none() | st.floats(0, 10, allow_nan=False),
        st.integers(0, 3),  # a release's limit
    ),
    max_size=30,
)


@given(_STEPS)
@settings(max_examples=200, deadline=None)
def test_next_due_is_the_earliest_release_time_of_every_task_waiting_or_due(
    steps: list[tuple[bool, str, int, float | None, int]],
) -> None:
    """`next_due` (kept by two heaps, their stale tops dropped) answers the earliest
    release time in the queue, a task due and not released yet (ranked, waiting for a
    release with room) counting by its own, whatever the order of parks, re-parks with
    and without a rank, and releases of a few at a time."""

    async def run() -> None:
        clock = Clock(1_000_000.0)
        ledger = MemoryLedger(clock, ttl_seconds=86400)
        deferral = MemoryDeferrals(ledger)
        for park, task_id, offset, rank, limit in steps:
            if park:
                await ledger.claim([(task_id, task_id.encode())])
                at = clock.now + offset
                await deferral.park_many([Parking(task_id, "s", b"P", at, 1, rank=rank)])
            else:
                await deferral.release(clock.now + offset, limit=limit)
            expected = min(deferral.scores.values(), default=None)
            assert deferral.next_due() == expected
            assert await deferral.earliest_due() == expected

    asyncio.run(run())


async def test_contacts_slide_and_declines_and_facts_expire() -> None:
    clock = Clock(1_000_000.0)
    stores = memory_stores(clock)
    book = stores.contacts
    assert await book.take("s", "t1", clock.now, 100, 1) is None
    assert await book.take("s", "t2", clock.now + 10, 100, 1) == clock.now + 100
    assert await book.take("s", "t2", clock.now + 100, 100, 1) is None  # t1 slid out

    await stores.declines.suppress("s", "rule", 60)
    assert await stores.declines.suppressed("s", "rule")
    clock.now += 60
    assert not await stores.declines.suppressed("s", "rule")

    at = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    older = TopUpEvent(
        event_id="e1",
        subscriber_id="13800000001",
        occurred_at=at - dt.timedelta(hours=1),
        amount=5,
        channel="app",
    )
    newer = older.model_copy(update={"event_id": "e2", "occurred_at": at})
    await stores.facts.record([newer, older])  # only a newer time overwrites
    assert (await stores.facts.get("13800000001")).topup_at == at.timestamp()
    clock.now += 90 * 86400
    assert (await stores.facts.get("13800000001")).topup_at is None


async def test_an_answered_mark_expires_on_the_clock_as_the_redis_one() -> None:
    """`answered:<id>` lives the ledger's TTL in Redis (`_FIRST_OUTCOME_UNKNOWN`'s `EX`,
    set again by each such outcome); the memory ledger kept it for the process's life: a
    task made again under the id once its pending entry had expired (unconfirmed: its
    worker gone, no re-drive) was left out of the unanswered index
    (tests/integration/test_ledger.py checks the Redis mark's TTL)."""
    clock = Clock(1_000_000.0)
    ledger = MemoryLedger(clock, ttl_seconds=60)
    await ledger.claim([("t1", b"{}")])
    clock.now += 30
    assert await ledger.first_outcome("t1", "accepted")  # pending: marked answered
    assert await ledger.answered_pending(["t1"]) == {"t1"}
    clock.now += 30  # the entry is gone, the mark (set 30 s after it) lives on
    assert await ledger.state("t1") is None
    assert await ledger.answered_pending(["t1"]) == {"t1"}
    clock.now += 30  # the ledger's TTL after it was set: gone, as in Redis
    assert await ledger.answered_pending(["t1"]) == set()
    assert await ledger.claim([("t1", b"{}")]) == [True]
    await ledger.confirm(["t1"], awaiting={"t1": ("sms", clock.now + 600)})
    assert (await ledger.unanswered())["sms"] == 1


async def test_a_task_id_claimed_after_its_entry_lapsed_inherits_no_moved_mark() -> None:
    """`moved:<id>` lives the ledger's TTL from the publish, past the entry it speaks of
    (claimed earlier; a drop cuts the entry to a day past the task's expiry). A moment
    judged again after the dropped entry lapsed claims the id afresh (a silence's task
    made again every few days of a suspension): the mark is not its own, and its re-drive
    after a crash sent it on the channel the first task had been moved to (`as_it_went`)."""
    clock = Clock(1_000_000.0)
    ledger = MemoryLedger(clock, ttl_seconds=3600)
    assert await ledger.claim([("t1", b"{}")]) == [True]
    clock.now += 60
    await ledger.mark_moved({"t1": {"t1": "sms"}})
    await ledger.drop_many([("t1", "expired")], {"t1": clock.now - 86_400 + 10})
    clock.now += 20  # the dropped entry is gone, its mark lives on
    assert await ledger.state("t1") is None
    assert await ledger.claim([("t1", b"{}")]) == [True]
    assert await ledger.moved(["t1"]) == {}
