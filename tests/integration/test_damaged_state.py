"""A damaged subscriber record in the state changelog, met by a real worker: mended where
it fails (docs/architecture.md, "State"), the subscriber's events applied, counted and
logged masked, the worker going on. Before, the batch that read it raised out of the
batch loop: the worker stopped, and restarted it read the same batch again. A record a
newer version wrote still stops it (docs/operations.md, "Rolling back")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from aiokafka import AIOKafkaProducer

from moments.connections import kafka_client_kwargs
from moments.embedded import free_port
from moments.partitioning import partition_of
from moments.settings import Settings
from moments.state import SubscriberState
from moments.stateview import changelog_topic
from moments.statezip import pack
from moments.topics import ensure_topics

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import produce, read_topic, values, wait_for_metric
from .test_worker import roaming

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LI, WANG = "13800138001", "13900139002"


def errors(log: str) -> str:
    """The log's error lines (and what follows each: a traceback), for a failed assert."""
    lines = log.splitlines()
    found = [n for n, line in enumerate(lines) if "[ERROR]" in line or "[CRITICAL]" in line]
    return "\n".join("\n".join(lines[n : n + 12]) for n in found[:3]) or log[-3000:]


async def put_records(settings: Settings, records: dict[str, bytes]) -> None:
    """Write these subscribers' records to the state changelog, as a worker restores them."""
    topic = changelog_topic(settings)
    kwargs = kafka_client_kwargs(settings)
    await ensure_topics(
        settings.kafka_bootstrap, {topic: settings.partitions}, [topic], client_kwargs=kwargs
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kwargs)
    await producer.start()
    try:
        for sub, value in records.items():
            key = sub.encode()
            where = partition_of(key, settings.partitions)
            await producer.send_and_wait(topic, value, key=key, partition=where)
    finally:
        await producer.stop()


async def test_damaged_records_are_mended_and_the_worker_goes_on(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    any_hour_rules: Path,
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port, rules=any_hour_rules)
    await topics_for(settings)
    # Li's bytes hold no record; Wang's offsets are a list (read before an event's rules).
    await put_records(
        settings, {LI: b"\x00\x01garbage", WANG: pack(orjson.dumps({"o": [1], "r": {}}))}
    )
    worker = start_worker(settings)
    await produce(settings, [roaming("r1", LI, "JP"), roaming("r2", WANG, "JP")])
    tasks = values(await read_topic(settings, "tasks", count=2, wait_s=90, settle=3))
    assert sorted(t["subscriber_id"] for t in tasks) == [LI, WANG], errors(worker.log())
    for kind in ("unreadable", "malformed"):
        await wait_for_metric(port, "moments_state_records_damaged_total", {"kind": kind}, 1)
    assert worker.proc.poll() is None, errors(worker.log())
    log = worker.log()
    changelog = changelog_topic(settings)
    roamings = settings.topic("roaming")
    offsets: dict[int, int] = {}
    for sub, masked, said in (
        (LI, "138****8001", "held no record"),
        (WANG, "139****9002", "had fields of shapes the detector never writes (offsets)"),
    ):
        # Where the record is, and the event that met it (the subscriber's only one).
        where = partition_of(sub.encode(), settings.partitions)
        offset = offsets[where] = offsets.get(where, -1) + 1
        assert (
            f"subscriber {masked}: the state record in {changelog}[{where}], met by the event "
            f"at {roamings}[{where}] offset={offset}, {said}"
        ) in log, log[-3000:]
    assert LI not in log
    assert WANG not in log


async def test_a_record_a_newer_version_wrote_stops_the_worker(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    any_hour_rules: Path,
) -> None:
    """Not reset: the worker stops, naming the fix, and nothing of the batch is published."""
    settings = make_settings(metrics_port=0, rules=any_hour_rules)
    await topics_for(settings)
    samples: list[bytes | bytearray | memoryview[int]] = [
        SubscriberState(watermark=i, recent={"u": [f"{i:010x}"]}).to_json() for i in range(400)
    ]
    newer = zstandard.train_dictionary(1024, samples, dict_id=3)
    compressor = zstandard.ZstdCompressor(dict_data=newer, write_dict_id=True)
    await put_records(settings, {LI: compressor.compress(samples[0])})
    worker = start_worker(settings)
    await produce(settings, [roaming("r1", LI, "JP")])
    await worker.wait_for_log("compressed with dictionary 3", wait_s=90)
    assert worker.proc.wait(timeout=60) != 0
    assert values(await read_topic(settings, "tasks", count=1, wait_s=3)) == []
