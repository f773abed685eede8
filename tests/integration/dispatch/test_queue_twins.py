"""The deferral queue and the ledger in memory (the backtest's) and on Redis (the
stream's) over the same random sequences of operations: every reply and the state after
each step the same (docs/architecture.md, "The ledger entry is the single place a task
lives")."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from moments.models import ProfileEvent
from sinks.capacity import RANK_RISKS, RANK_SECONDS
from sinks.deferral import DeferralQueue
from sinks.ledger import TaskLedger, as_bytes
from sinks.memory import MemoryDeferrals, memory_stores
from sinks.stores import DispatchStores, Joining, Leave, Parking, redis_stores

pytestmark = pytest.mark.integration

IDS = [f"t{n}" for n in range(4)]
SUBS = ["13800000001", "13800000002"]
TIMETABLES = ["A", "B"]
T0 = 2_000_000_000.0  # release times, expiries and `now`: the ops give them, from here on


def rank(priority: int, risk: int, second: int) -> float:
    return float((priority * RANK_RISKS + risk) * RANK_SECONDS + second)


ranks = st.none() | st.builds(rank, st.integers(1, 3), st.integers(0, 2), st.integers(0, 3))
offsets = st.integers(0, 6).map(lambda n: T0 + 10 * n)
ops = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(IDS)),
    st.tuples(
        st.just("park"),
        st.sampled_from(IDS),
        st.sampled_from(SUBS),
        offsets,
        st.sampled_from(["", "h", "n", "c", "hc", "nc", "l", "lh"]),
        ranks,
        st.sampled_from(TIMETABLES),
        st.none() | offsets,  # a line's task: the facts say it is active after this
    ),
    st.tuples(
        st.just("fact"),
        st.sampled_from(SUBS),
        st.sampled_from(["active", "suspended", None]),
        offsets,
        # a profile's opt-outs: not said, cleared, or the whole list
        st.sampled_from([None, (), ("sms",), ("sms", "outbound_call"), ("app_push",)]),
    ),
    st.tuples(
        st.just("join"),
        st.sampled_from(IDS),
        st.sampled_from(SUBS),
        st.none() | offsets,
        st.none() | offsets,
        ranks,
    ),
    st.tuples(st.just("release"), offsets, st.integers(1, 3)),
    st.tuples(st.just("rejudge"), st.sampled_from(TIMETABLES), offsets),
    st.tuples(st.just("wake"), st.sampled_from(SUBS), offsets),
    st.tuples(st.just("drop"), st.sampled_from(IDS)),
    st.tuples(
        st.just("confirm"), st.sampled_from(IDS), st.sampled_from(["sms", "outbound_call"]), offsets
    ),
    st.tuples(st.just("expire"), offsets, st.integers(1, 2)),
    st.tuples(
        st.just("outcome"),
        st.sampled_from(IDS),
        st.sampled_from(["accepted", "declined"]),
        st.none() | st.sampled_from(["sms", "outbound_call"]),
        st.sampled_from(["", "k1", "k2"]),  # the call's token ('' none)
    ),
    st.tuples(
        st.just("leave"),
        st.sampled_from(IDS),
        st.sampled_from(IDS),
        st.sampled_from(["drop", "own", "other"]),
        st.sampled_from(IDS),
    ),
    st.tuples(st.just("redrive")),  # every stale pending entry claimed and marked `redriven`
    st.tuples(st.just("owe"), st.lists(st.sampled_from(IDS), max_size=3)),
    st.tuples(st.just("owed"), st.integers(1, 3)),
    st.tuples(st.just("settle"), st.lists(st.sampled_from(IDS), max_size=3)),
    # withdrawals owed: kept as returns are, apart from them
    st.tuples(st.just("owe_w"), st.lists(st.sampled_from(IDS), max_size=3)),
    st.tuples(st.just("owed_w"), st.integers(1, 3)),
    st.tuples(st.just("settle_w"), st.lists(st.sampled_from(IDS), max_size=3)),
)


async def apply(stores: DispatchStores, op: tuple[Any, ...]) -> object:
    ledger, queue = stores.ledger, stores.deferral
    kind = op[0]
    if kind == "claim":
        return await ledger.claim([(op[1], f"p-{op[1]}".encode())])
    if kind == "park":  # claimed first, as dispatch parks only what it owns
        _, task_id, sub, at, flags, r, timetable, since, now = op
        await ledger.claim([(task_id, f"p-{task_id}".encode())])
        item = Parking(
            task_id,
            sub,
            b"",
            at,
            3600.0,
            waits_for_hours="h" in flags,
            waits_for_next_day="n" in flags,
            waits_for_cap="c" in flags,
            waits_for_line="l" in flags,
            rank=r,
            active_after=since,
            woken_at=now,
        )
        return await queue.park_many([item], timetable)
    if kind == "join":
        _, task_id, sub, due_from, due_by, r = op
        await ledger.claim([(task_id, f"p-{task_id}".encode())])
        return await queue.join_many([Joining(task_id, sub, b"", due_from, due_by, r)])
    if kind == "release":
        released = await queue.release(op[1], op[2])
        return [(r.task_id, r.payload, r.members) for r in released]
    if kind == "rejudge":
        return await queue.rejudge(op[1], op[2])
    if kind == "fact":
        _, sub, status, at, opt_out = op
        event = ProfileEvent(
            event_id=f"e-{sub}-{status}-{at}-{opt_out}",
            subscriber_id=sub,
            occurred_at=dt.datetime.fromtimestamp(at, dt.UTC),
            status=status,
            opt_out=None if opt_out is None else list(opt_out),
        )
        return await stores.facts.record([event])
    if kind == "wake":
        return await queue.wake([op[1]], op[2])
    if kind == "drop":
        await ledger.drop_many([(op[1], "test")])
        return None
    if kind == "confirm":
        await ledger.confirm([op[1]], awaiting={op[1]: (op[2], op[3])})
        return None
    if kind == "expire":
        return await ledger.expire_unanswered(op[1], op[2])
    if kind == "outcome":
        return await ledger.first_outcome(op[1], op[2], op[3], op[4])
    if kind == "leave":
        _, carrier, task_id, mode, other = op
        payload = f"p-{task_id}".encode()
        if mode == "drop":
            leave = Leave(carrier, task_id, payload, dropped="gone")
        else:
            leave = Leave(carrier, task_id, payload, to=task_id if mode == "own" else other)
        return await ledger.leave_many([leave])
    if kind == "redrive":  # the entries pending since the wall clock's now (claims, leaves)
        return sorted(await ledger.claim_stale(-60.0))
    if kind == "owe":
        await ledger.owe_returns([(i, f"r-{i}".encode()) for i in op[1]])
        return None
    if kind == "owed":
        return await ledger.owed_returns(-60.0, op[1])  # every one owed, the oldest first
    if kind == "owe_w":
        await ledger.owe_withdrawals([(i, f"w-{i}".encode()) for i in op[1]])
        return None
    if kind == "owed_w":
        return await ledger.owed_withdrawals(-60.0, op[1])
    if kind == "settle_w":
        await ledger.settle_withdrawals(op[1])
        return None
    await ledger.settle_returns(op[1])
    return None


async def observe(stores: DispatchStores) -> object:
    queue = stores.deferral
    return (
        await stores.ledger.get_many(IDS),
        await stores.ledger.group_many(IDS),
        await stores.ledger.redriven(IDS),
        await stores.ledger.unanswered(),
        await stores.facts.get_many(SUBS),
        [await queue.due_at(i) for i in IDS],
        await queue.waiting_and_due(),
    )


async def both(sequence: list[tuple[Any, ...]], url: str) -> None:
    client = Redis.from_url(url)
    try:
        redis = redis_stores(TaskLedger(client, f"twin:{uuid4().hex[:8]}:", 3600))
        memory = memory_stores(clock=time.time, ttl_seconds=3600)
        clock = T0
        for n, op in enumerate(sequence):
            # Each call's `now` as the op gives it, earlier than the one before included:
            # workers' clocks differ, and a wake may come with an earlier time than the
            # release that ranked a task due (memory moved that one back, out of sight).
            if op[0] in ("release", "rejudge", "wake"):
                clock = op[-2] if op[0] == "release" else op[-1]
            elif op[0] == "park":  # a line's task found active is due at the park's now
                op = (*op, clock)
            got = await apply(redis, op), await observe(redis)
            want = await apply(memory, op), await observe(memory)
            assert got == want, f"step {n}: {op}"
        assert isinstance(redis.deferral, DeferralQueue)
        assert isinstance(memory.deferral, MemoryDeferrals)
        judged = await client.get(redis.deferral.judged_key)
        assert (as_bytes(judged).decode() if judged else None) == (memory.deferral.judged or None)
    finally:
        await client.aclose()


# A task due and ranked (two due, one released), then woken, or re-judged, with an
# earlier `now` than the release's: Redis keeps its due time (a ranked score is not
# moved), memory moved it back and lost it from `next_due` (`waiting_and_due` said
# nothing was due while it waited).
RANKED_DUE_THEN_WOKEN_EARLIER = [
    ("park", "t0", SUBS[0], T0 + 20, "", None, "A", None),
    ("park", "t1", SUBS[0], T0 + 20, "l", None, "A", None),
    ("release", T0 + 20, 1),
    ("wake", SUBS[0], T0 + 10),
    ("release", T0 + 30, 1),
]
RANKED_DUE_THEN_REJUDGED_EARLIER = [
    ("park", "t0", SUBS[1], T0 + 20, "", None, "A", None),
    ("park", "t1", SUBS[1], T0 + 20, "h", None, "A", None),
    ("release", T0 + 20, 1),
    ("rejudge", "B", T0 + 10),
    ("release", T0 + 30, 1),
]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(ops, min_size=5, max_size=40))
@example(RANKED_DUE_THEN_WOKEN_EARLIER)
@example(RANKED_DUE_THEN_REJUDGED_EARLIER)
def test_the_twins_answer_alike(redis_db: str, sequence: list[tuple[Any, ...]]) -> None:
    asyncio.run(both(sequence, redis_db))
