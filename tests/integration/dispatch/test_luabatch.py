"""sinks.luabatch on a real Redis: a body runs per item, in order, over many calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from sinks import luabatch
from sinks.luabatch import BatchScript

pytestmark = pytest.mark.integration

# Appends the item's value to a shared list and returns its new length, or false for "skip".
_BODY = """
if A[1] == 'skip' then return false end
redis.call('SET', K[1], A[1])
return redis.call('RPUSH', SK[1], S[1] .. A[1])
"""


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_items_run_in_order_with_shared_keys_and_args(redis: Redis) -> None:
    prefix = f"lb:{uuid4().hex[:8]}:"
    script = BatchScript(redis, _BODY, keys=1, args=1)
    items = [((f"{prefix}k{i}",), (f"v{i}",)) for i in range(5)]
    items[2] = ((f"{prefix}k2",), ("skip",))
    replies = await script.run(items, shared=("x-",), shared_keys=(f"{prefix}list",))
    assert replies == [1, 2, None, 3, 4]
    assert await redis.lrange(f"{prefix}list", 0, -1) == [b"x-v0", b"x-v1", b"x-v3", b"x-v4"]
    assert await redis.get(f"{prefix}k4") == b"v4"
    assert await script.run([]) == []


async def test_more_items_than_a_chunk_go_in_several_calls_in_order(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(luabatch, "CHUNK", 3)
    prefix = f"lb:{uuid4().hex[:8]}:"
    script = BatchScript(redis, _BODY, keys=1, args=1)
    items = [((f"{prefix}k{i}",), (str(i),)) for i in range(8)]
    assert await script.run(items, shared=("",), shared_keys=(f"{prefix}list",)) == list(
        range(1, 9)
    )
    assert await redis.lrange(f"{prefix}list", 0, -1) == [str(i).encode() for i in range(8)]


async def test_the_script_is_loaded_again_after_a_flush(redis: Redis) -> None:
    prefix = f"lb:{uuid4().hex[:8]}:"
    script = BatchScript(redis, _BODY, keys=1, args=1)
    await script.run([((f"{prefix}a",), ("1",))], ("",), (f"{prefix}list",))
    await redis.script_flush()  # a restarted Redis has no scripts
    assert await script.run([((f"{prefix}b",), ("2",))], ("",), (f"{prefix}list",)) == [2]


async def test_an_item_of_the_wrong_shape_is_refused(redis: Redis) -> None:
    script = BatchScript(redis, _BODY, keys=1, args=1)
    with pytest.raises(ValueError, match="takes 1 and 1"):
        await script.run([(("k1", "k2"), ("v",))])
