"""A graceful stop (SIGTERM) commits the batch it finishes: the next worker does not read
it again (docs/architecture.md, "Exactly once out")."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import RedisServer, free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings, freeze, thaw
from .kafka_io import (
    metric_value,
    produce,
    read_topic,
    values,
    wait_committed,
    wait_for_metric,
)
from .test_faults import assert_one_task_each

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 50


async def test_sigterm_during_a_batch_commits_it_and_the_next_worker_replays_nothing(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """Redis answers slowly (frozen) while a batch claims its tasks; SIGTERM comes then,
    and Redis answers again within the stop's wait. The batch finishes, its state and tasks
    durable, and its offsets are committed before the worker leaves. Before, the stop
    dropped them: the next worker read the batch again and counted every event of it in
    `moments_events_replayed_total`."""
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    server = RedisServer(tmp_path / "redis", port=free_port())
    with server:
        first_port, second_port = free_port(), free_port()
        settings = make_settings(redis_url=server.url, metrics_port=first_port)
        await topics_for(settings)
        first = start_worker(settings)
        await produce(settings, first_roamings(0, WAVE, zone))
        await wait_for_metric(first_port, "moments_tasks_published_total", {}, WAVE, wait_s=90)

        freeze(server)
        try:
            await produce(settings, first_roamings(WAVE, WAVE, zone))
            # Fetched, its batch waiting for Redis: its first call (the new subscribers'
            # erasures) timed out once, and is tried again.
            await first.wait_for_log(r"redis unavailable while reading erasures")
            assert await metric_value(first_port, "moments_tasks_published_total") == WAVE
            first.proc.send_signal(signal.SIGTERM)
            await first.wait_for_log(r"Signal received: 15\b")  # Faust's, as it begins to stop
        finally:
            thaw(server)
        code = await asyncio.to_thread(first.proc.wait, 30)
        assert code == 0, first.log()[-3000:]
        assert "did not finish within" not in first.log(), first.log()[-3000:]

        second = start_worker(make_settings(redis_url=server.url, metrics_port=second_port))
        records = await read_topic(settings, "tasks", count=2 * WAVE, wait_s=120, settle=3)
        assert_one_task_each(values(records), 2 * WAVE, second.log())
        # A batch is counted before its offsets are committed: whatever it read again is
        # counted by now.
        await wait_committed(second_port, settings.topic("roaming"), 2 * WAVE)
        assert await metric_value(second_port, "moments_events_replayed_total") == 0
