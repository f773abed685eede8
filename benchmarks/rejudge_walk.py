"""How long the re-judge of a changed timetable (`DeferralQueue.rejudge`) holds Redis: a
night's queue of tasks waiting for their channel's hours (a tenth for the next day),
parked by one timetable, made due by a worker on another.

Starts its own redis-server (free port), parks `--tasks` tasks, then times the re-judge:
its script calls (count, the longest as the client saw it, the longest in Redis's
SLOWLOG, which logs every call here) and the longest a GET on a second connection,
issued in a loop meanwhile, waited (what a worker's ledger call waits). Run it with
another `src` first on PYTHONPATH to time that code on the same queue:

    .venv/bin/python benchmarks/rejudge_walk.py --tasks 200000
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/rejudge_walk.py --tasks 200000

The digest printed is of the queue after the re-judge (ids and due times): the same for
two codes that leave the same queue.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from moments.embedded import RedisServer
from sinks.deferral import DeferralQueue
from sinks.ledger import TaskLedger, as_bytes
from sinks.stores import Parking

AT = 1_800_000_000.0
OPENS = AT + 6 * 3600.0
OLD, NEW = "0ld0ld0ld0ld0ld0", "1ae1ae1ae1ae1ae1"


async def fill(queue: DeferralQueue, count: int) -> None:
    for start in range(0, count, 5000):
        ids = [f"task-{n:07d}" for n in range(start, min(count, start + 5000))]
        await queue.ledger.claim([(i, b'{"task_id": "%s"}' % i.encode()) for i in ids])
        items = [
            Parking(
                i,
                f"1370{n:07d}",
                b"",
                OPENS,
                60.0,
                waits_for_hours=n % 10 != 0,
                waits_for_next_day=n % 10 == 0,
            )
            for n, i in enumerate(ids, start)
        ]
        await queue.park_many(items, OLD)


async def probe(
    client: Redis, key: str, stop: asyncio.Event, waits: list[float], busy: list[float]
) -> None:
    """GETs one after another until `stop`: how long each waited for its answer (Redis
    answers BUSY, an error, once a script ran past `busy-reply-threshold`, 5 s by default:
    those are in `busy` as well)."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            await client.get(key)
        except ResponseError as exc:
            if not str(exc).startswith("BUSY"):
                raise
            busy.append(started)
        waits.append(time.perf_counter() - started)


async def run(url: str, count: int) -> None:
    # No 5 s socket timeout (redis-py's default, and the workers' `REDIS_TIMEOUT_S`): the
    # single script over 200,000 ids outlasted it on a loaded machine.
    client = Redis.from_url(url, socket_timeout=120)
    other = Redis.from_url(url, socket_timeout=120)
    try:
        queue = DeferralQueue(client, TaskLedger(client, "moments:bench:", 86400))
        await fill(queue, count)
        script = queue._rejudge
        calls: list[float] = []

        async def timed(**kwargs: Any) -> Any:
            started = time.perf_counter()
            reply = await script(**kwargs)
            calls.append(time.perf_counter() - started)
            return reply

        queue._rejudge = timed  # type: ignore[assignment]
        await client.config_set("slowlog-log-slower-than", 0)
        await client.config_set("slowlog-max-len", 1_000_000)
        await client.slowlog_reset()
        stop, waits, busy = asyncio.Event(), list[float](), list[float]()
        prober = asyncio.create_task(probe(other, queue.judged_key, stop, waits, busy))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        woken = await queue.rejudge(NEW, AT)
        took = time.perf_counter() - started
        stop.set()
        await prober
        log: list[dict[str, Any]] = await client.slowlog_get(1_000_000)
        scripts = [
            e["duration"] for e in log if e["command"].split(b" ", 1)[0].upper() == b"EVALSHA"
        ]
        rows: list[Any] = await client.zrange(queue.key, 0, -1, withscores=True)
        digest = hashlib.blake2b(repr(sorted(rows)).encode(), digest_size=6).hexdigest()
        waiting = await client.zcount(queue.key, f"({AT}", "+inf")
        judged = as_bytes(await client.get(queue.judged_key) or b"").decode()
        print(
            f"tasks {count:,}  woken {woken:,}  still waiting {waiting}  judged {judged}  "
            f"queue digest {digest}"
        )
        print(
            f"rejudge {took * 1e3:.0f} ms wall, {len(calls)} script call(s); longest call "
            f"{max(calls) * 1e3:.1f} ms (client), {max(scripts) / 1e3:.1f} ms (SLOWLOG; "
            f"all {sum(scripts) / 1e3:.0f} ms); GET meanwhile: {len(waits)}, longest wait "
            f"{max(waits) * 1e3:.1f} ms, {len(busy)} refused BUSY"
        )
    finally:
        await client.aclose()
        await other.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, RedisServer(Path(workdir)) as server:
        asyncio.run(run(server.url, args.tasks))


if __name__ == "__main__":
    main()
