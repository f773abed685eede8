"""A worker that cannot start its runtime (Redis unreachable) while an outcome record
waits for it still stops on SIGTERM: Faust waited for the outcomes agent, blocked on the
runtime, and the worker ignored SIGINT and SIGTERM until kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from moments.embedded import free_port
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import produce

pytestmark = pytest.mark.integration


async def test_sigterm_stops_a_worker_waiting_for_redis_with_an_outcome_in_hand(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    await topics_for(settings)
    outcome = {
        "task_id": "t-1",
        "subscriber_id": "13800138001",
        "status": "accepted",
        "occurred_at": "2026-12-05T09:00:00+08:00",
    }
    await produce(settings, [("task_outcomes", "13800138001", outcome)])
    worker = start_worker(settings)
    # Joined (the rebalance timeout) and the outcome fetched by then; Redis still away.
    await asyncio.sleep(settings.rebalance_timeout + 8)
    assert worker.proc.poll() is None, worker.log()[-2000:]
    os.killpg(worker.proc.pid, signal.SIGTERM)
    for _ in range(90):  # 45 s
        if worker.proc.poll() is not None:
            break
        await asyncio.sleep(0.5)
    assert worker.proc.poll() is not None, (
        "still running 45 s after SIGTERM:\n" + worker.log()[-3000:]
    )
    assert "an agent still held an event after 10 s" in worker.log()
