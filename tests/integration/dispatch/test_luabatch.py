"""sinks.luabatch on a real Redis: a body runs per item, in order, over many calls."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any
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


async def test_an_items_keys_and_arguments_cost_no_python_calls(redis: Redis) -> None:
    """A call is packed in C (`_packed`): 1,000 items (one call, a `CHUNK`) make no more
    Python calls than 20. redis-py's packing made ~6 a key or argument, ~12,000 more here."""
    prefix = f"lb:{uuid4().hex[:8]}:"
    script = BatchScript(redis, _BODY, keys=1, args=1)
    await script.run([((f"{prefix}w",), ("w",))], ("",), (f"{prefix}list",))  # connected

    async def calls(n: int) -> int:
        items = [((f"{prefix}k{i}",), (f"v{i}",)) for i in range(n)]
        counted = [0]

        def count(frame: Any, event: str, arg: Any) -> None:
            if event in ("call", "c_call"):
                counted[0] += 1

        sys.setprofile(count)
        try:
            await script.run(items, ("",), (f"{prefix}list",))
        finally:
            sys.setprofile(None)
        return counted[0]

    few, many = await calls(20), await calls(luabatch.CHUNK)
    assert many - few < 100, (few, many)


async def test_a_connection_the_server_dropped_is_made_again(redis: Redis, redis_url: str) -> None:
    """Redis closed the pooled connection (a restart, a timeout, CLIENT KILL): the call is
    retried on a new one, as redis-py's own commands are."""
    prefix = f"lb:{uuid4().hex[:8]}:"
    script = BatchScript(redis, _BODY, keys=1, args=1)
    assert await script.run([((f"{prefix}a",), ("1",))], ("",), (f"{prefix}list",)) == [1]
    killer = Redis.from_url(redis_url)
    try:
        assert await killer.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        await killer.aclose()
    assert await script.run([((f"{prefix}b",), ("2",))], ("",), (f"{prefix}list",)) == [2]


async def test_calls_at_once_each_take_a_connection_of_their_own(redis: Redis) -> None:
    """Concurrent runs do not share a connection: each reply is its own call's."""
    prefix = f"lb:{uuid4().hex[:8]}:"
    script = BatchScript(redis, _BODY, keys=1, args=1)
    runs = [
        script.run([((f"{prefix}k{n}",), (f"v{n}",))], ("",), (f"{prefix}list{n}",))
        for n in range(20)
    ]
    assert await asyncio.gather(*runs) == [[1]] * 20
    for n in range(20):
        assert await redis.lrange(f"{prefix}list{n}", 0, -1) == [f"v{n}".encode()]


async def test_a_single_connection_client_works_too(redis_url: str) -> None:
    client = Redis.from_url(redis_url, single_connection_client=True)
    try:
        prefix = f"lb:{uuid4().hex[:8]}:"
        script = BatchScript(client, _BODY, keys=1, args=1)
        await client.set(f"{prefix}x", "1")  # its own connection made
        assert await script.run([((f"{prefix}a",), ("1",))], ("",), (f"{prefix}list",)) == [1]
        assert await client.get(f"{prefix}a") == b"1"
    finally:
        await client.aclose()
