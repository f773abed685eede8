"""Events from a producer that does not partition by murmur2 of the key: counted in
moments_events_misplaced_total and warned about in the log, and still detected."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import free_port
from moments.partitioning import partition_of
from moments.sample import daytime_zone
from moments.settings import Settings

from .conftest import MakeSettings, WorkerProcess, settings_env
from .fault_tools import STALL_MARK, first_roamings, stalling_worker
from .kafka_io import (
    metric_value,
    produce,
    read_topic,
    values,
    wait_committed,
    wait_for_metric,
)

pytestmark = pytest.mark.integration

WAVE = 40
MISPLACED = "moments_events_misplaced_total"


def crc32_partitioner(key: bytes, every: list[int], available: list[int]) -> int:
    """librdkafka's default for a keyed record (consistent_random): CRC32, not murmur2."""
    return every[zlib.crc32(key) % len(every)]


async def test_events_off_their_key_partition_are_counted_and_still_detected(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)

    await produce(settings, first_roamings(0, WAVE, zone))  # aiokafka: murmur2
    await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, WAVE)
    assert await metric_value(port, MISPLACED, {"event_type": "roaming"}) == 0
    assert "does not hash to" not in worker.log()

    crc = first_roamings(WAVE, WAVE, zone)
    await produce(settings, crc, partitioner=crc32_partitioner)
    off = sum(
        crc32_partitioner(k.encode(), [0, 1], [0, 1]) != partition_of(k.encode(), 2)
        for _, k, _ in crc
        if k is not None
    )
    assert 0 < off < WAVE
    await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 2 * WAVE)
    assert await metric_value(port, MISPLACED, {"event_type": "roaming"}) == off
    assert await metric_value(port, MISPLACED, {"event_type": "usage"}) == 0
    tasks = await read_topic(settings, "tasks", count=2 * WAVE, wait_s=60, settle=2)
    assert len({t["subscriber_id"] for t in values(tasks)}) == 2 * WAVE  # none refused
    log = worker.log()
    assert "partitioner=murmur2_random" in log, log[-3000:]
    assert f"since the worker started: {settings.topic('roaming')} " in log  # once a minute
    worker.stop()


async def test_a_worker_configured_for_fewer_partitions_than_its_input_refuses_to_start(
    make_settings: MakeSettings, topics_for: Callable[[Settings], Any]
) -> None:
    """It crashed on its first changelog write to a partition the changelog lacks
    (aiokafka's "Unrecognized partition"); now it exits 2 before reading, naming the fix."""
    await topics_for(make_settings(partitions=4))
    settings = make_settings(partitions=2)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "moments", "worker"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "the input topics have 4 partitions and MOMENTS_PARTITIONS is 2" in done.stderr
    assert "set MOMENTS_PARTITIONS=4" in done.stderr


async def test_a_tombstone_off_its_key_partition_is_a_dead_letter_and_erases_nothing(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """It went to the changelog of its own partition, so the subscriber's record on the
    right one stayed, and came back after a restart (security re-check)."""
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)
    sub = "13812345678"
    right = partition_of(sub.encode(), settings.partitions)

    def wrong_partition(key: bytes, every: list[int], available: list[int]) -> int:
        return (right + 1) % len(every)

    profile = {
        "event_id": "p1",
        "subscriber_id": sub,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "tier": "gold",
    }
    await produce(settings, [("profile", sub, profile)])
    await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1)
    await produce(settings, [("profile", sub, None)], partitioner=wrong_partition)
    rejected = {"event_type": "profile", "reason": "misplaced"}
    await wait_for_metric(port, "moments_events_rejected_total", rejected, 1)
    [letter] = await read_topic(settings, "deadletter", count=1, wait_s=30, settle=1)
    assert letter.value is None or letter.value == b""
    assert dict(letter.headers)["__dlq.errors.reason"] == b"misplaced"
    worker.stop()


def off_partition(key: bytes, every: list[int], available: list[int]) -> int:
    """Every keyed record on a partition murmur2 does not name (two partitions)."""
    return every[1 - partition_of(key, len(every))]


async def test_misplaced_events_read_again_after_a_crash_are_not_counted_twice(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """A worker killed (-9) once a batch's output was durable and before its offsets were
    committed had counted the batch's misplaced events; its successor reads them again
    and skips them as already applied (moments_events_replayed_total): it counts them in
    moments_events_total, which counts reads, but not as misplaced again (it did, and a
    restart a few minutes after a one-off burst fired MomentsEventsMisplaced). An
    unreadable record has no state to remember it: it is refused, and counted, again.
    docs/operations.md, "Counters after a restart"."""
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    records = first_roamings(0, WAVE, zone)
    key = records[-1][1]
    assert key is not None
    # Just before the last record, on its partition: in the batch that blocks.
    unreadable = ("roaming", key, b'{"event_id": "cut-short", ')
    records.insert(-1, unreadable)
    total = WAVE + 1
    rejected = {"event_type": "roaming", "reason": "invalid_json"}
    command, env = stalling_worker(key, "durable", tmp_path / "stall")
    first = WorkerProcess(settings, tmp_path / "first.log", command=command, env=env)
    try:
        await produce(settings, records, partitioner=off_partition)
        # Its loop blocks once the batch of the last record is durable, before the commit;
        # /metrics answers from its own thread meanwhile.
        await wait_for_metric(port, MISPLACED, {"event_type": "roaming"}, total)
        deadline = time.monotonic() + 60
        while STALL_MARK not in first.log():
            assert time.monotonic() < deadline, first.log()[-3000:]
            await asyncio.sleep(0.2)
        assert await metric_value(port, MISPLACED, {"event_type": "roaming"}) == total
        assert await metric_value(port, "moments_events_rejected_total", rejected) == 1
        assert await metric_value(port, "moments_events_replayed_total") == 0
    finally:
        first.kill()
        first.stop()

    second = start_worker(settings)
    await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 1)
    await wait_committed(port, settings.topic("roaming"), total)
    read = await metric_value(port, "moments_events_total", {"event_type": "roaming"})
    misplaced = await metric_value(port, MISPLACED, {"event_type": "roaming"})
    replayed = await metric_value(port, "moments_events_replayed_total")
    # Read again: the uncommitted records (the blocked batch at least), all misplaced;
    # the events among them already applied, skipped by the state, not counted as
    # misplaced again; the unreadable one refused, and counted, again.
    assert 1 < read <= total, second.log()[-3000:]
    assert replayed == read - 1
    assert misplaced == 1
    assert await metric_value(port, "moments_events_rejected_total", rejected) == 1
    letters = await read_topic(settings, "deadletter", count=2, wait_s=30)
    assert len(letters) == 2  # the dead letter is sent again too
    tasks = await read_topic(settings, "tasks", count=WAVE, wait_s=30, settle=3)
    assert len(values(tasks)) == WAVE  # one each: the re-read made none
    assert len({t["subscriber_id"] for t in values(tasks)}) == WAVE
