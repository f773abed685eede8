"""Every fault in turn under a steady stream, one worker, several minutes.

First international roamings of distinct subscribers (one task each) are produced
straight to the broker at a steady rate, while the worker, which reaches the broker
through `tansu proxy` and keeps its ledger in a Redis with AOF, goes through: the
broker connection cut, Redis stopped, `kill -9` and a restart, a second longer cut
and a second Redis stop. At the end the dispatch topic holds one task per subscriber.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from moments.embedded import RedisServer, free_port
from moments.sample import daytime_zone
from moments.settings import Settings
from tests.integration.conftest import MakeSettings, WorkerProcess
from tests.integration.fault_tools import TansuProxy, first_roamings
from tests.integration.kafka_io import metric_value, read_topic, values

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.slow]

RATE = int(os.environ.get("SOAK_RATE", "100"))
"""Subscribers (events, tasks) per second."""
STEP_S = float(os.environ.get("SOAK_STEP_SECONDS", "12"))
"""Time between two faults, and how long each outage lasts (the Kafka probe samples every
5 s and gives a sample 4 s: a cut much shorter than 10 s may show only in the log)."""


async def steady_stream(settings: Settings, zone: str, stop: asyncio.Event) -> int:
    """Produce RATE first roamings a second, in half-second chunks, until `stop`."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            chunk = first_roamings(sent, RATE // 2, zone, prefix="soak")
            await asyncio.gather(
                *[
                    await producer.send(
                        settings.topic(name), value=orjson.dumps(value), key=str(key).encode()
                    )
                    for name, key, value in chunk
                ]
            )
            sent += len(chunk)
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()
    return sent


async def test_every_fault_in_turn_under_load_publishes_every_task_once(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    kafka_bootstrap: str,
    tmp_path: Path,
    report_figure: Callable[[str], None],
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    direct = make_settings()
    await topics_for(direct)
    redis = RedisServer(
        tmp_path / "redis",
        port=free_port(),
        extra_args=["--appendonly", "yes", "--appendfsync", "always"],
    )
    began = time.monotonic()
    with redis, TansuProxy(kafka_bootstrap, tmp_path / "proxy") as proxy:

        def worker_settings() -> Settings:
            return make_settings(
                kafka_bootstrap=proxy.bootstrap, redis_url=redis.url, metrics_port=free_port()
            )

        settings = worker_settings()
        worker = start_worker(settings)
        stop = asyncio.Event()
        producing = asyncio.create_task(steady_stream(direct, zone, stop))
        faults: list[str] = []

        async def outage(name: str, down: Callable[[], None], up: Callable[[], object]) -> None:
            await asyncio.sleep(STEP_S)
            await asyncio.to_thread(down)
            await asyncio.sleep(STEP_S)
            await asyncio.to_thread(up)
            faults.append(name)

        await outage("broker cut", proxy.stop, proxy.start)
        await outage("redis stopped", redis.stop, redis.start)
        await asyncio.sleep(STEP_S)
        await asyncio.to_thread(worker.kill)
        faults.append("kill -9")
        await asyncio.sleep(2)
        settings = worker_settings()
        worker = start_worker(settings)
        await outage("broker cut", proxy.stop, proxy.start)
        await outage("redis stopped", redis.stop, redis.start)
        await asyncio.sleep(STEP_S)
        stop.set()
        sent = await producing
        produced_for = time.monotonic() - began

        records = await read_topic(direct, "tasks", count=sent, wait_s=300, settle=10)
        drained_after = time.monotonic() - began - produced_for
        per_subscriber = Counter(str(t["subscriber_id"]) for t in values(records))
        assert len(per_subscriber) == sent, (len(per_subscriber), sent, worker.log()[-3000:])
        assert max(per_subscriber.values()) == 1, per_subscriber.most_common(3)
        assert len(records) == sent
        port = settings.metrics_port
        errors = {
            dep: await metric_value(port, "moments_dependency_errors_total", {"dependency": dep})
            for dep in ("kafka", "redis")
        }
        assert errors["kafka"] >= 1
        assert errors["redis"] >= 1
        worker.stop()
    report_figure(
        f"fault sequence ({', '.join(faults)}): {sent:,} subscribers at {RATE}/s over "
        f"{produced_for:.0f} s, {len(records):,} tasks, one each; the last task "
        f"{drained_after:.0f} s after the stream stopped; the restarted worker counted "
        f"{errors['kafka']:.0f} kafka and {errors['redis']:.0f} redis dependency errors"
    )
