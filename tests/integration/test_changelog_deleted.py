"""The state changelog deleted under a running worker is a missing topic, not Kafka down.

Its write is answered UNKNOWN_TOPIC_OR_PARTITION (aiokafka raises it from `send_batch`
once the broker's metadata no longer has the topic). It was waited out as a broker away:
`moments_dependency_up{dependency="kafka"}` 0 and `kafka unavailable while writing the
state changelog` in the log, though the broker answered. Now, from the fifth such answer
in a row, the batch still waits (its state goes nowhere else: its offsets wait, nothing
is lost) but Kafka reads up, `moments_topic_missing{topic="<changelog>"}` counts the held
write, the `sinks.missingtopics` line says how to make the changelog again, and the write
goes through once the topic answers.

Tansu cannot make that answer: it accepts a produce to a deleted topic and creates it
again (with 4 partitions, uncompacted; docs/tansu.md), even when the Metadata requests do
not ask it to. So the worker runs against Tansu with its `send_batch` answering as
Apache Kafka does for the deleted changelog while a flag file exists."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.sample import daytime_zone
from moments.settings import Settings
from moments.stateview import changelog_topic

from .conftest import MakeSettings, WorkerProcess
from .fault_tools import first_roamings
from .kafka_io import metric_value, produce, read_topic, values, wait_for_metric
from .test_faults import assert_one_task_each

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVE = 5

_DELETED_CHANGELOG_WORKER = """
import os, sys
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from moments.cli import main

changelog = os.environ["TEST_CHANGELOG"]
deleted = Path(os.environ["TEST_DELETED"])
send_batch = AIOKafkaProducer.send_batch


async def unknown_while_deleted(self, batch, topic, *, partition):
    if topic == changelog and deleted.exists():  # the broker's metadata lacks the topic
        raise UnknownTopicOrPartitionError()
    return await send_batch(self, batch, topic, partition=partition)


AIOKafkaProducer.send_batch = unknown_while_deleted
sys.exit(main(["worker"]))
"""


async def test_a_deleted_changelog_is_held_as_a_missing_topic_not_kafka_down(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    settings = make_settings(metrics_port=free_port())
    await topics_for(settings)
    changelog = changelog_topic(settings)
    deleted = tmp_path / "deleted"
    script = tmp_path / "deleted_changelog_worker.py"
    script.write_text(_DELETED_CHANGELOG_WORKER)
    env = {"TEST_CHANGELOG": changelog, "TEST_DELETED": str(deleted)}
    worker = WorkerProcess(
        settings, tmp_path / "worker.log", command=[sys.executable, str(script)], env=env
    )
    port = settings.metrics_port
    try:
        await produce(settings, first_roamings(0, WAVE, zone))
        tasks = await read_topic(settings, "tasks", count=WAVE, wait_s=90)
        assert_one_task_each(values(tasks), WAVE, worker.log())

        deleted.touch()  # the changelog deleted under the running worker
        await produce(settings, first_roamings(WAVE, WAVE, zone))
        held = {"topic": changelog}
        assert await wait_for_metric(port, "moments_topic_missing", held, 1) == 1
        kafka = {"dependency": "kafka"}
        assert await metric_value(port, "moments_dependency_up", kafka) == 1
        await worker.wait_for_log(
            f"{changelog}: the topic is missing on the broker while writing the state changelog"
        )
        log = worker.log()
        assert "cleanup.policy=compact" in log, log[-3000:]
        assert f"--partitions {settings.partitions} " in log, log[-3000:]

        deleted.unlink()  # created again
        await worker.wait_for_log(f"the topic {changelog} is there again after")
        assert await metric_value(port, "moments_topic_missing", held) == 0
        assert await metric_value(port, "moments_dependency_up", kafka) == 1
        # The held batch is counted once its state is written: nothing was dropped.
        roaming = {"event_type": "roaming"}
        assert await wait_for_metric(port, "moments_events_total", roaming, 2 * WAVE) == 2 * WAVE
        assert worker.proc.poll() is None, worker.log()[-3000:]
    finally:
        worker.stop()
