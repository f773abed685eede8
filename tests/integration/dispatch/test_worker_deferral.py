"""A real worker holds a task in the deferral queue; killed with -9 while the task
waits, the next worker releases it: published once, never lost."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from moments.sample import daytime_zone
from moments.settings import Settings
from tests.integration.conftest import MakeSettings, WorkerProcess
from tests.integration.kafka_io import produce, read_topic, values
from tests.integration.test_worker import LI, roaming

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def wait_until_waiting(redis_url: str, key: str, worker: WorkerProcess) -> None:
    """Until the deferral queue holds a task (the worker parked it)."""
    client = Redis.from_url(redis_url)
    try:
        while not await client.zcard(key):
            assert worker.proc.poll() is None, worker.log()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def waiting(redis_url: str, key: str) -> int:
    """How many tasks the deferral queue holds."""
    client = Redis.from_url(redis_url)
    try:
        return int(await client.zcard(key))
    finally:
        await client.aclose()


class TestDeferralAcrossARestart:
    async def test_task_parked_by_a_killed_worker_is_released_by_the_next(
        self,
        make_settings: MakeSettings,
        topics_for: Callable[[Settings], Any],
        start_worker: Callable[[Settings], WorkerProcess],
        redis_url: str,
        tmp_path: Path,
    ) -> None:
        policy = tmp_path / "policy.yaml"
        # SMS held 5 s for the merge window: long enough to kill the worker meanwhile (the
        # queue still holding it then says so), short enough that the next worker, once
        # joined, finds it due.
        policy.write_text("merge: {window: 5s, hold_channels: [sms]}\n")
        settings = make_settings(dispatch_policy=policy)
        await topics_for(settings)
        first = start_worker(settings)
        # Abroad where it is daytime now: quiet hours must not hold it past the window.
        zone = daytime_zone(dt.datetime.now(dt.UTC))
        await produce(settings, [roaming("w1", LI, "JP", timezone=zone)])
        queue = f"moments:{settings.app_id}:deferred"
        await wait_until_waiting(redis_url, queue, first)
        first.kill()
        assert await waiting(redis_url, queue) == 1, first.log()[-3000:]  # not released by it
        second = start_worker(settings)
        records = await read_topic(settings, "tasks", count=1, wait_s=120, settle=3)
        tasks = values(records)
        assert len(tasks) == 1, second.log()[-3000:]
        [task] = tasks
        assert task["moment"]["params"]["country"] == "JP"
        assert task["deferred"]["reason"] == "merge_window"
