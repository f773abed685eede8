"""A withdrawals topic the broker refuses for good (an ACL) does not stop the worker: it
starts, detects and publishes tasks, while its re-drive timer counts the refusal
(`moments_timer_errors_total{step="withdrawals"}`), logs it with its fix and tries again
with back-off; the withdrawal owed in the Redis ledger goes out once the topic is
writable. Before, the refusal was raised out of the timer, which runs as the worker
starts: the worker exited with code 1 at every start, and no task went out."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from moments.embedded import free_port
from moments.enums import WithdrawReason
from moments.models import Channel, TaskWithdrawal
from moments.sample import daytime_zone
from moments.settings import Settings
from sinks.ledger import TaskLedger

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings
from .kafka_io import metric_value, produce, read_topic, values, wait_for_metric
from .test_faults import assert_one_task_each

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 10
OWED = "5e" * 16
"""The task whose withdrawal is owed: its ledger entry is gone (lapsed), so it goes out."""

_REFUSING_WORKER = """
import os, sys
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

import sinks.steps
from moments.cli import main

withdrawals = os.environ["TEST_WITHDRAWALS_TOPIC"]
refusing = Path(os.environ["TEST_REFUSING"])
send = AIOKafkaProducer.send


async def refused_while_flagged(self, topic, *args, **kwargs):
    if topic == withdrawals and refusing.exists():  # an ACL without Write on the topic
        raise TopicAuthorizationFailedError()
    return await send(self, topic, *args, **kwargs)


AIOKafkaProducer.send = refused_while_flagged
sinks.steps.MAX_DELAY_S = 10.0  # tried again within 10 s, not 5 min: the test's wait
sys.exit(main(["worker"]))
"""


async def owe_withdrawal(settings: Settings) -> None:
    """A withdrawal owed in the ledger, as a re-drive that dropped its task `opt_out` and
    whose publish was refused left it."""
    now = dt.datetime.now(dt.UTC)
    made = TaskWithdrawal(
        task_id=OWED,
        subscriber_id="13800138077",
        channel=Channel.SMS,
        moment_type="first_international_roaming",
        reason=WithdrawReason.OPT_OUT,
        occurred_at=now,
        withdrawn_at=now,
        expires_at=now + dt.timedelta(hours=6),
    )
    client = Redis.from_url(settings.redis_url)
    try:
        ledger = TaskLedger(client, settings.redis_prefix, 3600)
        await ledger.owe_withdrawals([(OWED, orjson.dumps(made.model_dump(mode="json")))])
    finally:
        await client.aclose()


async def test_the_worker_publishes_tasks_while_the_withdrawals_topic_refuses(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    settings = make_settings(metrics_port=free_port())
    await topics_for(settings)
    await owe_withdrawal(settings)
    await asyncio.sleep(settings.pending_redrive_seconds + 0.5)  # owed past the grace
    await produce(settings, first_roamings(0, WAVE, zone))
    refusing = tmp_path / "refusing"
    refusing.touch()
    script = tmp_path / "refusing_worker.py"
    script.write_text(_REFUSING_WORKER)
    env = {
        "TEST_WITHDRAWALS_TOPIC": settings.topic("task_withdrawals"),
        "TEST_REFUSING": str(refusing),
    }
    worker = WorkerProcess(
        settings, tmp_path / "worker.log", command=[sys.executable, str(script)], env=env
    )
    try:
        await worker.wait_for_log("the re-drive timer failed while publishing withdrawals owed")
        tasks = await read_topic(settings, "tasks", count=WAVE, wait_s=90)
        assert_one_task_each(values(tasks), WAVE, worker.log())
        port = settings.metrics_port
        labels = {"step": "withdrawals"}
        assert await wait_for_metric(port, "moments_timer_errors_total", labels, 1) >= 1
        log = worker.log()
        assert "grant it Write on the output topics" in log, log[-3000:]
        assert "nothing is lost" in log, log[-3000:]
        assert worker.proc.poll() is None, log[-3000:]

        refusing.unlink()  # Write granted
        notices = await read_topic(settings, "task_withdrawals", count=1, wait_s=60, settle=3)
        assert [(n["task_id"], n["reason"]) for n in values(notices)] == [(OWED, "opt_out")]
        await worker.wait_for_log("went through publishing withdrawals owed again")
        errors = await metric_value(port, "moments_timer_errors_total", labels)
        assert errors >= 1
        assert await metric_value(port, "moments_timer_errors_total", {"step": "release"}) == 0
    finally:
        worker.stop()
