"""The state changelog read in bulk (moments.restore) over the real broker: the newest
value per key, deletions kept as such, and the end offset every value was read up to."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from moments.connections import kafka_client_kwargs
from moments.embedded import free_port
from moments.partitioning import partition_of
from moments.restore import read_changelog
from moments.settings import Settings
from moments.topics import ensure_topics
from sinks.base import produce_to_partitions

from .conftest import WorkerProcess
from .kafka_io import metric_value, produce, read_topic, wait_for_metric
from .test_worker import FAUST_READS_CHANGELOG, _now, roaming

FAUST_READS_STANDBYS = "Starting standby partitions"
"""Faust's log line when it starts reading other workers' changelog partitions."""

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def changelog_producer(
    settings: Settings, partitions: int
) -> AsyncIterator[tuple[str, dict[str, Any], AIOKafkaProducer]]:
    """A compacted changelog topic of `partitions` for this test, and a producer to it:
    (topic, client arguments, producer)."""
    topic = f"{settings.app_id}-state-changelog"
    kwargs = kafka_client_kwargs(settings)
    await ensure_topics(
        settings.kafka_bootstrap, {topic: partitions}, [topic], client_kwargs=kwargs
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kwargs)
    await producer.start()
    try:
        yield topic, kwargs, producer
    finally:
        await producer.stop()


async def changelog_holds(
    settings: Settings, wanted: Mapping[bytes, bool], wait_s: float = 60.0
) -> None:
    """Until the subscribers' state changelog (every partition, read in bulk) holds a
    record of each key `wanted` maps to True and a deletion of each it maps to False: the
    write of the worker's last batch acknowledged by the broker."""
    topic = f"{settings.app_id}-subscribers-changelog"
    tps: dict[TP, int | None] = {TP(topic, p): None for p in range(settings.partitions)}
    kwargs = kafka_client_kwargs(settings)
    deadline = time.monotonic() + wait_s
    while True:
        read = await read_changelog(settings.bootstrap_servers, kwargs, tps)
        newest = {k: v for part in read.values() for k, v in part.values.items()}
        missing = [
            key
            for key, held in wanted.items()
            if key not in newest or (newest[key] is not None) != held
        ]
        if not missing:
            return
        assert time.monotonic() < deadline, f"{len(missing)} key(s) not in {topic}: {missing[:3]}"
        await asyncio.sleep(0.2)


STANDBY_READ = re.compile(
    r"Recovery message topic (?:TP|TopicPartition)\(topic='(?P<topic>[^']+)', "
    r"partition=(?P<partition>\d+)\) offset (?P<offset>\d+)"
)
"""Faust's DEBUG line for each changelog record its recovery reads: after a worker's own
recovery, only standby partitions are read so (its active ones it writes itself)."""


async def standbys_read(
    settings: Settings, workers: list[WorkerProcess], wait_s: float = 60.0
) -> None:
    """Until, for each partition of the subscribers' changelog, a worker's standby has read
    it to its end: every partition is another worker's standby, so each standby has read
    the other's changelog. The workers log at DEBUG. Faust keeps what a standby read in a
    buffer (written to the store at the next rebalance, or by the thousand), so the
    store's files cannot tell: its log can. The end is the broker's (on Tansu the first
    offset of the partition's last batch plus one: a fetch that reached it read the whole
    batch)."""
    topic = f"{settings.app_id}-subscribers-changelog"
    tps: dict[TP, int | None] = {TP(topic, p): None for p in range(settings.partitions)}
    read = await read_changelog(settings.bootstrap_servers, kafka_client_kwargs(settings), tps)
    last = {tp.partition: part.end - 1 for tp, part in read.items()}
    deadline = time.monotonic() + wait_s
    while True:
        seen = dict.fromkeys(last, -1)
        for worker in workers:
            for line in STANDBY_READ.finditer(worker.log()):
                if line["topic"] == topic:
                    p = int(line["partition"])
                    seen[p] = max(seen.get(p, -1), int(line["offset"]))
        behind = {p: (seen[p], end) for p, end in last.items() if seen[p] < end}
        if not behind:
            return
        assert time.monotonic() < deadline, f"standbys behind (read, end): {behind}"
        await asyncio.sleep(0.2)


async def test_the_newest_value_per_key_and_where_each_partition_ends(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings()
    async with changelog_producer(settings, 3) as (topic, kwargs, producer):
        writes: list[tuple[int, bytes, bytes | None]] = [
            (0, b"a", b"a1"),
            (0, b"b", b"b1"),
            (0, b"a", b"a2"),  # overwritten: the newest counts
            (0, b"b", None),  # deleted
            (1, b"c", None),  # deleted before it was ever written: still a deletion
            (1, b"c", b"c1"),  # written again after a deletion
        ]
        for partition, key, value in writes:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    p0, p1, p2 = (TP(topic, p) for p in range(3))
    read = await read_changelog(settings.bootstrap_servers, kwargs, {p0: None, p1: None, p2: None})
    assert read[p0].values == {b"a": b"a2", b"b": None}
    assert read[p1].values == {b"c": b"c1"}
    assert [read[tp].end for tp in (p0, p1, p2)] == [4, 2, 0]
    assert read[p2].values == {}
    # From an offset the store holds already: only what came after it.
    tail = await read_changelog(settings.bootstrap_servers, kwargs, {p0: 3, p1: 2})
    assert (tail[p0].values, tail[p1].values) == ({b"b": None}, {})

    # Records written after a read are not in it; the next read sees them.
    async with changelog_producer(settings, 3) as (_, _, producer):
        await producer.send_and_wait(topic, b"a3", key=b"a", partition=0)
    again = await read_changelog(settings.bootstrap_servers, kwargs, {p0: 4})
    assert (again[p0].values, again[p0].end) == ({b"a": b"a3"}, 5)


async def test_batches_of_many_records_are_read_to_their_last(
    make_settings: Callable[..., Any],
) -> None:
    """The runtime writes the changelog in batches of many records; Tansu's end offset is
    then the last batch's first offset plus one, inside that batch."""
    settings = make_settings()
    async with changelog_producer(settings, 1) as (topic, kwargs, producer):
        ones = [(0, b"k%d" % i, b"1") for i in range(30)]
        twos = [(0, b"k%d" % i, b"2") for i in range(25, 30)]
        first = await produce_to_partitions(producer, topic, ones)
        last = await produce_to_partitions(producer, topic, twos)
    assert (first, last) == ({0: 0}, {0: 30})  # each batch's first offset
    read = (await read_changelog(settings.bootstrap_servers, kwargs, {TP(topic, 0): None}))[
        TP(topic, 0)
    ]
    assert read.values == {b"k%d" % i: b"1" if i < 25 else b"2" for i in range(30)}
    assert read.end in (31, 35)  # Tansu's end offset: the last batch's first, plus one
    # From the offset after the first batch: the second batch alone.
    tail = await read_changelog(settings.bootstrap_servers, kwargs, {TP(topic, 0): 30})
    assert tail[TP(topic, 0)].values == {b"k%d" % i: b"2" for i in range(25, 30)}


async def test_a_rebalance_reads_nothing_again_of_the_partitions_a_worker_keeps(
    make_settings: Callable[..., Any],
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """A second worker joins: the first keeps one partition and reads none of its
    changelog again (Faust used to re-read every record written since its last
    recovery, on every rebalance); the second reads the partition it gets in bulk.
    Neither keeps a standby copy of the other's partition (memory store)."""
    first_port, second_port = free_port(), free_port()
    settings = make_settings(metrics_port=first_port)
    await topics_for(settings)
    first = start_worker(settings)
    subscribers = [str(13_700_000_000 + n) for n in range(60)]  # both partitions
    await produce(settings, [roaming(f"e{n}", sub, "JP") for n, sub in enumerate(subscribers)])
    await wait_for_metric(first_port, "moments_events_total", {}, len(subscribers), wait_s=90)
    await changelog_holds(settings, {sub.encode(): True for sub in subscribers})
    second = start_worker(make_settings(metrics_port=second_port, data_dir=tmp_path / "second"))
    await wait_for_metric(second_port, "moments_consumer_rebalance_seconds_count", {}, 1, 90)
    await wait_for_metric(first_port, "moments_consumer_rebalance_seconds_count", {}, 2, 90)
    first_log, second_log = first.log(), second.log()
    assert FAUST_READS_CHANGELOG not in first_log, first_log[-3000:]
    assert FAUST_READS_CHANGELOG not in second_log, second_log[-3000:]
    # Memory store: no standby copy of the other's partition, read record by record
    # from the changelog's beginning after every rebalance and dropped by Faust's store.
    assert FAUST_READS_STANDBYS not in first_log, first_log[-3000:]
    assert FAUST_READS_STANDBYS not in second_log, second_log[-3000:]
    restored = re.search(r"state: (\d+) record\(s\) of 1 partition\(s\) restored", second_log)
    assert restored is not None, second_log[-3000:]
    # Every subscriber of the partition it took over: one of the two partitions' counts.
    per_partition = Counter(partition_of(sub.encode(), 2) for sub in subscribers)
    assert int(restored.group(1)) in per_partition.values(), (per_partition, second_log[-3000:])
    # The first forgot the records of the partition it gave up (it used to keep them all).
    held = re.findall(r"state table holds (\d+) record\(s\) after the rebalance", first_log)
    kept = len(subscribers) - int(restored.group(1))
    assert held, first_log[-3000:]
    assert int(held[-1]) == kept, (held, kept, first_log[-3000:])


async def test_a_rocksdb_standby_leaves_the_partitions_new_owner_only_the_tail(
    make_settings: Callable[..., Any],
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """Two RocksDB workers keep a standby copy of each other's partition (the default
    with RocksDB); when one leaves, the other takes its partition over from that copy:
    no bulk read of the whole partition, no record through Faust's recovery, no refusal
    of the copy's offset (Tansu's end offset is below a batch's last record), and the
    state is all there (a second roaming to the same country is no first roaming)."""
    first_port, second_port = free_port(), free_port()
    # DEBUG: Faust's line for each changelog record a standby reads (`standbys_read`).
    settings = make_settings(metrics_port=first_port, store="rocksdb", log_level="DEBUG")
    await topics_for(settings)
    first = start_worker(settings)
    await wait_for_metric(first_port, "moments_consumer_rebalance_seconds_count", {}, 1, 90)
    second = start_worker(
        make_settings(
            metrics_port=second_port,
            store="rocksdb",
            log_level="DEBUG",
            data_dir=tmp_path / "second",
        )
    )
    await wait_for_metric(second_port, "moments_consumer_rebalance_seconds_count", {}, 1, 90)
    await wait_for_metric(first_port, "moments_consumer_rebalance_seconds_count", {}, 2, 90)
    subscribers = [str(13_800_000_000 + n) for n in range(60)]  # both partitions
    await produce(settings, [roaming(f"e{n}", sub, "JP") for n, sub in enumerate(subscribers)])
    assert len(await read_topic(settings, "tasks", count=len(subscribers), wait_s=90)) == 60
    await changelog_holds(settings, {sub.encode(): True for sub in subscribers})
    await standbys_read(settings, [first, second])
    assert FAUST_READS_STANDBYS in first.log(), first.log()[-3000:]
    before = first.log()
    counted = await metric_value(first_port, "moments_events_total")
    detected = await metric_value(first_port, "moments_detected_total")
    assert detected > 0  # its own partition's welcomes
    second.stop()
    await wait_for_metric(first_port, "moments_consumer_rebalance_seconds_count", {}, 3, 90)
    # Again to JP, for every subscriber: only a worker that lost some state would detect
    # a first roaming there again (the ledger would then hold back its task).
    await produce(settings, [roaming(f"x{n}", sub, "JP") for n, sub in enumerate(subscribers)])
    await wait_for_metric(first_port, "moments_events_total", {}, counted + 60, wait_s=90)
    tasks = await read_topic(settings, "tasks", count=61, wait_s=5, settle=2)
    takeover = first.log()[len(before) :]
    assert len(tasks) == 60, takeover[-3000:]
    assert await metric_value(first_port, "moments_detected_total") == detected, takeover[-3000:]
    assert first.proc.poll() is None, takeover[-3000:]
    assert FAUST_READS_CHANGELOG not in takeover, takeover[-3000:]
    restored = re.findall(r"state: (\d+) record\(s\) of \d+ partition\(s\) restored", takeover)
    # Fewer records than either partition holds (nothing, when the copy was current).
    smaller = min(Counter(partition_of(sub.encode(), 2) for sub in subscribers).values())
    assert all(int(n) < smaller for n in restored), (restored, takeover[-3000:])


async def test_a_rocksdb_worker_joining_on_an_empty_volume_reads_its_standby_copy_in_bulk(
    make_settings: Callable[..., Any],
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    """A new RocksDB worker reads the partition it gets and its standby copy of the other
    in one bulk read; Faust follows the copy from where that read ended, not record by
    record from the beginning (~10k records/s beside the batch loop). Then the first
    leaves, and the copy is the whole state: a second roaming to the same country makes
    no first-roaming moment."""
    first_port, second_port = free_port(), free_port()
    settings = make_settings(metrics_port=first_port, store="rocksdb")
    await topics_for(settings)
    first = start_worker(settings)
    subscribers = [str(13_900_000_000 + n) for n in range(60)]  # both partitions
    await produce(settings, [roaming(f"e{n}", sub, "JP") for n, sub in enumerate(subscribers)])
    assert len(await read_topic(settings, "tasks", count=len(subscribers), wait_s=90)) == 60
    await changelog_holds(settings, {sub.encode(): True for sub in subscribers})
    second = start_worker(
        make_settings(metrics_port=second_port, store="rocksdb", data_dir=tmp_path / "second")
    )
    await wait_for_metric(second_port, "moments_consumer_rebalance_seconds_count", {}, 1, 90)
    await wait_for_metric(first_port, "moments_consumer_rebalance_seconds_count", {}, 2, 90)
    joined = second.log()
    restored = re.search(
        r"state: (\d+) record\(s\) of 2 partition\(s\) restored from the changelog in \S+ s "
        r"\((\d+) of them in 1 standby partition\(s\)\)",
        joined,
    )
    assert restored is not None, joined[-3000:]
    assert int(restored.group(1)) == len(subscribers), joined[-3000:]
    per_partition = Counter(partition_of(sub.encode(), 2) for sub in subscribers)
    assert int(restored.group(2)) in per_partition.values(), joined[-3000:]
    # Faust's standby reading starts where the bulk read ended, not at the beginning (-1;
    # on Tansu the end is inside the last batch, whose rest Faust reads again).
    table = joined.split("Reading Starts At - Standby", 1)[1].split("+ \n", 1)[0]
    starts = re.findall(r"-subscribers-changelog \| (\d+)\s+\| (-?\d+)\s+\|", table)
    assert starts, table
    assert all(int(offset) >= 0 for _, offset in starts), table

    detected = await metric_value(second_port, "moments_detected_total")
    first.stop()
    await wait_for_metric(second_port, "moments_consumer_rebalance_seconds_count", {}, 2, 90)
    await produce(settings, [roaming(f"x{n}", sub, "JP") for n, sub in enumerate(subscribers)])
    await wait_for_metric(second_port, "moments_events_total", {}, len(subscribers), wait_s=90)
    takeover = second.log()[len(joined) :]
    assert await metric_value(second_port, "moments_detected_total") == detected, takeover[-3000:]
    assert len(await read_topic(settings, "tasks", count=61, wait_s=5, settle=2)) == 60
    assert FAUST_READS_CHANGELOG not in takeover, takeover[-3000:]


STAMP = "moments-stamp"
"""The header a changelog record's fencing stamp travels in (moments.fence)."""


async def test_a_stale_record_landing_after_a_newer_one_is_not_what_a_read_keeps(
    make_settings: Callable[..., Any],
) -> None:
    """A worker losing the partition wrote in generation 4; its write landed after the next
    owner's, written in generation 5: the bulk read keeps the generation-5 record, for a
    record and for a tombstone alike; records without stamps are still taken in order."""
    settings = make_settings()
    newer, stale = b'{"o":{"u0":9},"r":{},"w":9}', b'{"o":{"u0":7},"r":{},"w":7}'
    async with changelog_producer(settings, 1) as (topic, kwargs, producer):
        writes: list[tuple[bytes, bytes | None, bytes | None]] = [
            (b"a", newer, b"5"),
            (b"a", stale, b"4"),  # landed late: skipped
            (b"b", newer, b"5"),
            (b"b", None, b"4"),  # a stale deletion deletes nothing
            (b"c", newer, None),
            (b"c", stale, None),  # no stamps (an older changelog): the last counts
        ]
        for key, value, stamp in writes:
            headers = [] if stamp is None else [(STAMP, stamp)]
            await producer.send_and_wait(topic, value, key=key, partition=0, headers=headers)
    tp = TP(topic, 0)
    read = await read_changelog(settings.bootstrap_servers, kwargs, {tp: None})
    assert read[tp].values == {b"a": newer, b"b": newer, b"c": stale}


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_a_restarted_worker_restores_the_newer_record_not_a_stale_one_after_it(
    make_settings: Callable[..., Any],
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
    store: str,
) -> None:
    """A worker applies a first roaming to JP and writes the subscriber's record, stamped
    with its generation. Then a record of a previous owner (an earlier generation, from
    before that event) lands after it in the changelog, as a write held up past a
    rebalance would. Restarted, the worker restores the newer record: a second roaming to
    JP is no first roaming (restoring the stale one, it detected it again). With memory
    the restart reads the whole changelog; with RocksDB, on the same volume, only the
    stale record after its persisted offset, compared with the record the volume holds."""
    port = free_port()
    settings = make_settings(metrics_port=port, partitions=1, store=store)
    await topics_for(settings)
    sub = "13900000001"
    worker = start_worker(settings)
    await produce(settings, [roaming("e1", sub, "JP")])
    assert len(await read_topic(settings, "tasks", count=1, wait_s=90)) == 1
    await wait_for_metric(port, "moments_events_total", {}, 1, wait_s=30)
    await changelog_holds(settings, {sub.encode(): True})
    detected = await metric_value(port, "moments_detected_total")
    assert detected >= 1
    worker.stop()

    topic = f"{settings.app_id}-subscribers-changelog"
    kwargs = kafka_client_kwargs(settings)
    tp = TP(topic, 0)
    read = await read_changelog(settings.bootstrap_servers, kwargs, {tp: None})
    assert read[tp].values.get(sub.encode()) is not None
    generation = await _stamp_of_last_record(settings, topic, sub.encode())
    async with changelog_producer(settings, 1) as (_, _, producer):
        await producer.send_and_wait(
            topic,
            b'{"o":{},"r":{}}',  # the subscriber as the previous owner had it: no JP yet
            key=sub.encode(),
            partition=0,
            headers=[(STAMP, str(generation - 1).encode())],
        )

    again = start_worker(settings)
    await again.wait_for_log(r"state: \d+ record\(s\) of 1 partition\(s\) restored", 90)
    await produce(settings, [roaming("e2", sub, "JP")])
    # A batch's moments are counted with its events (`record_batch`): none by now is none.
    await wait_for_metric(port, "moments_events_total", {}, 1, wait_s=90)
    assert await metric_value(port, "moments_detected_total") == 0, again.log()[-3000:]


async def _stamp_of_last_record(settings: Settings, topic: str, key: bytes) -> int:
    """The generation the changelog's last record of `key` is stamped with (0: none)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found = 0
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in records:
                    if record.key == key:
                        stamps = [v for k, v in record.headers if k == STAMP]
                        found = int(stamps[0].split(b".")[0]) if stamps else 0
        return found
    finally:
        await consumer.stop()


async def test_a_rocksdb_worker_restarted_on_its_volume_keeps_a_deleted_subscriber_deleted(
    make_settings: Callable[..., Any],
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """A worker applies a first roaming to JP, then a profile tombstone: the subscriber's
    record, then a stamped tombstone, go to the changelog. Stopped, a record of a previous
    owner (an earlier generation, the subscriber with JP known) lands after the tombstone.
    Restarted on its volume, the worker reads only that tail: the deletion it wrote was
    remembered in memory only, so the stale record brought the subscriber back and a
    roaming to JP after the erasure was no first roaming. Now the volume keeps the
    deletion: the record is skipped (counted), and the roaming is a first one again."""
    port = free_port()
    settings = make_settings(metrics_port=port, partitions=1, store="rocksdb")
    await topics_for(settings)
    sub = "13900000002"
    worker = start_worker(settings)
    await produce(settings, [roaming("e1", sub, "JP")])
    assert len(await read_topic(settings, "tasks", count=1, wait_s=90)) == 1
    await produce(settings, [("profile", sub, None)])
    await wait_for_metric(port, "moments_events_total", {"event_type": "profile"}, 1, wait_s=60)
    await changelog_holds(settings, {sub.encode(): False})  # the tombstone
    worker.stop()

    topic = f"{settings.app_id}-subscribers-changelog"
    records = await _records_of(settings, topic, sub.encode())
    (value, _), (tombstone, stamp) = records[-2:]
    assert value is not None, records
    assert tombstone is None, records
    assert stamp, records
    generation = int(stamp.split(b".")[0])
    async with changelog_producer(settings, 1) as (_, _, producer):
        await producer.send_and_wait(  # the subscriber as the previous owner had it: JP known
            topic, value, key=sub.encode(), partition=0, headers=[(STAMP, b"%d" % (generation - 1))]
        )

    again = start_worker(settings)
    await again.wait_for_log(r"state: \d+ record\(s\) of 1 partition\(s\) restored", 90)
    await produce(settings, [roaming("e2", sub, "JP", occurred_at=_now())])
    await wait_for_metric(port, "moments_events_total", {"event_type": "roaming"}, 1, wait_s=90)
    await wait_for_metric(port, "moments_detected_total", {}, 1, wait_s=30)
    assert "state: 1 stale changelog record(s) not restored" in again.log()
    skipped = {"partition": "0"}
    assert await metric_value(port, "moments_state_stale_records_skipped_total", skipped) == 1


async def _records_of(
    settings: Settings, topic: str, key: bytes
) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `key` in partition 0 of `topic`: (value, its stamp header)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[tuple[bytes | None, bytes | None]] = []
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in batch:
                    if record.key == key:
                        stamps = [v for k, v in record.headers if k == STAMP]
                        found.append((record.value, stamps[0] if stamps else None))
        return found
    finally:
        await consumer.stop()
