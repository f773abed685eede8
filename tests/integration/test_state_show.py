"""`moments state show`: a subscriber's record, compressed in the changelog a real worker
wrote, printed readable; an unknown subscriber is said to be missing."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from moments.embedded import free_port
from moments.partitioning import partition_of
from moments.settings import Settings
from moments.stateview import latest_records, readable
from moments.statezip import ZSTD_MAGIC

from .conftest import MakeSettings, WorkerProcess, settings_env
from .kafka_io import produce, wait_for_metric
from .test_partitioning import crc32_partitioner

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LI, WANG, NOBODY = "13800138001", "13900139002", "13700137003"
ZHAO = next(
    s
    for s in (str(13_600_136_000 + n) for n in range(100))
    if crc32_partitioner(s.encode(), [0, 1], [0, 1]) != partition_of(s.encode(), 2)
)
"""A subscriber whose events come from a producer with librdkafka's partitioner."""


def _usage(event_id: str, sub: str) -> tuple[str, str, dict[str, Any]]:
    return (
        "usage",
        sub,
        {
            "event_id": event_id,
            "subscriber_id": sub,
            "occurred_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "region": "NJ",
            "kind": "data",
            "quantity": 120,
        },
    )


async def test_a_stored_record_is_shown_readable_and_a_missing_one_named(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)
    profile = {
        "event_id": "crm-1",
        "subscriber_id": LI,
        "occurred_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "tier": "gold",
        "timezone": "Asia/Shanghai",
    }
    await produce(settings, [("profile", LI, profile)])
    await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1)
    await produce(settings, [_usage("u1", LI), _usage("u2", LI), _usage("u3", WANG)])
    await wait_for_metric(port, "moments_events_total", {"event_type": "usage"}, 3)

    await produce(settings, [_usage("u4", ZHAO)], partitioner=crc32_partitioner)
    await wait_for_metric(port, "moments_events_total", {"event_type": "usage"}, 4)

    found = await latest_records(settings, [LI, NOBODY, ZHAO])
    assert found[NOBODY] is None
    stored = found[LI]
    assert stored is not None, worker.log()[-3000:]
    # What the changelog holds is compressed: a console tool would show binary.
    assert stored.value[:4] == ZSTD_MAGIC
    assert stored.partition == stored.hashed == partition_of(LI.encode(), 2)
    misplaced = found[ZHAO]  # found where it is, not only where murmur2 says
    assert misplaced is not None
    assert misplaced.partition == crc32_partitioner(ZHAO.encode(), [0, 1], [0, 1])
    assert misplaced.hashed == partition_of(ZHAO.encode(), 2) != misplaced.partition

    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "moments", "state", "show", LI, WANG, NOBODY, ZHAO, "--json"],
        env=settings_env(settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 1, shown.stderr.decode()  # one of them has no record
    lines = [orjson.loads(line) for line in shown.stdout.splitlines()]
    by_sub = {line["subscriber_id"]: line["record"] for line in lines}
    assert by_sub[NOBODY] is None
    assert by_sub[LI]["profile"]["tier"] == "gold"
    # two usage events applied (offsets 0 and 1 of its partition)
    assert by_sub[LI]["offsets"][f"u{stored.partition}"] >= 1
    assert by_sub[WANG]["profile"] == {}
    assert by_sub[LI]["_stored_bytes"] < by_sub[LI]["_json_bytes"]
    assert f"u{misplaced.partition}" in by_sub[ZHAO]["offsets"]  # its usage event applied
    partitions = {line["subscriber_id"]: line["partition"] for line in lines}
    assert partitions == {
        LI: stored.partition,
        WANG: partition_of(WANG.encode(), 2),
        NOBODY: None,
        ZHAO: misplaced.partition,
    }
    assert f"no record for {NOBODY}" in shown.stderr.decode()
    assert f"{ZHAO} is on partition {misplaced.partition}, not {misplaced.hashed}" in (
        shown.stderr.decode()
    )
    worker.stop()


async def test_a_record_in_the_tail_of_a_written_batch_is_found(
    make_settings: MakeSettings,
) -> None:
    """A worker writes a batch's changelog records together; Tansu reports the partition's
    end as the batch's first offset plus one, and a reader stopping there missed the rest."""
    from moments.producer import start_producer
    from moments.state import SubscriberState
    from moments.stateview import changelog_topic
    from moments.topics import ensure_topics
    from sinks.base import produce_to_partitions

    settings = make_settings()
    topic = changelog_topic(settings)
    await ensure_topics(settings.kafka_bootstrap, {topic: 1})
    subs = [str(13_500_135_000 + n) for n in range(5)]
    records = []
    for n, sub in enumerate(subs):
        state = SubscriberState(watermark=1_700_000_000 + n)
        records.append((0, sub.encode(), state.to_bytes()))
    producer = await start_producer(settings)
    try:
        await produce_to_partitions(producer, topic, records)
    finally:
        await producer.stop()
    found = await latest_records(settings, subs)
    assert {sub: s is not None for sub, s in found.items()} == dict.fromkeys(subs, True)
    last = found[subs[-1]]
    assert last is not None
    assert readable(last.value)["watermark"] == 1_700_000_004


async def test_a_stale_record_after_a_newer_one_is_not_what_is_shown(
    make_settings: MakeSettings,
) -> None:
    """A previous owner's write (generation 3) that landed after the next owner's
    (generation 4): `state show` prints the record a restore keeps, the newer one."""
    from moments.producer import start_producer
    from moments.stateview import changelog_topic
    from moments.topics import ensure_topics

    settings = make_settings()
    topic = changelog_topic(settings)
    await ensure_topics(settings.kafka_bootstrap, {topic: 1})
    sub = "13500136000"
    newer, stale = b'{"o":{},"r":{},"w":1700000009}', b'{"o":{},"r":{},"w":1700000001}'
    producer = await start_producer(settings)
    try:
        for value, stamp in ((newer, b"4"), (stale, b"3")):
            await producer.send_and_wait(
                topic, value, key=sub.encode(), partition=0, headers=[("moments-stamp", stamp)]
            )
    finally:
        await producer.stop()
    found = (await latest_records(settings, [sub]))[sub]
    assert found is not None
    assert readable(found.value)["watermark"] == 1_700_000_009
