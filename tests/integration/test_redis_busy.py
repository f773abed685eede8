"""A Redis that answers `BUSY` (another client's script running past the busy threshold,
5 s by default: the night's re-judge walk did, before it went a chunk a call) is a
dependency that cannot serve now, not a bug: `with_retry` waits it out as it waits out a
dropped connection, counted in `moments_dependency_errors_total`. redis-py raises a plain
ResponseError for it, which went up through the batch."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
import redis.asyncio as aioredis

from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry

pytestmark = pytest.mark.integration

# Spins for `ARGV[1]` ms of Redis's own clock, then returns: a script too long for the
# threshold below, which ends by itself.
SPIN = """
local t = redis.call('TIME')
local start = t[1] * 1000 + math.floor(t[2] / 1000)
repeat
  t = redis.call('TIME')
until t[1] * 1000 + math.floor(t[2] / 1000) - start >= tonumber(ARGV[1])
return 1
"""


def test_a_call_answered_busy_is_made_again_once_the_script_ends(redis_db: str) -> None:
    admin = redis.Redis.from_url(redis_db)
    admin.set("k", b"v")
    before = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
    admin.config_set("busy-reply-threshold", 100)
    spinning = threading.Event()

    def spin() -> None:
        client = redis.Redis.from_url(redis_db)
        spinning.set()
        client.eval(SPIN, 0, 1500)
        client.close()

    spinner = threading.Thread(target=spin)
    try:
        spinner.start()
        spinning.wait()

        async def read() -> tuple[bytes | None, list[str]]:
            client = aioredis.Redis.from_url(redis_db)
            seen: list[str] = []

            async def get() -> bytes | None:
                try:
                    value: bytes | None = await client.get("k")
                except Exception as exc:
                    seen.append(str(exc).split(" ")[0])
                    raise
                return value

            await asyncio.sleep(0.3)  # the script is past the threshold by now
            try:
                return await with_retry(get, Dependency.REDIS, metrics, "reading k"), seen
            finally:
                await client.aclose()

        metrics = Metrics()
        value, seen = asyncio.run(read())
        assert value == b"v"
        assert seen
        assert set(seen) == {"BUSY"}
        errors = metrics.dependency_errors.labels(Dependency.REDIS.value)._value.get()
        assert errors == len(seen)
        assert metrics.up_of[Dependency.REDIS]._value.get() == 1
    finally:
        spinner.join()
        admin.config_set("busy-reply-threshold", before)
        admin.close()
