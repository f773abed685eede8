"""A task the producer refuses for good, or a bug in the produce path, stops the worker
with a line naming the fix; its batch's offsets are not committed, so the next worker
publishes every task once.

The broker refusing a task (a record over the tasks topic's max.message.bytes) was
retried with back-off for ever, as if the broker were away: no task, no crash, every
partition held, `moments_dependency_up{dependency="kafka"}` 0. Commit 67af451 (headers
as a tuple, which aiokafka refuses with a TypeError) published no task either; the
worker crashed, but its log did not say that it was a bug rather than an outage."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings
from .kafka_io import produce, read_topic, values
from .test_faults import assert_one_task_each

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 20
UNTIL_EXIT_S = 120.0
"""Longest wait for the faulty worker to join, read, fail and exit (Tansu's join takes
the rebalance timeout)."""

_FAULTY_WORKER = """
import os, sys

from aiokafka import AIOKafkaProducer
from aiokafka.errors import RecordTooLargeError

import sinks.dispatch
from moments.cli import main

tasks = os.environ["TEST_TASKS_TOPIC"]
if os.environ["TEST_FAULT"] == "refused":
    send = AIOKafkaProducer.send

    async def refusing(self, topic, *args, **kwargs):
        if topic == tasks:  # as aiokafka's own max_request_size check says it
            raise RecordTooLargeError(
                "The message is 2097152 bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size "
                "configuration"
            )
        return await send(self, topic, *args, **kwargs)

    AIOKafkaProducer.send = refusing
else:  # commit 67af451: the task sink's headers as a tuple
    produce_all = sinks.dispatch.produce_all

    async def tuple_headers(producer, messages):
        await produce_all(producer, [(t, k, v, tuple(h or ())) for t, k, v, h in messages])

    sinks.dispatch.produce_all = tuple_headers
sys.exit(main(["worker"]))
"""

SAID = {
    "refused": (
        "kafka refused while publishing tasks: RecordTooLargeError",
        "raise the topic's max.message.bytes",
    ),
    "bug": (
        "TypeError: Expected list, got tuple",
        "moments: not retried while publishing tasks: not a kafka outage: a bug in moments",
    ),
}


@pytest.mark.parametrize("fault", sorted(SAID))
async def test_the_worker_stops_naming_the_fix_and_its_successor_sends_each_task_once(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
    fault: str,
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    settings = make_settings()
    await topics_for(settings)
    await produce(settings, first_roamings(0, WAVE, zone))
    script = tmp_path / "faulty_worker.py"
    script.write_text(_FAULTY_WORKER)
    env = {"TEST_FAULT": fault, "TEST_TASKS_TOPIC": settings.topic("tasks")}
    faulty = WorkerProcess(
        settings, tmp_path / "faulty.log", command=[sys.executable, str(script)], env=env
    )
    try:
        code = await asyncio.to_thread(faulty.proc.wait, UNTIL_EXIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {UNTIL_EXIT_S:.0f} s on:\n{faulty.log()[-3000:]}")
    finally:
        faulty.stop()
    log = faulty.log()
    assert code == 1, log[-3000:]  # Faust's crash: not 2 (a setting) nor 70 (a stop overdue)
    for words in SAID[fault]:
        assert words in log, log[-3000:]
    assert "kafka unavailable while publishing tasks" not in log  # never taken for an outage

    worker = start_worker(settings)
    tasks = await read_topic(settings, "tasks", count=WAVE, wait_s=90, settle=3)
    assert_one_task_each(values(tasks), WAVE, worker.log())
