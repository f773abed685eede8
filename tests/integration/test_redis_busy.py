"""A Redis that answers `BUSY` (another client's script running past the busy threshold,
5 s by default: the night's re-judge walk did, before it went a chunk a call) is a
dependency that cannot serve now, not a bug: `with_retry` waits it out as it waits out a
dropped connection, counted in `moments_dependency_errors_total`. redis-py raises a plain
ResponseError for it, which went up through the batch."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from moments.embedded import RedisServer
from sinks.ledger import TaskLedger
from sinks.metrics import Dependency, Metrics
from sinks.relevance import FactsStore
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


def until_busy(url: str, wait_s: float = 10.0) -> None:
    """Until Redis answers `BUSY`: the script runs, past the threshold. A command sent
    before the script starts is answered at once, one sent while it runs within the
    threshold waits for it, and one after it is answered `BUSY`."""
    probe = redis.Redis.from_url(url)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                probe.ping()
            except redis.ResponseError as exc:
                if str(exc).startswith("BUSY"):
                    return
                raise
            assert time.monotonic() < deadline, f"no script running after {wait_s} s"
            time.sleep(0.01)
    finally:
        probe.close()


@pytest.mark.parametrize("through", ["command", "pipeline"])
def test_a_call_answered_busy_is_made_again_once_the_script_ends(
    redis_db: str, through: str
) -> None:
    """A single command, and a pipeline (the stores' plain reads and deletes: redis-py
    raises its first error with the command's number put before the reply, `Command # 1
    (HGETALL ...) of pipeline caused error: BUSY ...`, which a check of the reply's first
    word missed)."""
    admin = redis.Redis.from_url(redis_db)
    admin.set("k", b"v")
    admin.hset("t:facts:1", "topup", 5.0)
    before = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
    assert before is not None
    admin.config_set("busy-reply-threshold", 100)

    def spin() -> None:
        client = redis.Redis.from_url(redis_db)
        client.eval(SPIN, 0, 1500)
        client.close()

    spinner = threading.Thread(target=spin)
    try:
        spinner.start()
        until_busy(redis_db)  # a wait for the script's thread to send it, not a timing

        async def read() -> tuple[object, list[str]]:
            client = aioredis.Redis.from_url(redis_db)
            facts = FactsStore(client, "t:")
            seen: list[str] = []

            async def get() -> object:
                try:
                    if through == "pipeline":
                        return (await facts.get_many(["1"]))[0].topup_at
                    return await client.get("k")
                except Exception as exc:
                    seen.append("BUSY" if "BUSY " in str(exc) else type(exc).__name__)
                    raise

            try:
                return await with_retry(get, Dependency.REDIS, metrics, "reading k"), seen
            finally:
                await client.aclose()

        metrics = Metrics()
        value, seen = asyncio.run(read())
        assert value == (b"v" if through == "command" else 5.0)
        assert seen
        assert set(seen) == {"BUSY"}
        errors = metrics.dependency_errors.labels(Dependency.REDIS.value)._value.get()
        assert errors == len(seen)
        assert metrics.up_of[Dependency.REDIS]._value.get() == 1
    finally:
        spinner.join()
        admin.config_set("busy-reply-threshold", before)
        admin.close()


@pytest.mark.parametrize("reply", ["MISCONF", "NOREPLICAS"])
def test_a_write_refused_while_redis_may_not_write_is_made_again_once_it_may(
    tmp_path: Path, reply: str
) -> None:
    """Writes refused with `MISCONF` (Redis cannot persist: its disk full, its snapshot or
    AOF failing) or `NOREPLICAS` (fewer replicas answer than `min-replicas-to-write`) wait
    with back-off like a Redis that is away, until the operator's fix lets them through
    (here: after the second refusal). They went up through the batch. The ledger's claim,
    a script, is the write."""
    rdb = tmp_path / "rdb"
    rdb.mkdir()
    args = ["--save", "3600 1", "--dir", str(rdb)]
    with RedisServer(tmp_path / "redis", extra_args=args) as server:
        admin = redis.Redis.from_url(server.url)
        try:
            if reply == "MISCONF":
                shutil.rmtree(rdb)  # the snapshot cannot be written: writes are refused
                admin.bgsave()
                for _ in range(200):  # a fork that fails at once: milliseconds
                    if not admin.info("persistence")["rdb_bgsave_in_progress"]:
                        break
                    time.sleep(0.05)
                assert admin.info("persistence")["rdb_last_bgsave_status"] == "err"
                fix = {"stop-writes-on-bgsave-error": "no"}
            else:
                admin.config_set("min-replicas-to-write", 1)
                fix = {"min-replicas-to-write": "0"}

            async def claim() -> tuple[list[int], list[str]]:
                client = aioredis.Redis.from_url(server.url)
                ledger = TaskLedger(client, "t:", 3600)
                seen: list[str] = []

                async def once() -> list[int]:
                    try:
                        return await ledger.claim([("task-1", b"{}")])
                    except Exception as exc:
                        seen.append(str(exc).split(" ")[0])
                        if len(seen) == 2:
                            admin.config_set(*next(iter(fix.items())))
                        raise

                try:
                    return await with_retry(once, Dependency.REDIS, metrics, "claiming"), seen
                finally:
                    await client.aclose()

            metrics = Metrics()
            owned, seen = asyncio.run(claim())
            assert owned == [True]
            assert seen == [reply, reply]
            assert admin.get("t:task:task-1") == b"P{}"
            errors = metrics.dependency_errors.labels(Dependency.REDIS.value)._value.get()
            assert errors == 2
        finally:
            admin.config_set("save", "")  # it stops without the snapshot it cannot write
            admin.close()
