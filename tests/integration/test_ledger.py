"""The Redis dedup ledger over a real Redis: claim once, confirm, re-drive the unconfirmed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from sinks.ledger import TaskLedger

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


class TestClaimStale:
    """A pending entry left by a crash is handed to exactly one re-driver, payload included."""

    async def test_stale_entry_is_claimed_once_with_its_payload(self, ledger: TaskLedger) -> None:
        await ledger.claim([("a", b'{"task_id": "a"}')])
        assert await ledger.claim_stale(older_than=3600) == []  # still fresh
        first = await ledger.claim_stale(older_than=0)
        second = await ledger.claim_stale(older_than=0.5)
        assert first == [("a", b'{"task_id": "a"}')]
        assert second == []  # re-scored by the first claimer

    async def test_many_stale_entries_in_one_call_and_a_vanished_one_leaves_the_index(
        self, ledger: TaskLedger
    ) -> None:
        await ledger.claim([("a", b"A"), ("b", b"B"), ("c", b"C")])
        await ledger.redis.delete(ledger.key("b"))  # expired while pending
        claimed = await ledger.claim_stale(older_than=0)
        assert sorted(claimed) == [("a", b"A"), ("c", b"C")]
        assert await ledger.pending_count() == 2  # b is gone from the index too
        assert await ledger.claim_stale(older_than=0.5) == []  # just re-scored: not stale

    async def test_confirmed_entry_is_not_redriven(self, ledger: TaskLedger) -> None:
        await ledger.claim([("a", b"{}")])
        await ledger.redis.set(ledger.key("a"), b"S")  # confirmed, index not yet cleaned
        assert await ledger.claim_stale(older_than=0) == []
        assert await ledger.pending_count() == 0
