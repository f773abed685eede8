"""sinks.base.produce_to_partitions on a real broker: records in batches built by us,
each in its partition, in order, tombstones included, over more batches than one."""

from __future__ import annotations

import asyncio
import time
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from moments.topics import ensure_topics
from sinks.base import produce_to_partitions

pytestmark = pytest.mark.integration


async def read_all(
    bootstrap: str, topic: str, count: int
) -> dict[int, list[tuple[bytes, bytes | None]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in range(3)}
        deadline = time.monotonic() + 30
        while sum(map(len, out.values())) < count and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition] += [(r.key, r.value) for r in records if r.key is not None]
        return out
    finally:
        await consumer.stop()


async def test_every_record_lands_in_its_partition_in_order(kafka_bootstrap: str) -> None:
    topic = f"batches-{uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 3}, [])
    # Small batches, so 600 records of ~200 bytes need many of them per partition.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=4096)
    await producer.start()
    records = [
        (i % 3, f"k{i}".encode(), None if i % 50 == 7 else f"v{i}".encode() * 40)
        for i in range(600)
    ]
    try:
        first = await produce_to_partitions(producer, topic, records)
        again = await produce_to_partitions(producer, topic, records[:4])  # 0, 1, 2, 0
    finally:
        await producer.stop()
    got = await asyncio.wait_for(read_all(kafka_bootstrap, topic, len(records)), 60)
    for partition in range(3):
        assert got[partition][:200] == [(k, v) for p, k, v in records if p == partition]
    # Per partition, the first offset of the last of the many batches it took (records
    # 0-199 went to each), then of the one batch of the second call.
    assert all(100 < first[p] < 199 for p in range(3)), first
    assert again == {0: 200, 1: 200, 2: 200}
