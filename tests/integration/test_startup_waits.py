"""A worker started before its dependencies: it waits for a broker that does not answer
yet (it crashed on Faust's first connection), and it still stops on SIGTERM while it
waits for Redis with an outcome record in hand (Faust waited for the outcomes agent,
blocked on the runtime, and the worker ignored SIGINT and SIGTERM until kill -9)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import TansuProxy, first_roamings
from .kafka_io import http_get, metric_value, produce, read_topic, wait_for_metric

pytestmark = pytest.mark.integration

IN_HAND_MARK = "test: the outcomes agent holds a batch of"

_MARKING_WORKER = """
import os, sys

from moments.cli import main
from moments.outcomebatches import OutcomeBatches

handle = OutcomeBatches.__call__


async def marked(self, records):
    mark = f"{os.environ['TEST_IN_HAND_MARK']} {len(records)}"  # one write: one log line
    print(mark, file=sys.stderr, flush=True)
    return await handle(self, records)


OutcomeBatches.__call__ = marked
sys.exit(main(["worker"]))
"""
"""`moments worker` printing `IN_HAND_MARK` and the batch's size to stderr as its outcomes
agent is handed a batch, just before handling it (which waits for the runtime, so for
Redis): the moment from which a SIGTERM finds an event held, which nothing else shows."""


def marking_worker(settings: Settings, workdir: Path) -> WorkerProcess:
    """A worker (`_MARKING_WORKER`) that says when its outcomes agent holds a batch."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "marking_worker.py"
    script.write_text(_MARKING_WORKER)
    return WorkerProcess(
        settings,
        workdir / "worker.log",
        command=[sys.executable, str(script)],
        env={"TEST_IN_HAND_MARK": IN_HAND_MARK},
    )


async def test_sigterm_stops_a_worker_waiting_for_redis_with_an_outcome_in_hand(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nobody there
    port = free_port()
    settings = make_settings(redis_url=redis_url, metrics_port=port)
    await topics_for(settings)
    outcome = {
        "task_id": "90bd947c9fdac044a8b53075800c7701",
        "subscriber_id": "13800138001",
        "status": "accepted",
        "occurred_at": "2026-12-05T09:00:00+08:00",
    }
    await produce(settings, [("task_outcomes", "13800138001", outcome)])
    worker = marking_worker(settings, tmp_path / "worker")
    try:
        # Joined, fetched and handed to the outcomes agent, which waits for the runtime, so
        # for Redis (still away): a SIGTERM before it would leave no event held. A fixed
        # 4 s after the join used to stand for it (a fetch, `take_events`' 1 s).
        await worker.wait_for_log(re.escape(f"{IN_HAND_MARK} 1"), wait_s=90)
        assert http_get(port, "/readyz") == (
            503,
            f"fail: connecting to Redis ({redis_url}); moments_dependency_up and the log say "
            "why it waits\n",
        )
        os.killpg(worker.proc.pid, signal.SIGTERM)
        for _ in range(90):  # 45 s
            if worker.proc.poll() is not None:
                break
            await asyncio.sleep(0.5)
        assert worker.proc.poll() is not None, (
            "still running 45 s after SIGTERM:\n" + worker.log()[-3000:]
        )
        assert "an agent still held an event after 10 s" in worker.log()
    finally:
        worker.stop()


KAFKA = {"dependency": "kafka"}


async def waiting_for_kafka(port: int) -> tuple[int, str] | None:
    """A worker's /readyz answer once it says it waits for Kafka (or the last one, after
    30 s)."""
    ready = None
    for _ in range(120):
        ready = http_get(port, "/readyz")
        if ready is not None and "waiting for Kafka" in ready[1]:
            break
        await asyncio.sleep(0.25)
    return ready


async def test_a_worker_started_before_its_broker_waits_for_it(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    direct = make_settings()
    await topics_for(direct)
    proxy = TansuProxy(kafka_bootstrap, tmp_path / "proxy")  # not started: nothing answers
    address = proxy.address
    port = free_port()
    worker = start_worker(make_settings(kafka_bootstrap=address, metrics_port=port))
    try:
        ready = await waiting_for_kafka(port)
        assert ready == (
            503,
            f"fail: waiting for Kafka at {address} (moments_dependency_up is 0; "
            "check the broker and MOMENTS_KAFKA_BOOTSTRAP)\n",
        ), worker.log()[-2000:]
        assert await metric_value(port, "moments_dependency_up", KAFKA) == 0
        # Tried again and again (back-off from 0.1 s: 0.1, 0.2, 0.4, 0.8, 1.6 s) and still
        # running: it used to exit 1 at once. A fixed 5 s stood for it.
        await wait_for_metric(port, "moments_dependency_errors_total", KAFKA, 5, wait_s=60)
        assert worker.proc.poll() is None, worker.log()[-3000:]
        answer = http_get(port, "/livez")
        assert answer is not None
        assert answer[0] == 200, answer

        proxy.start()
        roamings = first_roamings(0, 2, daytime_zone(dt.datetime.now(dt.UTC)))
        await produce(direct, roamings)
        await read_topic(direct, "tasks", count=2, wait_s=90)
        assert "kafka is back after" in worker.log()
        worker.stop()  # before the proxy: a worker cut off takes its bounded waits to stop
    finally:
        proxy.stop()


async def test_a_rules_change_while_it_waits_for_kafka_is_loaded_once_it_starts(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """The reload check took the files' state once the worker had started: a file changed
    while it waited for the broker counted as loaded, and the old rules stayed in force
    (re-check)."""
    from tests.integration.test_windows_and_reload import RULE

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(id="before", type="t_before"))
    await topics_for(make_settings())
    proxy = TansuProxy(kafka_bootstrap, tmp_path / "proxy")  # not started: nothing answers
    port = free_port()
    settings = make_settings(
        kafka_bootstrap=proxy.address, metrics_port=port, rules=rules, rules_reload_seconds=0.5
    )
    worker = start_worker(settings)
    try:
        ready = await waiting_for_kafka(port)  # the rules read by then
        assert ready is not None, worker.log()[-2000:]
        assert "waiting for Kafka" in ready[1], (ready, worker.log()[-2000:])
        rules.write_text(RULE.format(id="after", type="t_after"))
        proxy.start()
        labels = {"rule_id": "after", "version": "1", "mode": "live"}
        assert await wait_for_metric(port, "moments_rule_info", labels, 1, wait_s=90) == 1
        worker.stop()
    finally:
        proxy.stop()
