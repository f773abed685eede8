"""The subscriber's facts hash in a rolling upgrade: a field a newer version adds is
left alone by this version's workers (docs/operations.md, "Rolling upgrades")."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from sinks.relevance import FactsStore

pytestmark = pytest.mark.integration

SUB = "13900000802"


class TestFacts:
    async def test_a_field_a_newer_version_wrote_is_not_read(self, redis_url: str) -> None:
        """A field that is no number (a newer version's) stopped every read of the
        subscriber's facts (`float()`); the fields this version knows are read."""
        client = Redis.from_url(redis_url)
        try:
            store = FactsStore(client, "moments:facts-newer-fields:")
            await client.hset(store.key(SUB), mapping={"topup": 100.0, "segment": "gold"})
            facts = await store.get(SUB)
            assert facts.topup_at == 100.0
        finally:
            await client.aclose()
