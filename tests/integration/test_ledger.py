"""The Redis dedup ledger over a real Redis: claim once, confirm, re-drive the unconfirmed."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from moments.enums import WithdrawReason
from sinks.ledger import CLAIMED, PUBLISHED_KEPT_S, TAKEN_OVER, TaskLedger, Unanswered
from sinks.memory import MemoryFacts, MemoryLedger
from sinks.stores import ClaimCall, Ledger

pytestmark = pytest.mark.integration


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[TaskLedger]:
    client = Redis.from_url(redis_url)
    yield TaskLedger(client, f"test:{uuid4().hex[:8]}:", ttl_seconds=3600)
    await client.aclose()


class TestClaim:
    """Whoever sets the pending mark first owns the publish; everyone else stands down."""

    async def test_second_claim_of_the_same_id_is_refused(self, ledger: TaskLedger) -> None:
        assert await ledger.claim([("a", b"{}"), ("b", b"{}")]) == [True, True]
        assert await ledger.claim([("a", b"{}"), ("c", b"{}")]) == [False, True]
        assert await ledger.state("a") == "pending"
        assert await ledger.pending_count() == 3

    async def test_claim_sets_the_expiry_on_the_redis_clock(self, ledger: TaskLedger) -> None:
        await ledger.claim([("a", b"{}")])
        ttl = await ledger.redis.ttl(ledger.key("a"))
        assert 3500 < ttl <= 3600

    async def test_confirm_marks_sent_keeps_expiry_and_clears_pending(
        self, ledger: TaskLedger
    ) -> None:
        await ledger.claim([("a", b"{}")])
        await ledger.confirm(["a"])
        assert await ledger.state("a") == "sent"
        assert await ledger.pending_count() == 0
        assert await ledger.redis.ttl(ledger.key("a")) > 3500
        assert await ledger.claim([("a", b"{}")]) == [False]


class TestClaimAgain:
    """A moment judged again (a contract's end each day of its lead) takes over its task's
    dropped entry once that task expired: it was never sent, and its entry outlives it a
    day (`DROPPED_KEPT_S`) only against the same task made again. Redis and memory alike."""

    @pytest.fixture
    async def both(self, redis_url: str) -> AsyncIterator[list[TaskLedger | MemoryLedger]]:
        client = Redis.from_url(redis_url)
        ttl = 400 * 86400
        yield [TaskLedger(client, f"test:{uuid4().hex[:8]}:", ttl), MemoryLedger(time.time, ttl)]
        await client.aclose()

    async def test_only_a_dropped_expired_task_judged_again(
        self, both: list[TaskLedger | MemoryLedger]
    ) -> None:
        for ledger in both:
            ids = ["expired", "live", "sent", "not-again"]
            assert await ledger.claim([(i, b"{}") for i in ids]) == [True] * 4
            now = time.time()
            await ledger.drop_many(
                [("expired", "suspended"), ("live", "declined"), ("not-again", "expired")],
                {"expired": now - 60, "live": now + 3600, "not-again": now - 60},
            )
            await ledger.confirm(["sent"])
            again = ["expired", "live", "sent"]
            claimed = await ledger.claim([(i, b"{}") for i in ids], again)
            assert claimed == [TAKEN_OVER, 0, 0, 0], type(ledger).__name__
            assert await ledger.state("expired") == "pending"
            assert [i for i, _ in await ledger.claim_stale(older_than=-1)] == ["expired"]

    async def test_not_while_its_task_has_under_a_second_left(
        self, both: list[TaskLedger | MemoryLedger]
    ) -> None:
        """The entry's keep is set and read in milliseconds: in whole seconds, cut down,
        Redis took over a dropped task still live for up to a second, the memory ledger
        not (re-check review)."""
        for ledger in both:
            await ledger.claim([("a", b"{}")])
            await ledger.drop_many([("a", "declined")], {"a": time.time() + 0.9})
            assert await ledger.claim([("a", b"{}")], ["a"]) == [0], type(ledger).__name__
            assert await ledger.state("a") == "dropped"

    async def test_never_by_a_ledger_keeping_entries_a_day_or_less(self, redis_url: str) -> None:
        """Its dropped entries keep the ledger's TTL, which says nothing of their expiry."""
        client = Redis.from_url(redis_url)
        ledgers: list[Ledger] = [
            TaskLedger(client, f"test:{uuid4().hex[:8]}:", 3600),
            MemoryLedger(time.time, 3600),
        ]
        try:
            for ledger in ledgers:
                await ledger.claim([("a", b"{}")])
                await ledger.drop_many([("a", "expired")], {"a": time.time() - 60})
                assert await ledger.claim([("a", b"{}")], ["a"]) == [0]
        finally:
            await client.aclose()


class TestClaimRetried:
    """A claim retried after its first try ran and lost its reply (a socket timeout under
    load, a cut connection) sends the first try's time again (`ClaimCall`) and takes the
    entries that try wrote as its own, answering as it did; any other entry it refuses as
    a first try does. Redis and memory alike."""

    @pytest.fixture
    async def both(self, redis_url: str) -> AsyncIterator[list[TaskLedger | MemoryLedger]]:
        client = Redis.from_url(redis_url)
        ttl = 400 * 86400
        yield [TaskLedger(client, f"test:{uuid4().hex[:8]}:", ttl), MemoryLedger(time.time, ttl)]
        await client.aclose()

    async def test_a_retry_answers_as_its_first_try_did(
        self, both: list[TaskLedger | MemoryLedger]
    ) -> None:
        for ledger in both:
            name = type(ledger).__name__
            await ledger.claim([("taken", b'{"n": 1}')])
            await ledger.drop_many([("taken", "expired")], {"taken": time.time() - 60})
            items = [("new", b'{"n": 2}'), ("taken", b'{"n": 1}')]
            call = ClaimCall()
            first = await ledger.claim(items, ["taken"], call)
            assert first == [CLAIMED, TAKEN_OVER], name
            assert await ledger.claim(items, ["taken"], call) == first, name
            assert await ledger.state("new") == await ledger.state("taken") == "pending", name

    async def test_a_retry_refuses_an_entry_another_caller_wrote(
        self, both: list[TaskLedger | MemoryLedger]
    ) -> None:
        """The other's entry holds the same payload; its score, its own claim time, differs
        (one claimed by a re-drive since, re-scored, likewise)."""
        for ledger in both:
            name = type(ledger).__name__
            assert await ledger.claim([("a", b'{"n": 1}')], (), ClaimCall()) == [CLAIMED]
            stale = ClaimCall(at=time.time() - 5)
            assert await ledger.claim([("a", b'{"n": 1}'), ("b", b"{}")], (), stale) == [
                0,
                CLAIMED,
            ], name
            mine = ClaimCall()
            assert await ledger.claim([("c", b'{"n": 3}')], (), mine) == [CLAIMED], name
            await ledger.claim_stale(older_than=-1)  # a re-drive re-scores it: not mine now
            assert await ledger.claim([("c", b'{"n": 3}')], (), mine) == [0], name


async def pending_since(ledger: TaskLedger, seconds: float, *task_ids: str) -> None:
    """`task_ids` pending for `seconds` already: a claim of those older than less re-scores
    them, and a second claim finds them fresh only if it did (a second claim a moment
    after a fresh entry's claim found it fresh either way)."""
    await ledger.redis.zadd(ledger.pending_key, dict.fromkeys(task_ids, time.time() - seconds))


class TestAnswered:
    async def test_the_mark_of_an_outcome_before_the_confirm_lives_the_ledgers_ttl(
        self, ledger: TaskLedger
    ) -> None:
        """`answered:<id>` (an outcome of a pending task) expires the ledger's TTL after
        it is set, as the memory ledger's does on its clock
        (tests/unit/test_memory_stores.py); the confirm takes it."""
        await ledger.claim([("a", b"{}")])
        assert await ledger.first_outcome("a", "accepted")
        assert await ledger.answered_pending(["a"]) == {"a"}
        assert 3500 < await ledger.redis.ttl(ledger.answered_key("a")) <= 3600
        await ledger.confirm(["a"], awaiting={"a": ("sms", time.time() + 600)})
        assert await ledger.answered_pending(["a"]) == set()
        assert (await ledger.unanswered())["sms"] == 0


class TestClaimStale:
    """A pending entry left by a crash is handed to exactly one re-driver, payload included."""

    async def test_stale_entry_is_claimed_once_with_its_payload(self, ledger: TaskLedger) -> None:
        await ledger.claim([("a", b'{"task_id": "a"}')])
        assert await ledger.claim_stale(older_than=3600) == []  # still fresh
        await pending_since(ledger, 60, "a")
        first = await ledger.claim_stale(older_than=30)
        second = await ledger.claim_stale(older_than=30)
        assert first == [("a", b'{"task_id": "a"}')]
        assert second == []  # re-scored by the first claimer

    async def test_many_stale_entries_in_one_call_and_a_vanished_one_leaves_the_index(
        self, ledger: TaskLedger
    ) -> None:
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C")])
        await ledger.redis.delete(ledger.key("b"))  # expired while pending
        await pending_since(ledger, 60, "a", "b", "c")
        claimed = await ledger.claim_stale(older_than=30)
        assert sorted(claimed) == [("a", b"A"), ("c", b"C")]
        assert await ledger.pending_count() == 2  # b is gone from the index too
        assert await ledger.claim_stale(older_than=30) == []  # just re-scored: not stale

    @pytest.mark.parametrize("store", ["redis", "memory"])
    async def test_a_claim_reads_when_an_earlier_re_drive_found_the_task_pending(
        self, ledger: TaskLedger, store: str
    ) -> None:
        """Each claim marks its entry `redriven:<id>` with when it first went pending, and
        a later claim keeps that mark: `first_pending` gives it back for those an earlier
        claim had marked, whose `since` is then that claim's, not when they first went
        pending (`sinks.dispatch.sealed_by_redrive`). Before, the mark held '1' and a
        second re-drive could not tell when."""
        twin: Ledger = ledger if store == "redis" else MemoryLedger(time.time, 3600)
        await twin.claim([("a", b"A")])
        since: dict[str, float] = {}
        first: dict[str, float | None] = {}
        assert await twin.claim_stale(-1, since=since, first_pending=first) == [("a", b"A")]
        assert first == {}
        went = since["a"]
        for _ in range(2):
            since.clear()
            assert [i for i, _ in await twin.claim_stale(-1, since=since, first_pending=first)]
            assert first == {"a": went}
        assert await twin.redriven(["a"]) == {"a"}

    async def test_a_mark_an_older_build_wrote_says_not_when(self, ledger: TaskLedger) -> None:
        """An older build's claim marked `redriven:<id>` with '1': read as not known (None:
        sealed, as that build judged it), and kept as it is, not taken for a time."""
        await ledger.claim([("b", b"B")])
        await ledger.redis.set(ledger.redriven_key("b"), "1")
        for _ in range(2):
            first: dict[str, float | None] = {}
            assert await ledger.claim_stale(-1, first_pending=first) == [("b", b"B")]
            assert first == {"b": None}
        assert await ledger.redis.get(ledger.redriven_key("b")) == b"1"
        assert await ledger.redriven_carried(["b"]) == ({"b"}, set())  # a claim's: sealed

    async def test_a_time_an_earlier_build_wrote_reads_as_a_claims_mark(
        self, ledger: TaskLedger
    ) -> None:
        """A mark that is a time alone, a claim's or (an earlier build) a leave's, keeps
        the meaning it had: the id may have gone out under its own name (`redriven`:
        sealed, withdrawn when dropped), first pending then; only `L<time>` is a leave's."""
        await ledger.claim([("b", b"B"), ("c", b"C")])
        await ledger.redis.set(ledger.redriven_key("b"), "1733300000.5")
        await ledger.redis.set(ledger.redriven_key("c"), "L1733300000.5")
        assert await ledger.redriven_carried(["b", "c"]) == ({"b"}, {"c"})
        assert await ledger.first_pending(["b", "c"]) == {"b": 1733300000.5, "c": 1733300000.5}

    async def test_confirmed_entry_is_not_redriven(self, ledger: TaskLedger) -> None:
        await ledger.claim([("a", b"{}")])
        await ledger.redis.set(ledger.key("a"), b"S")  # confirmed, index not yet cleaned
        assert await ledger.claim_stale(older_than=0) == []
        assert await ledger.pending_count() == 0


class TestExpireUnanswered:
    """Workers expiring a backlog of unanswered tasks at once each take their own: one
    script takes a channel's lowest out of the index as it reads them. Read first and
    removed after, every worker read the same lowest `limit` and only the one whose ZREM
    won counted each: a backlog drained no faster for more workers."""

    async def backlog(self, ledger: TaskLedger, channel: str, count: int) -> dict[str, float]:
        """`count` tasks of `channel` published and unanswered, expired an hour ago and
        after, each second another (their ledger entries hold their ids)."""
        expiry = {f"{channel}-{n}": 1_800_000_000.0 + n for n in range(count)}
        assert all(await ledger.claim([(i, b"{}") for i in expiry]))
        meta = {i: i.encode() for i in expiry}
        await ledger.confirm(
            list(expiry), meta, awaiting={i: (channel, e) for i, e in expiry.items()}
        )
        return expiry

    async def test_workers_at_once_take_disjoint_sets_together_all_each_once(
        self, redis_url: str, ledger: TaskLedger
    ) -> None:
        sms = await self.backlog(ledger, "sms", 3000)
        calls = await self.backlog(ledger, "outbound_call", 700)
        cutoff = 1_800_000_000.0 + 2500  # sms-2501 on have not expired yet
        clients = [Redis.from_url(redis_url) for _ in range(4)]
        workers = [TaskLedger(c, ledger.prefix, ledger.ttl) for c in clients]
        try:
            rounds: list[list[list[tuple[Unanswered, bytes | None]]]] = []
            while not rounds or any(rounds[-1]):
                rounds.append(
                    list(await asyncio.gather(*(w.expire_unanswered(cutoff, 500) for w in workers)))
                )
        finally:
            for c in clients:
                await c.aclose()
        # The first round: each worker its own 500 of the sms backlog, not the same 500.
        first = [[u for u, _ in taken if u.channel == "sms"] for taken in rounds[0]]
        assert [len(f) for f in first] == [500, 500, 500, 500]
        taken = [(u, entry) for r in rounds for worker in r for u, entry in worker]
        ids = [u.task_id for u, _ in taken]
        assert len(ids) == len(set(ids))  # each once
        expected = {i: e for i, e in {**sms, **calls}.items() if e <= cutoff}
        assert set(ids) == set(expected)  # together all that expired
        assert all(u.expires_at == expected[u.task_id] for u, _ in taken)
        assert all(entry == b"S" + u.task_id.encode() for u, entry in taken)
        assert await ledger.unanswered() == {
            "sms": 3000 - 2501,
            "outbound_call": 0,
            "manager": 0,
            "app_push": 0,
        }

    async def test_an_entry_gone_comes_back_as_none_and_nothing_expired_as_empty(
        self, ledger: TaskLedger
    ) -> None:
        await self.backlog(ledger, "sms", 3)
        await ledger.redis.delete(ledger.key("sms-1"))
        assert await ledger.expire_unanswered(1_000_000_000.0) == []
        taken = await ledger.expire_unanswered(1_800_000_001.0, limit=5)
        assert [(u.task_id, u.expires_at, e) for u, e in taken] == [
            ("sms-0", 1_800_000_000.0, b"Ssms-0"),
            ("sms-1", 1_800_000_001.0, None),
        ]


class TestCooldownReturns:
    """Returns owed and settled by scripts (`_OWE_RETURNS`, `_SETTLE_RETURNS`), as the
    in-memory twin a backtest uses: an empty list, the same key twice, records of any
    bytes, and more ids than a script's `unpack` takes at once (`_SETTLE_CHUNK`)."""

    async def test_owed_and_settled_as_the_memory_twin(self, ledger: TaskLedger) -> None:
        twin = MemoryLedger(time.time, 3600)
        rnd = random.Random(7)
        odd = [b"", b"\x00", b"\xff\xfe", b"nil", b"\r\n", b"-1"]
        odd += [rnd.randbytes(rnd.randrange(1, 64)) for _ in range(20)]
        owes: list[list[tuple[str, bytes]]] = [
            [],
            [("a", b"1"), ("a", b"2"), ("b", b""), ("a", b"3")],
            [(f"odd{i}", record) for i, record in enumerate(odd)],
            [(f"t{i}", rnd.randbytes(8)) for i in range(20_000)],
        ]
        settles: list[list[str]] = [
            [],
            ["a", "a", "never-owed", "a"],
            [f"odd{i}" for i in range(0, len(odd), 2)] * 2,
            [f"t{i}" for i in range(20_000)] + [f"t{i}" for i in range(9_000)],
        ]

        async def owed(store: TaskLedger | MemoryLedger) -> list[tuple[str, bytes]]:
            return sorted(await store.owed_returns(-1e9, limit=100_000))

        for items in owes:
            await ledger.owe_returns(items)
            await twin.owe_returns(items)
            assert await owed(ledger) == await owed(twin)
        assert len(await owed(ledger)) == 2 + len(odd) + 20_000
        for ids in settles:
            await ledger.settle_returns(ids)
            await twin.settle_returns(ids)
            assert await owed(ledger) == await owed(twin)
        left = [(f"odd{i}", odd[i]) for i in range(1, len(odd), 2)]
        assert await owed(ledger) == sorted([("b", b""), *left])
        assert await ledger.redis.hlen(ledger.return_records_key) == 1 + len(left)


class TestPublishedIndex:
    """A sent task enters its subscriber's published index (what a later opt-out withdraws,
    sinks.withdrawals) as its entry leaves pending, in the confirm's script; Redis and the
    memory twin alike."""

    async def test_confirmed_tasks_by_subscriber_until_they_expire_or_are_withdrawn(
        self, ledger: TaskLedger
    ) -> None:
        now = time.time()
        sub = "13800138000"
        await ledger.claim([("a", b"{}"), ("b", b"{}"), ("c", b"{}")])
        awaiting = {"a": ("sms", now + 100), "b": ("outbound_call", now + 7200)}
        await ledger.confirm(["a", "b"], awaiting=awaiting, subscribers={"a": sub, "b": sub})
        await ledger.drop("c", "capacity")  # never sent: not indexed
        assert await ledger.published_of([sub, "13900139000"], now) == [["a", "b"], []]
        assert await ledger.published_of([sub], now + 200) == [["b"]]  # a expired by then
        # Kept a day past the latest expiry, on the Redis clock.
        ttl = await ledger.redis.ttl(ledger.published_key(sub))
        assert 7200 + 86400 - 5 < ttl <= 7200 + 86400 + 1

        await ledger.withdrawn([("b", sub, "outbound_call")])
        assert await ledger.published_of([sub], now) == [["a"]]
        assert await ledger.unanswered() == {
            "sms": 1,
            "outbound_call": 0,
            "manager": 0,
            "app_push": 0,
        }
        # A confirm repeated (a re-drive's) puts nothing back: the entry is no longer pending.
        await ledger.confirm(["b"], awaiting=awaiting, subscribers={"b": sub})
        assert await ledger.published_of([sub], now) == [["a"]]

        await ledger.forget_published([sub])
        assert not await ledger.redis.exists(ledger.published_key(sub))

    async def test_a_confirm_repeated_after_a_tombstone_writes_no_body_again(
        self, redis_url: str
    ) -> None:
        """A re-drive's confirm and the stalled first worker's (Redis out for longer than
        the re-drive's age) both settle the task; a tombstone read between the two erased
        its body (`forget_published`). The later one, finding the entry no longer pending,
        still wrote the body: the erased subscriber's payload was back for the task's life
        and a day, in no index a tombstone reads. Redis and memory alike."""
        client = Redis.from_url(redis_url)
        stores: list[TaskLedger | MemoryLedger] = [
            TaskLedger(client, f"test:{uuid4().hex[:8]}:", ttl_seconds=3600),
            MemoryLedger(time.time, 3600),
        ]
        sub = "13800138000"
        try:
            for ledger in stores:
                now = time.time()
                await ledger.claim([("a", b"{}")])
                bodies = {"a": (b'{"subscriber_id": "13800138000"}', 3600)}
                awaiting = {"a": ("sms", now + 600)}
                await ledger.confirm(
                    ["a"], bodies=bodies, awaiting=awaiting, subscribers={"a": sub}
                )
                await ledger.forget_published([sub])
                await ledger.confirm(
                    ["a"], bodies=bodies, awaiting=awaiting, subscribers={"a": sub}
                )
                assert await ledger.body("a") is None, type(ledger).__name__
                assert await ledger.state("a") == "sent"
        finally:
            await client.aclose()

    @pytest.mark.parametrize(
        ("recorded", "sent_on"),
        [("WeChat", "wechat"), ("WECHAT", "WeChat"), ("SMS", "sms"), ("wechat", "WeChat")],
    )
    async def test_an_opt_out_recorded_in_any_case_voids_the_task_on_its_channel(
        self, redis_url: str, recorded: str, sent_on: str
    ) -> None:
        """The confirm looks at the task's channel's opt-out whatever case the facts hash
        recorded it in (`opt_out:WeChat`, by a build before the lowering: the hash lives
        90 days past its subscriber's last fact), as the release and the gates read it
        (`channel_key`). It looked up the lowered name and the channel as the task wrote
        it: a task on `wechat` went out, and into the published index, to a customer who
        had refused the channel. Redis and the memory twin alike."""
        client = Redis.from_url(redis_url)
        sub, now = "13800138000", time.time()
        facts = MemoryFacts(time.time)
        stores: list[TaskLedger | MemoryLedger] = [
            TaskLedger(client, f"test:{uuid4().hex[:8]}:", ttl_seconds=3600),
            MemoryLedger(time.time, 3600, facts),
        ]
        fields = {f"opt_out:{recorded}": now - 60, "opt_list": now - 60, "opt_in:sms": now - 120}
        try:
            for ledger in stores:
                if isinstance(ledger, TaskLedger):
                    await client.hset(ledger.facts_key(sub), mapping=fields)  # type: ignore[arg-type]
                else:
                    facts.facts[sub] = (dict(fields), now + 86400)
                await ledger.claim([("a", b"{}")])
                void = await ledger.confirm(
                    ["a"],
                    awaiting={"a": (sent_on, now + 600)},
                    subscribers={"a": sub},
                    made={"a": math.inf},
                )
                assert void == {"a": (WithdrawReason.OPT_OUT, now - 60)}, type(ledger).__name__
                assert await ledger.state("a") == "pending"
                assert await ledger.published_of([sub], now) == [[]]
        finally:
            await client.aclose()

    async def test_members_expired_a_day_ago_go_at_the_next_confirm(
        self, ledger: TaskLedger
    ) -> None:
        """One expired within the day stays: its body is kept as long, and a tombstone
        erases the bodies the index names (`forget_published`)."""
        now = time.time()
        sub = "13800138000"
        await ledger.claim([("old", b"{}"), ("recent", b"{}"), ("new", b"{}")])
        awaiting = {
            "old": ("sms", now - PUBLISHED_KEPT_S - 1),
            "recent": ("sms", now - 1),
            "new": ("sms", now + 60),
        }
        subscribers = dict.fromkeys(awaiting, sub)
        await ledger.confirm(["old", "recent"], awaiting=awaiting, subscribers=subscribers)
        await ledger.confirm(["new"], awaiting=awaiting, subscribers=subscribers)
        members = await ledger.redis.zrange(ledger.published_key(sub), 0, -1)
        assert members == [b"recent", b"new"]
        assert await ledger.published_of([sub], now) == [["new"]]
