"""CPU per task of the dispatch sink (`TaskSink`) against a real redis-server.

The bench's events go through the detector in process; the tasks it makes are then
dispatched batch by batch, as the worker does, with a producer that only acknowledges
(the broker is not what this measures). Prints CPU and wall time per task.

    .venv/bin/python benchmarks/dispatch_cpu.py            # 200k events, 2 runs
    .venv/bin/python benchmarks/dispatch_cpu.py --events 100000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from moments.bench import bench_events
from moments.embedded import RedisServer
from moments.engine import Detector
from moments.gctune import tune_gc
from moments.models import EventType, ServiceTask
from moments.records import RawRecord
from moments.store import DictStateStore
from rules.catalog import load_rules
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.metrics import Metrics
from sinks.stores import redis_stores


class _Acked:
    def __await__(self) -> Any:
        return iter(())


class AckingProducer:
    """Acknowledges every send at once."""

    async def send(self, *args: Any, **kwargs: Any) -> _Acked:
        return _Acked()


def batches_of_tasks(events: int, subscribers: int) -> list[list[ServiceTask]]:
    records = [
        RawRecord(t.value, 0, i, k, v)
        for i, (t, k, v) in enumerate(bench_events(events, subscribers))
    ]
    detector = Detector(load_rules(), {t.value: t for t in EventType})
    store = DictStateStore()
    now = dt.datetime.now(dt.UTC)
    out = []
    for start in range(0, len(records), 5000):
        result = detector.process(records[start : start + 5000], store.load, now)
        store.save(result.changes)
        out.append(result.tasks)
    return out


async def dispatch(url: str, batches: Sequence[list[ServiceTask]]) -> tuple[float, float]:
    redis = Redis.from_url(url)
    ledger = TaskLedger(redis, f"bench{time.time_ns()}:", 86400)
    sink = TaskSink(AckingProducer(), "tasks", redis_stores(ledger), Metrics())
    cpu, wall = time.process_time(), time.perf_counter()
    for tasks in batches:
        for task in tasks:
            sink.add(task)
        await sink.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await redis.aclose()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    tune_gc()
    batches = batches_of_tasks(args.events, args.subscribers)
    count = sum(map(len, batches))
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        for _ in range(args.runs):
            cpu, wall = asyncio.run(dispatch(server.url, batches))
            print(
                f"{count:,} tasks: {cpu / count * 1e6:.0f} µs CPU per task, "
                f"{wall / count * 1e6:.0f} µs wall per task"
            )


if __name__ == "__main__":
    main()
