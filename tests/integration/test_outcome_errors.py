"""An error that is not an outage in the task outcomes' path stops the worker, naming the
fix, before the outcomes' offsets are committed: the next worker handles them.

The outcomes agent is a Faust agent: an error raised in it (a retry's claim hitting a bug,
the dead letters' topic refusing the write) crashed only the agent, which Faust's
supervisor restarted while the worker ran on; the batch's events were acknowledged by
`take_events` as the error left it, and committed. The unreachable outcome's retry was
never queued, the bad outcome's dead letter never written, and nothing said the worker
had lost them (at-least-once in, nothing lost). The input events' batch loop stops the
worker instead (tests/integration/test_produce_refused.py).

A stop under a batch still waiting on Redis is the same: Faust cancels the agent, the
batch is acknowledged as it leaves `take_events`, and the stop's last commit took it."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from moments.ack import ack_task, build_outcome, write_outcome
from moments.embedded import RedisServer, free_port
from moments.models import OutcomeStatus, retry_id
from moments.sample import daytime_zone
from moments.settings import Settings
from sinks.ledger import TaskLedger

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings, freeze, thaw
from .kafka_io import produce, read_topic, values

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNTIL_FAILED_S = 120.0
"""Longest wait for the faulty worker to join, read the outcomes and fail (Tansu's join
takes the rebalance timeout)."""

_FAULTY_WORKER = """
import os, sys

from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

import sinks.ledger
from moments.cli import main

if os.environ["TEST_FAULT"] == "refused":  # an ACL: no Write on the dead letters' topic
    deadletters = os.environ["TEST_DEADLETTER_TOPIC"]
    send = AIOKafkaProducer.send

    async def refusing(self, topic, *args, **kwargs):
        if topic == deadletters:
            raise TopicAuthorizationFailedError()
        return await send(self, topic, *args, **kwargs)

    AIOKafkaProducer.send = refusing
else:  # a bug in the retry's claim (the only claim: this worker reads no event)

    async def broken_claim(self, items, again=(), call=None):
        raise TypeError("a bug put in by the test")

    sinks.ledger.TaskLedger.claim = broken_claim
sys.exit(main(["worker"]))
"""

SAID = {
    "refused": (
        "TopicAuthorizationFailedError",
        "moments: not retried while sending dead letters: not a kafka outage",
        "grant it Write on the output topics",
    ),
    "bug": (
        "TypeError: a bug put in by the test",
        "moments: not retried while claiming task ids: not a redis outage: a bug in moments",
    ),
}
STOPPED = "the outcomes agent stopped the worker"


async def retry_claimed(settings: Settings, task_id: str, wait_s: float = 60.0) -> bool:
    """Whether the ledger has the first retry of `task_id` (claimed when the unreachable
    outcome is handled) within `wait_s`."""
    redis = Redis.from_url(settings.redis_url)
    try:
        ledger = TaskLedger(redis, settings.redis_prefix, settings.ledger_ttl_seconds)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if await ledger.get(retry_id(task_id, 1)) is not None:
                return True
            await asyncio.sleep(0.3)
        return False
    finally:
        await redis.aclose()


@pytest.mark.parametrize("fault", sorted(SAID))
async def test_the_worker_stops_and_its_successor_handles_the_outcomes(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
    fault: str,
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    settings = make_settings()
    await topics_for(settings)
    first = start_worker(settings)
    await produce(settings, first_roamings(0, 1, zone))
    (task,) = values(await read_topic(settings, "tasks", count=1, wait_s=90))
    task_id, subscriber = str(task["task_id"]), str(task["subscriber_id"])
    first.stop()

    # One batch: an outcome that is no JSON (a dead letter) and one that queues a retry.
    await produce(settings, [("task_outcomes", subscriber, b"not json")])
    await ack_task(settings, task_id, OutcomeStatus.UNREACHABLE, subscriber_id=subscriber)
    script = tmp_path / "faulty_worker.py"
    script.write_text(_FAULTY_WORKER)
    env = {"TEST_FAULT": fault, "TEST_DEADLETTER_TOPIC": settings.topic("deadletter")}
    faulty = WorkerProcess(
        settings, tmp_path / "faulty.log", command=[sys.executable, str(script)], env=env
    )
    try:
        # Stopped by itself; or (as before) the agent crashed and the worker ran on.
        deadline = time.monotonic() + UNTIL_FAILED_S
        while faulty.proc.poll() is None and not re.search("Crashed reason", faulty.log()):
            if time.monotonic() > deadline:
                pytest.fail(f"no failure in {UNTIL_FAILED_S:.0f} s:\n{faulty.log()[-3000:]}")
            await asyncio.sleep(0.5)
        with_exit = await asyncio.to_thread(_exit_code, faulty.proc, 20.0)
    finally:
        faulty.stop()
    log = faulty.log()

    successor = start_worker(settings)
    assert await retry_claimed(settings, task_id), successor.log()[-3000:]
    dead = await read_topic(settings, "deadletter", count=1, wait_s=60, settle=3)
    assert [r.key for r in dead] == [subscriber.encode()], successor.log()[-3000:]

    assert with_exit == 1, log[-3000:]  # Faust's crash: not 2 (a setting) nor 70 (overdue)
    for words in (*SAID[fault], STOPPED):
        assert words in log, log[-3000:]


def _exit_code(proc: subprocess.Popen[bytes], wait_s: float) -> int | None:
    """The process's exit code once it ended, None if it still runs after `wait_s`."""
    try:
        return proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        return None


async def test_a_stop_under_an_outcome_waiting_on_redis_leaves_it_for_the_next_worker(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """Redis frozen while an unreachable outcome is read; SIGTERM, then Redis thawed: the
    stopped worker has not committed the outcome, and the next one queues its retry."""
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    server = RedisServer(tmp_path / "redis", port=free_port())
    with server:
        settings = make_settings(redis_url=server.url)
        await topics_for(settings)
        first = start_worker(settings)
        await produce(settings, first_roamings(0, 1, zone))
        (task,) = values(await read_topic(settings, "tasks", count=1, wait_s=90))
        task_id, subscriber = str(task["task_id"]), str(task["subscriber_id"])

        freeze(server)
        try:
            outcome = build_outcome(task_id, subscriber, OutcomeStatus.UNREACHABLE, None, None)
            await write_outcome(settings, outcome)
            await first.wait_for_log("redis unavailable while reading a sent task", wait_s=60)
            first.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(_exit_code, first.proc, 40.0)
        finally:
            thaw(server)
        assert code is not None, first.log()[-3000:]

        successor = start_worker(settings)
        assert await retry_claimed(settings, task_id), successor.log()[-3000:]
